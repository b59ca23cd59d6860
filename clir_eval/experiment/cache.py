"""Step caching: a step's output lives in a directory named by the hash of everything it depends on.

A second run with nothing changed finds every directory complete and does no work; changing
one setting changes only the hashes of the steps that depend on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from clir_eval.io import atomic_directory, atomic_write, build_lock

logger = logging.getLogger(__name__)

STAMP = "step.json"


def stable_hash(payload: Any, length: int = 12) -> str:
    """Short SHA-256 of a JSON-serialisable payload (keys sorted)."""
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


@dataclass
class StepRecord:
    """What the manifest records of one step."""

    name: str
    key: str
    path: str
    cached: bool
    seconds: float
    inputs: dict[str, Any] = field(default_factory=dict)


class StepCache:
    """Runs steps into ``root/<kind>/<name>-<key>/`` directories, skipping complete ones."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.records: list[StepRecord] = []

    def path_for(self, kind: str, name: str, inputs: dict[str, Any]) -> Path:
        return self.root / kind / f"{name}-{stable_hash(inputs)}"

    def run(self, kind: str, name: str, inputs: dict[str, Any], build: Callable[[Path], None]) -> Path:
        """Return the step's directory, building it with ``build(tmp_dir)`` unless already complete.

        The directory is built under a temporary name and renamed when ``build`` returns, so an
        interrupted step leaves nothing that looks complete.
        """
        path = self.path_for(kind, name, inputs)
        key = path.name.rsplit("-", 1)[-1]
        start = time.perf_counter()
        # A second study running the same step waits, then finds it complete; the locks live apart, so a
        # kind's directory holds nothing but steps.
        with build_lock(path, lock_dir=self.root / ".locks" / kind):
            if (path / STAMP).is_file():
                self.records.append(StepRecord(f"{kind}/{name}", key, str(path), True, 0.0, inputs))
                logger.info("cached: %s/%s", kind, name)
                return path
            logger.info("running: %s/%s", kind, name)
            with atomic_directory(path) as tmp:
                build(tmp)
                with atomic_write(tmp / STAMP) as handle:
                    json.dump({"step": f"{kind}/{name}", "key": key, "inputs": inputs}, handle, indent=2,
                              sort_keys=True, default=str)
        seconds = time.perf_counter() - start
        self.records.append(StepRecord(f"{kind}/{name}", key, str(path), False, seconds, inputs))
        return path

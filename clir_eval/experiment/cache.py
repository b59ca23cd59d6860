"""Step caching: a step's output lives in a directory named by the hash of everything it depends on.

A second run with nothing changed finds every directory complete and does no work; changing
one setting changes only the hashes of the steps that depend on it. A step killed mid-way leaves its
temporary directory behind; the next run of that step removes it, and finds the step's work directory
(``<root>/.work/<kind>/<name>-<key>``, e.g. a student's checkpoints) where the killed run left it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
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

    def work_dir(self, kind: str, name: str, inputs: dict[str, Any]) -> Path:
        """Where a step keeps what must outlive a killed build (checkpoints): keyed like the step, removed once the
        step is complete."""
        return self.root / ".work" / kind / self.path_for(kind, name, inputs).name

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
            _remove_leftovers(path)
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
            shutil.rmtree(self.root / ".work" / kind / path.name, ignore_errors=True)
        seconds = time.perf_counter() - start
        self.records.append(StepRecord(f"{kind}/{name}", key, str(path), False, seconds, inputs))
        return path


def _remove_leftovers(path: Path) -> None:
    """Remove the temporary siblings of a step's directory (``.<name>-<key>.<random>.tmp`` and what was written
    beside it) that a killed build of this step left behind. Called under the step's lock: no live build owns them.
    """
    if not path.parent.is_dir():
        return
    ours = re.compile(rf"^\.+{re.escape(path.name)}\.")
    for leftover in path.parent.iterdir():
        if ours.match(leftover.name):
            logger.info("removing %s, left by an interrupted build of %s", leftover, path.name)
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)

"""Training state and checkpoints: what a resumed run needs to continue to the same final weights.

A checkpoint is ``step-NNNNNNN.pt`` (the :class:`TrainState`, trainable weights, optimizer, scheduler, and the
config and data hash it belongs to) plus one ``step-NNNNNNN.rng<rank>.pt`` per process, all written
atomically into ``<student_dir>.checkpoints/``. A checkpoint counts only when every process's RNG file exists.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

KEEP_CHECKPOINTS = 2


@dataclass
class TrainState:
    """The loop's counters, running loss (total and per named part), dev history and early-stopping state
    (everything a resume restores)."""

    step: int = 0
    micro: int = 0
    running: float = 0.0
    running_n: int = 0
    running_parts: dict[str, float] = field(default_factory=dict)
    best_accuracy: float = -1.0
    bad_evals: int = 0
    best_state: dict[str, Any] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "micro": self.micro, "running": (self.running, self.running_n),
                "running_parts": dict(self.running_parts),
                "best_accuracy": self.best_accuracy, "bad_evals": self.bad_evals, "best_state": self.best_state,
                "history": list(self.history), "stopped_early": self.stopped_early}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.micro = state["step"], state["micro"]
        self.running, self.running_n = state["running"]
        self.running_parts = dict(state.get("running_parts", {}))  # absent from checkpoints of older versions
        self.best_accuracy, self.bad_evals, self.best_state = state["best_accuracy"], state["bad_evals"], \
            state["best_state"]
        self.history, self.stopped_early = list(state["history"]), state["stopped_early"]

    def add_loss(self, total: float, parts: dict[str, float]) -> None:
        """Count one micro-batch's loss and its named parts."""
        self.running += total
        self.running_n += 1
        for name, value in parts.items():
            self.running_parts[name] = self.running_parts.get(name, 0.0) + value

    def take_loss(self) -> tuple[float, dict[str, float]]:
        """Mean training loss and mean of each part since the last call (the dev evaluations' ``train_loss``),
        then reset."""
        n = max(self.running_n, 1)
        mean, parts = self.running / n, {name: value / n for name, value in self.running_parts.items()}
        self.running, self.running_n, self.running_parts = 0.0, 0, {}
        return mean, parts


def checkpoint_dir(out_dir: Path) -> Path:
    return out_dir.with_name(out_dir.name + ".checkpoints")


def latest_checkpoint(directory: Path, world_size: int) -> Path | None:
    """Newest complete checkpoint: its state file plus one RNG file per process."""
    found = []
    for path in directory.glob("step-*.pt"):
        stem = path.name[: -len(".pt")]
        if stem.count(".") == 0 and all((directory / f"{stem}.rng{r}.pt").is_file() for r in range(world_size)):
            found.append((int(stem.split("-")[1]), path))
    return max(found)[1] if found else None


def rng_state() -> dict[str, Any]:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_torch(obj: Any, path: Path) -> None:
    import torch

    from clir_eval.io import atomic_write

    with atomic_write(path, "wb", encoding=None) as handle:
        torch.save(obj, handle)


def prune(directory: Path, world_size: int) -> None:
    """Keep the newest ``KEEP_CHECKPOINTS`` checkpoints (state and RNG files)."""
    for old in sorted(directory.glob("step-*.pt"))[: -KEEP_CHECKPOINTS * (world_size + 1)]:
        old.unlink()

"""Training state and checkpoints: what a resumed run needs to continue to the same final weights.

A checkpoint is ``step-NNNNNNN.safetensors`` (the :class:`TrainState`, trainable weights, optimizer, scheduler,
and the config and data hash it belongs to) plus one ``step-NNNNNNN.rng<rank>.safetensors`` per process, all
written atomically into ``<student_dir>.checkpoints/``. A checkpoint counts only when every process's RNG file
exists.

Nothing is pickled: each file is safetensors, its tensors named by their place in the saved structure and the
structure itself JSON in the file's metadata (:func:`save_tree`, :func:`load_tree`). Loading a checkpoint
therefore cannot run code, whoever wrote the file; a pickled ``.pt`` checkpoint is refused, not read.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

KEEP_CHECKPOINTS = 2
SUFFIX = ".safetensors"
FORMAT = "clir-eval-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from (pickled, corrupt, or not ours), naming the file."""


@dataclass
class TrainState:
    """The loop's counters, running loss (total and per named part), the loss's running stats and their record,
    dev history and early-stopping state (everything a resume restores)."""

    step: int = 0
    micro: int = 0
    running: float = 0.0
    running_n: int = 0
    running_parts: dict[str, float] = field(default_factory=dict)
    running_stats: dict[str, tuple[float, int]] = field(default_factory=dict)  # name -> (sum, batches)
    # One dict per evaluation point: the step and each stat's mean since the previous one (``LossResult.stats``).
    stats_history: list[dict[str, float]] = field(default_factory=list)
    best_accuracy: float = -1.0
    bad_evals: int = 0
    best_state: dict[str, Any] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "micro": self.micro, "running": (self.running, self.running_n),
                "running_parts": dict(self.running_parts), "running_stats": dict(self.running_stats),
                "stats_history": list(self.stats_history),
                "best_accuracy": self.best_accuracy, "bad_evals": self.bad_evals, "best_state": self.best_state,
                "history": list(self.history), "stopped_early": self.stopped_early}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.micro = state["step"], state["micro"]
        self.running, self.running_n = state["running"]
        self.running_parts = dict(state.get("running_parts", {}))  # absent from checkpoints of older versions
        self.running_stats = {k: tuple(v) for k, v in state.get("running_stats", {}).items()}  # likewise
        self.stats_history = list(state.get("stats_history", []))
        self.best_accuracy, self.bad_evals, self.best_state = state["best_accuracy"], state["bad_evals"], \
            state["best_state"]
        self.history, self.stopped_early = list(state["history"]), state["stopped_early"]

    def add_loss(self, total: float, parts: dict[str, float]) -> None:
        """Count one micro-batch's loss and its named parts."""
        self.running += total
        self.running_n += 1
        for name, value in parts.items():
            self.running_parts[name] = self.running_parts.get(name, 0.0) + value

    def add_stats(self, stats: dict[str, float]) -> None:
        """Count one micro-batch's stats (``LossResult.stats``)."""
        for name, value in stats.items():
            total, n = self.running_stats.get(name, (0.0, 0))
            self.running_stats[name] = (total + value, n + 1)

    def take_stats(self) -> dict[str, float]:
        """Mean of each stat since the last call, then reset."""
        means = {name: total / n for name, (total, n) in self.running_stats.items() if n}
        self.running_stats = {}
        return means

    def take_loss(self) -> tuple[float, dict[str, float]]:
        """Mean training loss and mean of each part since the last call (the dev evaluations' ``train_loss``),
        then reset."""
        n = max(self.running_n, 1)
        mean, parts = self.running / n, {name: value / n for name, value in self.running_parts.items()}
        self.running, self.running_n, self.running_parts = 0.0, 0, {}
        return mean, parts


def checkpoint_dir(out_dir: Path) -> Path:
    return out_dir.with_name(out_dir.name + ".checkpoints")


def state_path(directory: Path, step: int) -> Path:
    return directory / f"step-{step:07d}{SUFFIX}"


def rng_path(state_file: Path, rank: int) -> Path:
    return state_file.with_name(f"{state_file.name[: -len(SUFFIX)]}.rng{rank}{SUFFIX}")


def latest_checkpoint(directory: Path, world_size: int) -> Path | None:
    """Newest complete checkpoint: its state file plus one RNG file per process.

    Raises:
        CheckpointError: the directory holds pickled checkpoints (``step-*.pt``), which are never loaded.
    """
    pickled = sorted(directory.glob("step-*.pt"))
    if pickled:
        raise CheckpointError(f"{pickled[0]}: a pickled checkpoint; it is not loaded, since unpickling a file can "
                              f"run code. Checkpoints are read only as safetensors: delete {directory} to train "
                              "afresh")
    found = []
    for path in directory.glob(f"step-*{SUFFIX}"):
        stem = path.name[: -len(SUFFIX)]
        if stem.count(".") == 0 and all(rng_path(path, r).is_file() for r in range(world_size)):
            try:
                found.append((int(stem.split("-")[1]), path))
            except ValueError:
                continue  # not a name this module writes
    return max(found)[1] if found else None


def rng_state() -> dict[str, Any]:
    """This process's RNG states: Python's and NumPy's as JSON lists, torch's (and CUDA's) as uint8 tensors."""
    import torch

    version, keys, gauss = random.getstate()
    name, key, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(keys), gauss], "numpy": [name, key.tolist(), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (after a round trip through :func:`save_tree`)."""
    import torch

    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    name, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


# ---- files: safetensors with a JSON skeleton ----------------------------------------------------------------


def _encode(obj: Any, where: str, tensors: dict[str, Any]) -> Any:
    """``obj`` as JSON, each tensor replaced by ``{"$tensor": name}`` and stored in ``tensors`` under that name.

    Tuples and dicts whose keys are not all plain strings (the optimizer's integer parameter ids) are tagged, so
    that :func:`_decode` gives back the same types.
    """
    import torch

    if isinstance(obj, torch.Tensor):
        if where in tensors:
            raise ValueError(f"{where}: two tensors would share this name")
        tensors[where] = obj.detach().cpu().contiguous()
        return {"$tensor": where}
    if isinstance(obj, tuple):
        return {"$tuple": [_encode(v, f"{where}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{where}/{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: _encode(v, f"{where}/{k}", tensors) for k, v in obj.items()}
        if not all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in obj):
            raise TypeError(f"{where}: dict keys must be str or int to be saved")
        return {"$items": [[k, _encode(v, f"{where}/{k}", tensors)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"{where}: {type(obj).__name__} cannot be saved in a checkpoint (tensors and JSON values only)")


def _decode(obj: Any, tensors: Any) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        (tag, value), = obj.items()
        if tag == "$tensor":
            return tensors.get_tensor(value)
        if tag == "$tuple":
            return tuple(_decode(v, tensors) for v in value)
        if tag == "$items":
            return {k: _decode(v, tensors) for k, v in value}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def save_tree(obj: Any, path: Path) -> None:
    """Write nested dicts/lists/tuples of tensors and JSON values to ``path`` (safetensors), atomically."""
    from safetensors.torch import save

    from clir_eval.io import atomic_write

    tensors: dict[str, Any] = {}
    skeleton = _encode(obj, "", tensors)
    payload = save(tensors, metadata={"format": FORMAT, "tree": json.dumps(skeleton)})
    with atomic_write(path, "wb", encoding=None) as handle:
        handle.write(payload)


def load_tree(path: Path) -> Any:
    """What :func:`save_tree` wrote to ``path``; tensors on the CPU.

    Raises:
        CheckpointError: ``path`` is not such a file (truncated, corrupt, a pickle, another program's safetensors).
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as tensors:
            metadata = tensors.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise CheckpointError(f"{path}: not a clir-eval checkpoint (no {FORMAT!r} metadata)")
            return _decode(json.loads(metadata["tree"]), tensors)
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason}); delete it to resume from an "
                              "earlier one, or its directory to train afresh") from None


def prune(directory: Path, world_size: int) -> None:
    """Keep the newest ``KEEP_CHECKPOINTS`` checkpoints (state and RNG files)."""
    for old in sorted(directory.glob(f"step-*{SUFFIX}"))[: -KEEP_CHECKPOINTS * (world_size + 1)]:
        old.unlink()

"""Which process of a launch this is: ``torchrun`` / ``accelerate launch`` ranks, through Accelerate.

The trainer already runs under Accelerate; encoding a corpus uses the same engine. Without a launcher this is one
process and nothing is initialised (no process group, no environment read beyond ``WORLD_SIZE``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

logger = logging.getLogger(__name__)


def _process_count(variable: str) -> int:
    """A launcher's process count from ``variable`` (1 when unset or not a number)."""
    try:
        return max(1, int(os.environ.get(variable, "1")))
    except ValueError:
        return 1


def launched_world_size() -> int:
    """The number of processes a launcher started (1 without one)."""
    return _process_count("WORLD_SIZE")


def launcher_part() -> tuple[tuple[int, int] | None, Callable[[], None] | None, str | None]:
    """``((rank, world), barrier, device)`` under a launcher with several processes; ``(None, None, None)`` otherwise.

    The device is the rank's own (``cuda:<local rank>`` on GPUs, ``cpu`` otherwise); the process group is gloo on
    CPUs and NCCL on GPUs, as Accelerate chooses.
    """
    if launched_world_size() == 1:
        return None, None, None
    import torch
    from accelerate import PartialState

    # Accelerate sets up CPU ranks (gloo) only when told the run is on CPUs, as the trainer tells its Accelerator.
    state = PartialState(cpu=not torch.cuda.is_available())
    logger.info("process %d of %d on %s", state.process_index, state.num_processes, state.device)
    device = "cpu" if state.device.type == "cpu" else str(state.device)
    return (state.process_index, state.num_processes), state.wait_for_everyone, device


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def local_world_size() -> int:
    """The number of processes a launcher started on this machine (1 without one)."""
    return _process_count("LOCAL_WORLD_SIZE")


def set_threads(threads: int) -> int:
    """Torch's intra-op threads: ``threads``, or for 0 this process's share of the cores (all of them without a
    launcher; under one, the cores divided among the machine's processes, which would otherwise contend for
    them). Returns the count set."""
    import torch

    count = threads or max(1, (os.cpu_count() or 1) // local_world_size())
    torch.set_num_threads(count)
    return count

"""Whether bfloat16 autocast pays off on the device a student trains on.

On a CPU without native bfloat16 (no AVX-512 core, AMX or Arm BF16) oneDNN emulates it: measured on a 2-core
AVX2 EPYC, a training step under bf16 autocast took 18x as long as in float32 (docs/benchmarks.md). The trainer
keeps the precision it is asked for, because the student's cache key names it, and warns instead.
"""

from __future__ import annotations


def slow_bf16(device_type: str) -> bool:
    """True when bf16 autocast on ``device_type`` (``cpu`` or ``cuda``) has no hardware behind it."""
    import torch

    if device_type == "cuda":
        return not torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    try:
        # PyTorch's own tests read this probe to decide whether a CPU runs bf16 kernels natively.
        return not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):  # a build without oneDNN: nothing to go by, so no warning
        return False

"""A weighted sum of distillation losses over one pass of the student and the teacher."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import nn

from clir_eval.distill.losses.base import DistillLoss, Encoded, LossResult, Needs


class CombinedLoss(DistillLoss):
    """Weighted sum sum_k w_k L_k; the student and teacher run once for all parts.

    Its parts are the weighted terms w_k L_k under each loss's name (so they add up to the loss); the
    diagnostics of the parts are added up by name; their stats are passed on as they are (each loss names its own).
    """

    name = "combined"

    def __init__(self, parts: list[tuple[DistillLoss, float]]) -> None:
        super().__init__()
        if not parts:
            raise ValueError("CombinedLoss needs at least one part")
        names = [loss.name for loss, _ in parts]
        if len(set(names)) != len(names):
            raise ValueError(f"CombinedLoss parts repeat: {names}")
        self.parts = nn.ModuleList([loss for loss, _ in parts])
        self.weights = [float(w) for _, w in parts]
        self.name = "+".join(names)
        needs = [loss.needs() for loss in self.parts]
        for attr in ("student_layer", "teacher_layer"):
            layers = {getattr(n, attr) for n in needs if getattr(n, attr) is not None}
            if len(layers) > 1:
                raise ValueError(f"parts need different {attr}s {sorted(layers)}")
        self._needs = Needs(
            student_layer=next((n.student_layer for n in needs if n.student_layer is not None), None),
            teacher_layer=next((n.teacher_layer for n in needs if n.teacher_layer is not None), None),
            student_target=any(n.student_target for n in needs),
            teacher_tokens=any(n.teacher_tokens for n in needs),
            negatives=max(n.negatives for n in needs),
        )

    def needs(self) -> Needs:
        return self._needs

    def compute(self, encoded: Encoded) -> LossResult:
        parts: dict[str, torch.Tensor] = {}
        diagnostics: Counter[str] = Counter()
        stats: dict[str, float] = {}
        for loss, weight in zip(self.parts, self.weights):
            result = loss.compute(encoded)
            parts[loss.name] = weight * result.total()
            diagnostics.update(result.diagnostics)
            stats.update(result.stats)
        return LossResult(parts, dict(diagnostics), stats)

    def get_config_dict(self) -> dict[str, Any]:
        return {loss.name: {"weight": w, **loss.get_config_dict()} for loss, w in zip(self.parts, self.weights)}

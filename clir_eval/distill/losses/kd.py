"""Knowledge distillation of pooled embeddings: student(foreign) -> teacher(English) (Reimers & Gurevych 2020)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clir_eval.distill.losses.base import DistillLoss, Encoded, LossResult, Needs
from clir_eval.distill.losses.options import LossOptions


def kd_from_embeddings(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE between ``(b, d)`` student and teacher sentence embeddings, mean over all entries.

    L = 1/(b d) sum_i ||s_i - t_i||^2 (Reimers & Gurevych 2020, "Making Monolingual Sentence
    Embeddings Multilingual using Knowledge Distillation").
    """
    return nn.functional.mse_loss(student, teacher.to(student.dtype))


def kd_cosine_from_embeddings(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean cosine distance between ``(b, d)`` student and teacher sentence embeddings.

    L = 1/b sum_i (1 - cos(s_i, t_i)): blind to the student vector's norm, which a query's ranking ignores.
    """
    return (1 - nn.functional.cosine_similarity(student, teacher.to(student.dtype), dim=-1)).mean()


# ``LossOptions.kd_distance`` name -> its function (the names are ``options.KD_DISTANCES``).
KD_DISTANCE_FUNCTIONS = {"mse": kd_from_embeddings, "cosine": kd_cosine_from_embeddings}


class KDLoss(DistillLoss):
    """Distance of pooled embeddings (MSE or cosine): student(foreign) -> teacher(English)
    [+ student(English) -> teacher(English)]."""

    name = "kd"
    citation = "Reimers & Gurevych, EMNLP 2020, arXiv:2004.09813"

    def __init__(self, english_through_student: bool = False, distance: str = "mse") -> None:
        super().__init__()
        # Validation is LossOptions' (one place lists every option and its range), as for the other losses.
        self.distance = LossOptions(kd_distance=distance).kd_distance
        self.english_through_student = bool(english_through_student)

    def needs(self) -> Needs:
        return Needs(student_target=self.english_through_student)

    def compute(self, encoded: Encoded) -> LossResult:
        distance = KD_DISTANCE_FUNCTIONS[self.distance]
        target = encoded.teacher["sentence_embedding"]
        loss = distance(encoded.student["sentence_embedding"], target)
        if self.english_through_student:
            loss = loss + distance(encoded.student_target["sentence_embedding"], target)
        return LossResult({self.name: loss})

    def get_config_dict(self) -> dict[str, Any]:
        return {"english_through_student": self.english_through_student, "distance": self.distance}

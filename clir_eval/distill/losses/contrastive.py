"""In-batch contrastive distillation: InfoNCE of student(foreign) against teacher(English) embeddings."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clir_eval.distill.losses.base import DistillLoss, Encoded, LossResult, Needs
from clir_eval.distill.losses.options import LossOptions


def info_nce_from_embeddings(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                             offset: int = 0, negatives: torch.Tensor | None = None,
                             negative_mask: torch.Tensor | None = None) -> torch.Tensor:
    """In-batch InfoNCE: foreign sentence i must pick its English translation among the batch.

    L = -1/b sum_i log softmax_j(cos(s_i, t_j) / T)_(i + offset) (van den Oord et al. 2018; Henderson et al.
    2017). ``teacher`` may hold more rows than ``student`` (the whole global batch under DDP); the
    translation of student row i is teacher row ``i + offset``. ``negatives`` (``(n, d)``) are further
    candidates every row must rank below its translation; ``negative_mask`` (``(b, n)``, True = leave out)
    drops those that are row i's own English again.
    """
    s = nn.functional.normalize(student, dim=-1)
    t = nn.functional.normalize(teacher.to(student.dtype), dim=-1)
    logits = s @ t.T / temperature
    if negatives is not None and len(negatives):
        extra = s @ nn.functional.normalize(negatives.to(student.dtype), dim=-1).T / temperature
        if negative_mask is not None:
            extra = extra.masked_fill(negative_mask.to(extra.device), float("-inf"))
        logits = torch.cat([logits, extra], dim=1)
    return nn.functional.cross_entropy(logits, torch.arange(len(s), device=s.device) + offset)


def gather_batch_negatives(teacher: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Under DDP, every process's teacher embeddings in rank order, and where this process's rows start.

    The teacher is frozen, so a plain all_gather (no gradient through it) is all InfoNCE needs for the
    negatives of the global batch; each process's mean loss, averaged by DDP, is then the one-process loss.
    Outside DDP: ``(teacher, 0)``.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return teacher, 0
    teacher = teacher.detach().contiguous()
    sizes = [torch.zeros(1, dtype=torch.long, device=teacher.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([len(teacher)], device=teacher.device))
    counts = [int(size) for size in sizes]
    if len(set(counts)) != 1:  # all_gather needs equal shapes; the trainer's slices always are
        raise ValueError(f"contrastive negatives need equal local batches, got {counts}")
    parts = [torch.empty_like(teacher) for _ in counts]
    dist.all_gather(parts, teacher)
    return torch.cat(parts), sum(counts[: dist.get_rank()])


class ContrastiveLoss(DistillLoss):
    """InfoNCE between student(foreign) and teacher(English) embeddings.

    The negatives are the batch's other English sentences; under DDP the whole global batch (teacher embeddings
    gathered from every process), so a multi-process run trains like a one-process run on the same global batch.
    With ``negatives > 0`` the trainer adds that many teacher embeddings of other pairs' English sides to every
    training step (``DistillBatch.negatives``): the frozen teacher makes them a memory bank that never goes
    stale (Wu et al. 2018; He et al. 2020 keep a queue because their targets move). With
    ``english_through_student`` the student's embedding of the English side ranks the same candidates too, and
    the loss is the sum of the two terms.
    """

    name = "contrastive"
    citation = "van den Oord, Li & Vinyals 2018, arXiv:1807.03748"

    def __init__(self, temperature: float = 0.05, negatives: int = 0, english_through_student: bool = False) -> None:
        super().__init__()
        options = LossOptions(contrastive_temperature=temperature, contrastive_negatives=negatives)
        self.temperature = options.contrastive_temperature
        self.negatives = options.contrastive_negatives
        self.english_through_student = bool(english_through_student)

    def needs(self) -> Needs:
        return Needs(negatives=self.negatives, student_target=self.english_through_student)

    def compute(self, encoded: Encoded) -> LossResult:
        teacher = encoded.teacher["sentence_embedding"]
        extra, extra_mask = None, None
        if self.training:
            if self.negatives and encoded.negatives is None:
                raise ValueError(f"this loss takes {self.negatives} negatives per step: give batch.negatives")
            extra, extra_mask = encoded.negatives, encoded.negative_mask
        # Evaluation (``.eval()``) runs every process over the same dev batches, against the batch alone (dev
        # accuracy and loss stay comparable between settings): nothing to gather, no extra negatives.
        negatives, offset = gather_batch_negatives(teacher) if self.training else (teacher, 0)
        queries = [encoded.student["sentence_embedding"]]
        if self.english_through_student:
            if encoded.student_target is None:
                raise ValueError("english_through_student needs the student's English (batch.student_target)")
            queries.append(encoded.student_target["sentence_embedding"])
        loss = sum(info_nce_from_embeddings(query, negatives, self.temperature, offset, extra, extra_mask)
                   for query in queries)
        return LossResult({self.name: loss})

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "negatives": self.negatives,
                "english_through_student": self.english_through_student}

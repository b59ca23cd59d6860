"""Distillation losses: a student encoder of foreign text learns the teacher's space of the English side.

One class per loss, called as ``loss(student, teacher, batch) -> scalar`` (sentence-transformers
style: the module validates its options in ``__init__``; the math sits in pure functions over
tensors, tested without a model). The teacher is frozen: its outputs are computed under
``no_grad`` or passed in precomputed (``DistillBatch.teacher_outputs``).

Methods (``build_loss``): ``kd``, ``ot``, ``contrastive``, ``kd+ot``, ``kd+contrastive``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from clir_eval.distill.sinkhorn import SinkhornResult, sinkhorn

logger = logging.getLogger(__name__)

Features = dict[str, torch.Tensor]
OT_MARGINALS = ("uniform", "pooled")
KD_DISTANCES = ("mse", "cosine")


@dataclass(frozen=True)
class LossOptions:
    """Options of every loss (each loss reads its own prefix); weights apply in combined methods.

    Attributes:
        kd_english_through_student: KD also pulls student(English) onto teacher(English)
            (sentence-transformers' multilingual recipe, Reimers & Gurevych 2020).
        kd_distance: ``mse`` (Reimers & Gurevych's regression of the whole vector) or ``cosine`` (1 - cos: only
            the direction, which is all an inner-product search reads of a query vector; its gradient is
            about d/2 times MSE's, so it weighs like the OT and InfoNCE terms in a combined loss).
        ot_epsilon: entropic regularisation of the token-alignment Sinkhorn (cost 1 - cos in [0, 2]).
        ot_max_iter, ot_tol: Sinkhorn iteration cap and L1 marginal tolerance.
        ot_student_layer, ot_teacher_layer: hidden-state index whose token states are aligned
            (0 = embeddings; None = last layer).
        ot_include_special: let [CLS]/[SEP]/<s>/</s> take part in the alignment.
        ot_tau: None for balanced OT; a positive float relaxes the marginals into tau * KL terms.
        ot_cost: ``cosine`` (1 - cos, in [0, 2]) or ``sqeuclidean`` (squared distance divided by the batch's
            mean squared norm of the teacher's token states, so that epsilon keeps its scale).
        ot_marginals: ``uniform`` over the real tokens, or ``pooled``: each token weighted by its share in its
            sentence's mean-pooled embedding, max(<h_i, mean_j h_j>, 0) (plus a small floor), so that tokens
            the pooled embedding hardly reads carry little mass.
        contrastive_temperature: InfoNCE temperature.
    """

    kd_weight: float = 1.0
    kd_english_through_student: bool = False
    kd_distance: str = "mse"
    ot_weight: float = 1.0
    ot_epsilon: float = 0.05
    ot_max_iter: int = 100
    ot_tol: float = 1e-4
    ot_student_layer: int | None = None
    ot_teacher_layer: int | None = None
    ot_include_special: bool = False
    ot_tau: float | None = None
    ot_cost: str = "cosine"
    ot_marginals: str = "uniform"
    contrastive_weight: float = 1.0
    contrastive_temperature: float = 0.05

    def __post_init__(self) -> None:
        for name in ("kd_weight", "ot_weight", "contrastive_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.ot_epsilon > 0:
            raise ValueError(f"ot_epsilon must be > 0, got {self.ot_epsilon}")
        if self.ot_max_iter < 1 or not self.ot_tol > 0:
            raise ValueError("ot_max_iter must be >= 1 and ot_tol > 0")
        if self.ot_tau is not None and not self.ot_tau > 0:
            raise ValueError(f"ot_tau must be > 0 or None (balanced), got {self.ot_tau}")
        for name in ("ot_student_layer", "ot_teacher_layer"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or None (last layer), got {value}")
        if self.kd_distance not in KD_DISTANCES:
            raise ValueError(f"kd_distance must be one of {list(KD_DISTANCES)}, got {self.kd_distance!r}")
        if self.ot_cost not in OT_COSTS:
            raise ValueError(f"ot_cost must be one of {list(OT_COSTS)}, got {self.ot_cost!r}")
        if self.ot_marginals not in OT_MARGINALS:
            raise ValueError(f"ot_marginals must be one of {list(OT_MARGINALS)}, got {self.ot_marginals!r}")
        if not self.contrastive_temperature > 0:
            raise ValueError(f"contrastive_temperature must be > 0, got {self.contrastive_temperature}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LossOptions":
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown loss option(s) {unknown}; valid options are {known}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DistillBatch:
    """One batch of bitext, tokenised.

    Attributes:
        source: student features of the foreign sentences (from ``student.tokenize(..., "query")``).
        target: teacher features of the English sentences.
        student_target: student features of the English sentences (only for
            ``kd_english_through_student``).
        teacher_outputs: the teacher's outputs for ``target`` if already computed (e.g. cached);
            must hold the token states of the layer the loss needs.
    """

    source: Features
    target: Features
    student_target: Features | None = None
    teacher_outputs: dict[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class Needs:
    """What a loss needs computed: token-state layers, whether it reads the teacher's token states (not only
    its sentence embeddings) and whether English goes through the student."""

    student_layer: int | None = None
    teacher_layer: int | None = None
    student_target: bool = False
    teacher_tokens: bool = False


@dataclass
class Encoded:
    """Outputs of ``SentenceEncoder.forward`` for one batch (teacher ones without grad)."""

    student: dict[str, torch.Tensor]
    teacher: dict[str, torch.Tensor]
    student_target: dict[str, torch.Tensor] | None = None


def teacher_outputs(teacher: nn.Module, features: Features, layer: int | None = None) -> dict[str, torch.Tensor]:
    """The frozen teacher's outputs, computed without autograd."""
    with torch.no_grad():
        return {k: v.detach() for k, v in teacher(features, output_layer=layer).items()}


def encode_batch(student: nn.Module, teacher: nn.Module, batch: DistillBatch, needs: Needs) -> Encoded:
    """Run the student (with grad) and, unless given, the teacher (without) on a batch."""
    teacher_out = batch.teacher_outputs
    if teacher_out is None:
        teacher_out = teacher_outputs(teacher, batch.target, needs.teacher_layer)
    student_out = student(batch.source, output_layer=needs.student_layer)
    if student_out["sentence_embedding"].shape[-1] != teacher_out["sentence_embedding"].shape[-1]:
        raise ValueError(
            f"student dimension {student_out['sentence_embedding'].shape[-1]} != teacher dimension "
            f"{teacher_out['sentence_embedding'].shape[-1]}; give the student a projection (match_dimensions)"
        )
    student_target = None
    if needs.student_target:
        if batch.student_target is None:
            raise ValueError("this loss needs batch.student_target (English through the student)")
        student_target = student(batch.student_target)
    return Encoded(student=student_out, teacher=teacher_out, student_target=student_target)


def match_dimensions(student: nn.Module, teacher: nn.Module, seed: int = 0) -> bool:
    """Give the student a learned linear projection onto the teacher's dimension when they differ.

    Returns True when a projection was added (it is saved with the student).
    """
    if student.dim == teacher.dim:
        return False
    if student.projection is not None:
        raise ValueError(f"student projection outputs {student.dim} dimensions, the teacher has {teacher.dim}")
    student.add_projection(teacher.dim, seed=seed)
    logger.info("student hidden size %d != teacher %d: added a linear projection", student.hidden_size, teacher.dim)
    return True


# ---- pure math ------------------------------------------------------------------------------------------


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


KD_DISTANCE_FUNCTIONS = {"mse": kd_from_embeddings, "cosine": kd_cosine_from_embeddings}


def info_nce_from_embeddings(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                             offset: int = 0) -> torch.Tensor:
    """In-batch InfoNCE: foreign sentence i must pick its English translation among the batch.

    L = -1/b sum_i log softmax_j(cos(s_i, t_j) / T)_(i + offset) (van den Oord et al. 2018; Henderson et al.
    2017). ``teacher`` may hold more rows than ``student`` (the whole global batch under DDP); the
    translation of student row i is teacher row ``i + offset``.
    """
    s = nn.functional.normalize(student, dim=-1)
    t = nn.functional.normalize(teacher.to(student.dtype), dim=-1)
    logits = s @ t.T / temperature
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


def real_token_mask(outputs: dict[str, torch.Tensor], include_special: bool) -> torch.Tensor:
    """Boolean ``(b, L)`` of tokens that take part in the alignment.

    Padding never does; special tokens only if ``include_special``, or when a sentence has no
    other token (an empty sentence still needs something to transport).
    """
    mask = outputs["attention_mask"].bool()
    if include_special or "special_tokens_mask" not in outputs:
        return mask
    real = mask & ~outputs["special_tokens_mask"].bool()
    return torch.where(real.any(dim=1, keepdim=True), real, mask)


def cosine_cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(b, n, m)`` cost 1 - cos(x_i, y_j) between ``(b, n, d)`` and ``(b, m, d)`` token states."""
    x = nn.functional.normalize(x, dim=-1)
    y = nn.functional.normalize(y.to(x.dtype), dim=-1)
    return 1.0 - torch.bmm(x, y.transpose(1, 2))


def sqeuclidean_cost(x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``(b, n, m)`` cost ||x_i - y_j||^2 / scale between ``(b, n, d)`` and ``(b, m, d)`` token states.

    With this cost and uniform marginals, <P, C> bounds the squared distance of the mean-pooled embeddings from
    above (Jensen: mean(x) - mean(y) = sum_ij P_ij (x_i - y_j)), so OT pulls the pooled embedding along.
    """
    y = y.to(x.dtype)
    return torch.cdist(x, y).pow(2) / scale


# Cost name -> function of (student tokens, teacher tokens, teacher real-token mask).
OT_COSTS = {
    "cosine": lambda x, y, mask: cosine_cost(x, y),
    "sqeuclidean": lambda x, y, mask: sqeuclidean_cost(
        x, y, y.detach().pow(2).sum(-1)[mask].mean().clamp(min=1e-12)),
}


def pooled_share(tokens: torch.Tensor, mask: torch.Tensor, floor: float = 1e-3) -> torch.Tensor:
    """``(b, L)`` marginal: each real token's share max(<h_i, mean_j h_j>, 0) in its sentence's mean-pooled
    embedding, plus ``floor`` times the uniform weight, normalised to 1 per sentence; 0 at masked positions."""
    tokens = tokens.detach().float()
    weight = mask.float()
    mean = (tokens * weight[..., None]).sum(1) / weight.sum(1, keepdim=True).clamp(min=1.0)
    share = torch.einsum("bld,bd->bl", tokens, mean).clamp(min=0.0) * weight
    share = share / share.sum(1, keepdim=True).clamp(min=1e-12)
    uniform = weight / weight.sum(1, keepdim=True).clamp(min=1.0)
    mixed = share + floor * uniform
    return mixed / mixed.sum(1, keepdim=True)


def ot_from_cost(
    cost: torch.Tensor,
    mask_a: torch.Tensor,
    mask_b: torch.Tensor,
    *,
    epsilon: float,
    max_iter: int,
    tol: float,
    tau: float | None = None,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
) -> tuple[torch.Tensor, SinkhornResult]:
    """OPTICAL token-alignment loss: mean over pairs of <P_k, C_k>, P_k the entropic plan held constant.

    P_k = Sinkhorn(C_k, marginals ``a``/``b`` (default uniform over real tokens), eps) (Cuturi 2013), so
    dL/dC_k = P_k / b
    (Huang et al. 2023, "Improving Cross-lingual Information Retrieval on Low-Resource Languages
    via Optimal Transport Distillation", WSDM).
    """
    result = sinkhorn(cost, a, b, epsilon=epsilon, mask_a=mask_a, mask_b=mask_b, tau=tau, max_iter=max_iter,
                      tol=tol, warn=False)
    return result.value.mean(), result


# ---- loss modules ---------------------------------------------------------------------------------------


class DistillLoss(nn.Module):
    """Base: ``forward(student, teacher, batch)`` encodes what :meth:`needs` says, then :meth:`compute`."""

    name = ""
    citation = ""

    def needs(self) -> Needs:
        return Needs()

    def compute(self, encoded: Encoded) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, student: nn.Module, teacher: nn.Module, batch: DistillBatch) -> torch.Tensor:
        return self.compute(encode_batch(student, teacher, batch, self.needs()))

    def get_config_dict(self) -> dict[str, Any]:
        return {}


class KDLoss(DistillLoss):
    """Distance of pooled embeddings (MSE or cosine): student(foreign) -> teacher(English)
    [+ student(English) -> teacher(English)]."""

    name = "kd"
    citation = "Reimers & Gurevych, EMNLP 2020, arXiv:2004.09813"

    def __init__(self, english_through_student: bool = False, distance: str = "mse") -> None:
        super().__init__()
        if distance not in KD_DISTANCE_FUNCTIONS:
            raise ValueError(f"distance must be one of {list(KD_DISTANCE_FUNCTIONS)}, got {distance!r}")
        self.english_through_student = bool(english_through_student)
        self.distance = distance

    def needs(self) -> Needs:
        return Needs(student_target=self.english_through_student)

    def compute(self, encoded: Encoded) -> torch.Tensor:
        distance = KD_DISTANCE_FUNCTIONS[self.distance]
        target = encoded.teacher["sentence_embedding"]
        loss = distance(encoded.student["sentence_embedding"], target)
        if self.english_through_student:
            loss = loss + distance(encoded.student_target["sentence_embedding"], target)
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return {"english_through_student": self.english_through_student, "distance": self.distance}


class OTLoss(DistillLoss):
    """OPTICAL: <P, C> with C a distance between student tokens of foreign and teacher tokens of English (1 - cos
    by default), P the entropic plan by Sinkhorn."""

    name = "ot"
    citation = "Huang, Yu & Allan, WSDM 2023, arXiv:2301.12566"

    def __init__(
        self,
        epsilon: float = 0.05,
        max_iter: int = 100,
        tol: float = 1e-4,
        student_layer: int | None = None,
        teacher_layer: int | None = None,
        include_special: bool = False,
        tau: float | None = None,
        cost: str = "cosine",
        marginals: str = "uniform",
    ) -> None:
        super().__init__()
        # Validation is LossOptions' (one place lists every option and its range).
        options = LossOptions(ot_epsilon=epsilon, ot_max_iter=max_iter, ot_tol=tol, ot_student_layer=student_layer,
                              ot_teacher_layer=teacher_layer, ot_include_special=include_special, ot_tau=tau,
                              ot_cost=cost, ot_marginals=marginals)
        self.epsilon, self.max_iter, self.tol, self.tau = epsilon, max_iter, tol, options.ot_tau
        self.cost, self.marginals = cost, marginals
        self.student_layer, self.teacher_layer, self.include_special = student_layer, teacher_layer, include_special
        self.last_result: SinkhornResult | None = None
        self.unconverged = 0  # Sinkhorn calls that hit max_iter, reported by the trainer

    def needs(self) -> Needs:
        return Needs(student_layer=self.student_layer, teacher_layer=self.teacher_layer, teacher_tokens=True)

    def compute(self, encoded: Encoded) -> torch.Tensor:
        s, t = encoded.student, encoded.teacher
        mask_s, mask_t = real_token_mask(s, self.include_special), real_token_mask(t, self.include_special)
        cost = OT_COSTS[self.cost](s["token_embeddings"], t["token_embeddings"], mask_t)
        a = b = None
        if self.marginals == "pooled":
            a, b = pooled_share(s["token_embeddings"], mask_s), pooled_share(t["token_embeddings"], mask_t)
        loss, result = ot_from_cost(cost, mask_s, mask_t, epsilon=self.epsilon, max_iter=self.max_iter, tol=self.tol,
                                    tau=self.tau, a=a, b=b)
        self.last_result = result
        self.unconverged += int(not result.converged)
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "max_iter": self.max_iter, "tol": self.tol, "tau": self.tau,
                "cost": self.cost, "marginals": self.marginals,
                "student_layer": self.student_layer, "teacher_layer": self.teacher_layer,
                "include_special": self.include_special}


class ContrastiveLoss(DistillLoss):
    """In-batch InfoNCE between student(foreign) and teacher(English) embeddings.

    Under DDP the negatives are the whole global batch (teacher embeddings gathered from every
    process), so a multi-process run trains like a one-process run on the same global batch.
    """

    name = "contrastive"
    citation = "van den Oord, Li & Vinyals 2018, arXiv:1807.03748"

    def __init__(self, temperature: float = 0.05) -> None:
        super().__init__()
        self.temperature = LossOptions(contrastive_temperature=temperature).contrastive_temperature

    def compute(self, encoded: Encoded) -> torch.Tensor:
        teacher = encoded.teacher["sentence_embedding"]
        # Evaluation (``.eval()``) runs every process over the same dev batches: nothing to gather.
        negatives, offset = gather_batch_negatives(teacher) if self.training else (teacher, 0)
        return info_nce_from_embeddings(encoded.student["sentence_embedding"], negatives, self.temperature, offset)

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature}


class CombinedLoss(DistillLoss):
    """Weighted sum sum_k w_k L_k; the student and teacher run once for all parts."""

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
        )
        self.last_parts: dict[str, float] = {}

    def needs(self) -> Needs:
        return self._needs

    def compute(self, encoded: Encoded) -> torch.Tensor:
        values = [loss.compute(encoded) for loss in self.parts]
        self.last_parts = {loss.name: float(v.detach()) for loss, v in zip(self.parts, values)}
        return sum(w * v for w, v in zip(self.weights, values))

    def get_config_dict(self) -> dict[str, Any]:
        return {loss.name: {"weight": w, **loss.get_config_dict()} for loss, w in zip(self.parts, self.weights)}


def _kd(options: LossOptions) -> DistillLoss:
    return KDLoss(english_through_student=options.kd_english_through_student, distance=options.kd_distance)


def _ot(options: LossOptions) -> DistillLoss:
    return OTLoss(epsilon=options.ot_epsilon, max_iter=options.ot_max_iter, tol=options.ot_tol,
                  student_layer=options.ot_student_layer, teacher_layer=options.ot_teacher_layer,
                  include_special=options.ot_include_special, tau=options.ot_tau, cost=options.ot_cost,
                  marginals=options.ot_marginals)


def _contrastive(options: LossOptions) -> DistillLoss:
    return ContrastiveLoss(temperature=options.contrastive_temperature)


# Part name -> (builder, name of its weight option).
LOSS_PARTS = {"kd": (_kd, "kd_weight"), "ot": (_ot, "ot_weight"), "contrastive": (_contrastive, "contrastive_weight")}
# Method name -> its parts; a single part is used unweighted.
LOSS_METHODS: dict[str, tuple[str, ...]] = {
    "kd": ("kd",),
    "ot": ("ot",),
    "contrastive": ("contrastive",),
    "kd+ot": ("kd", "ot"),
    "kd+contrastive": ("kd", "contrastive"),
}


def build_loss(method: str, options: LossOptions | None = None) -> DistillLoss:
    """The loss of a method name (see ``LOSS_METHODS``); unknown names raise listing the valid ones."""
    if method not in LOSS_METHODS:
        raise ValueError(f"unknown distillation method {method!r}; valid methods are {list(LOSS_METHODS)}")
    options = options or LossOptions()
    parts = LOSS_METHODS[method]
    if len(parts) == 1:
        return LOSS_PARTS[parts[0]][0](options)
    return CombinedLoss([(LOSS_PARTS[p][0](options), getattr(options, LOSS_PARTS[p][1])) for p in parts])

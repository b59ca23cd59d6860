"""Bitext as the trainer reads it: tokenised once, cut into length-bucketed batches, teacher outputs cached (and
shared with the next student of the process), extra contrastive negatives drawn from the teacher's embeddings of the
English sides, the frozen trunk's states computed once; :class:`MicroBatches` puts a step's micro-batch together
from these.

The data order is a pure function of ``(seed, epoch)`` (:func:`epoch_batches`, :class:`EpochSampler`), so a
checkpoint only stores the micro-batch counter and a resumed run sees the same batches.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from clir_eval.collections.records import BitextPair
from clir_eval.distill.losses import DistillBatch


def bitext_sha256(pairs: Sequence[BitextPair]) -> str:
    """SHA-256 over the pairs in order (one JSON array per pair), tracing a student to its exact data."""
    digest = hashlib.sha256()
    for pair in pairs:
        digest.update(json.dumps(list(pair), ensure_ascii=False).encode("utf-8") + b"\n")
    return digest.hexdigest()


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, window: int) -> list[np.ndarray]:
    """Length-bucketed batches of indices for one epoch, all of exactly ``batch_size``.

    Shuffle, drop the remainder (so every step has the same global batch), sort windows of
    ``window`` batches by length, cut into batches, shuffle the batches. Deterministic in (seed, epoch).
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))[: len(lengths) // batch_size * batch_size]
    batches = []
    span = batch_size * window
    for start in range(0, len(order), span):
        chunk = order[start : start + span]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


class EpochSampler:
    """The global micro-batches of an epoch (:func:`epoch_batches`), drawn again only when the epoch changes.

    Like a torch ``DistributedSampler``, :meth:`set_epoch` picks the epoch; every process holds the same batches
    and takes its own slice of each.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, window: int) -> None:
        self.lengths, self.batch_size, self.seed, self.window = lengths, batch_size, seed, window
        self.epoch: int | None = None
        self._batches: list[np.ndarray] = []

    def __len__(self) -> int:
        """Batches per epoch (the remainder of the pairs is dropped)."""
        return len(self.lengths) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._batches = epoch_batches(self.lengths, self.batch_size, self.seed, epoch, self.window)
            self.epoch = epoch

    def __getitem__(self, index: int) -> np.ndarray:
        return self._batches[index]


def mark_prefix(encoded: dict[str, list], tokenizer: Any, prefix: str) -> None:
    """Count the tokens of a query prefix (E5's ``query: ``) as special tokens in ``special_tokens_mask``.

    The prefix has no counterpart in the English sentence, so token alignment (OT) leaves it out like
    [CLS]/[SEP]; sentences whose first tokens are not the prefix's own (a tokenizer that merges it with the
    first word) are left as they are.
    """
    ids = tokenizer(prefix.strip(), add_special_tokens=False)["input_ids"]
    if not ids:
        return
    for input_ids, special in zip(encoded["input_ids"], encoded["special_tokens_mask"]):
        start = next((i for i, flag in enumerate(special) if not flag), None)
        if start is not None and input_ids[start : start + len(ids)] == ids:
            special[start : start + len(ids)] = [1] * len(ids)


def pad_rows(rows: Sequence[Any], indices: Sequence[int], length: int) -> Any:
    """``(len(indices), length, d)`` tensor of the unpadded ``(n_i, d)`` rows of ``indices``, zeros after each."""
    first = rows[indices[0]]
    states = first.new_zeros((len(indices), length, first.shape[-1]))
    for row, i in enumerate(indices):
        states[row, : len(rows[i])] = rows[i]
    return states


class TokenizedBitext:
    """Bitext tokenised once (no padding); ``batch(indices)`` pads a DistillBatch."""

    def __init__(self, pairs: Sequence[BitextPair], student: Any, teacher: Any, max_length: int,
                 student_target: bool) -> None:
        def encode(model: Any, texts: list[str]) -> dict[str, list]:
            prefix = model.config.query_prefix
            encoded = dict(model.tokenizer([prefix + t for t in texts] if prefix else texts, truncation=True,
                                           max_length=max_length, return_special_tokens_mask=True))
            if prefix:
                mark_prefix(encoded, model.tokenizer, prefix)
            return encoded

        self.student_tok, self.teacher_tok = student.tokenizer, teacher.tokenizer
        self.source = encode(student, [p.source for p in pairs])
        self.target = encode(teacher, [p.target for p in pairs])
        self.student_target = encode(student, [p.target for p in pairs]) if student_target else None
        self.lengths = np.array([max(len(a), len(b)) for a, b in
                                 zip(self.source["input_ids"], self.target["input_ids"])], dtype=np.int64)

    @staticmethod
    def _pad(tokenizer: Any, data: dict[str, list], indices: Sequence[int]) -> dict:
        # Lengths rounded up to a multiple of 8: few distinct shapes, so CPU kernels (oneDNN)
        # reuse their prepared primitives instead of re-creating them for every new length.
        return dict(tokenizer.pad({k: [v[i] for i in indices] for k, v in data.items()}, pad_to_multiple_of=8,
                                  return_tensors="pt"))

    def pad_target(self, indices: Sequence[int]) -> dict:
        """The teacher's features of the English sides of ``indices`` (padded as in :meth:`batch`)."""
        return self._pad(self.teacher_tok, self.target, indices)

    def batch(self, indices: Sequence[int]) -> DistillBatch:
        return DistillBatch(
            source=self._pad(self.student_tok, self.source, indices),
            target=self.pad_target(indices),
            student_target=None if self.student_target is None else self._pad(self.student_tok, self.student_target,
                                                                              indices),
        )


class TeacherCache:
    """The frozen teacher's outputs for every training pair, computed once before training.

    Computed in a fixed order (length-sorted batches), so a resumed run rebuilds exactly the same cache.
    Only what the loss reads is kept: the sentence embedding, and for token-level losses the token states of
    the real (unpadded) positions; masks come from each batch's own features.
    """

    def __init__(self, teacher: Any, data: TokenizedBitext, layer: int | None, tokens: bool,
                 batch_size: int = 64) -> None:
        from clir_eval.distill.losses.base import teacher_outputs

        self.tokens = tokens
        self.sentence: list[Any] = [None] * len(data.lengths)
        self.states: list[Any] = [None] * len(data.lengths)
        order = np.argsort(data.lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            target = data.pad_target(indices)
            out = teacher_outputs(teacher, target, layer)
            for row, (i, n) in enumerate(zip(indices, target["attention_mask"].sum(dim=1).tolist())):
                self.sentence[i] = out["sentence_embedding"][row].clone()
                if tokens:
                    self.states[i] = out["token_embeddings"][row, :n].clone()

    def outputs(self, target: dict, indices: Sequence[int]) -> dict:
        """The teacher's outputs for a batch of pairs, padded like ``target`` (the batch's teacher features)."""
        import torch

        first = self.sentence[indices[0]]
        out = {k: v.to(first.device) for k, v in target.items() if k in ("attention_mask", "special_tokens_mask")}
        out["sentence_embedding"] = torch.stack([self.sentence[i] for i in indices])
        if self.tokens:
            out["token_embeddings"] = pad_rows(self.states, indices, target["input_ids"].shape[1])
        return out


class SharedTeacher:
    """The frozen teacher as the training loop calls it, its last hidden states shared by the students that one
    process trains.

    A study trains its students one after another on the same pairs in the same batches (same seed and batch
    size), and each ran the teacher over every batch again: 13 s of MiniLM per 900-pair student on 2 cores. The
    teacher's last hidden states of a batch go into the process's trunk cache (:mod:`clir_eval.models.trunk`), keyed
    by the teacher's weights and settings (its trunk chain), the exact token batch and the autocast state; a later
    call on the same batch resumes the teacher from them at full depth, so only pooling runs. The states are the
    ones a plain forward computes and the pooling is the same, so the outputs are byte-identical to it.

    A teacher that is not BERT-shaped, a call for an intermediate layer, or the cache turned off
    (``$CLIR_EVAL_TRUNK_CACHE_MIB=0``) runs the plain forward.
    """

    def __init__(self, teacher: Any) -> None:
        from clir_eval.models.trunk import has_trunk, trunk_chain

        self.teacher = teacher
        self.depth = int(teacher.backbone.config.num_hidden_layers)
        self.chain = trunk_chain(teacher)[self.depth] if has_trunk(teacher.backbone) else None

    def __call__(self, features: dict, output_layer: int | None = None) -> dict:
        import torch

        from clir_eval.models.trunk import batch_digest, states_at, trunk_cache

        cache = trunk_cache()
        if output_layer is not None or self.chain is None or not cache.enabled:
            return self.teacher(features, output_layer=output_layer)
        inputs = self.teacher.model_inputs(features)
        device = self.teacher.device
        amp = (torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))
        key = (f"{self.chain}:{amp}", batch_digest(inputs))
        states = cache.get(key)
        if states is None:
            states = states_at(self.teacher.backbone, self.depth, inputs)
            cache.put(key, states)
        return self.teacher({**features, "trunk_states": states, "trunk_depth": self.depth})


class NegativeBank:
    """The frozen teacher's embeddings of every training pair's English side, drawn as extra InfoNCE negatives.

    Each step draws ``size`` pairs outside the step's global batch, as a pure function of (seed, micro-batch), so
    every process draws the same ones and a resumed run draws what the uninterrupted one did. A drawn sentence that
    is a local row's own English again (bitext repeats sentences) is masked for that row: it is its translation,
    not a negative.
    """

    def __init__(self, sentence: Sequence[Any], english: Sequence[str], size: int) -> None:
        import torch

        self.embeddings = torch.stack(list(sentence))
        ids: dict[str, int] = {}
        self.text_ids = np.array([ids.setdefault(text, len(ids)) for text in english], dtype=np.int64)
        self.size = size

    def draw(self, batch: np.ndarray, local: np.ndarray, seed: int, micro: int) -> tuple[Any, Any]:
        """``(negatives (n, d), mask (len(local), n))`` for the micro-batch ``micro`` whose global rows are ``batch``."""
        import torch

        pool = np.setdiff1d(np.arange(len(self.text_ids)), batch)  # sorted
        if self.size < len(pool):
            rng = np.random.default_rng([seed, micro, 1])  # a stream apart from epoch_batches' [seed, epoch]
            pool = np.sort(rng.choice(pool, size=self.size, replace=False))
        mask = self.text_ids[np.asarray(local)][:, None] == self.text_ids[pool][None, :]
        return self.embeddings[torch.from_numpy(pool).to(self.embeddings.device)], torch.from_numpy(mask)


class TrunkStates:
    """The student's frozen trunk (embeddings + lowest ``depth`` layers) run once over every training sentence.

    Frozen modules run without dropout (:func:`clir_eval.distill.start.freeze`), so their output for a sentence
    is the same at every step: the trainer feeds these states to the layers above instead of running the trunk
    again, in every epoch and for every student of the process trained from the same start on the same
    sentences (:func:`shared_trunk`). Rows are kept unpadded (``(n_tokens, hidden)`` per sentence) and padded
    into each batch's shape; padded positions get zeros, which the attention mask hides.
    """

    def __init__(self, student: Any, data: TokenizedBitext, depth: int, batch_size: int = 64) -> None:
        self.depth = depth
        self.source = _trunk_rows(student, data.student_tok, data.source, depth, batch_size)
        self.student_target = (None if data.student_target is None else
                                _trunk_rows(student, data.student_tok, data.student_target, depth, batch_size))

    @property
    def nbytes(self) -> int:
        rows = self.source + (self.student_target or [])
        return sum(row.numel() * row.element_size() for row in rows)

    def attach(self, features: dict, indices: Sequence[int], target: bool = False) -> None:
        """Add ``trunk_states`` (padded like ``features``) and ``trunk_depth`` to a batch's student features."""
        rows = self.student_target if target else self.source
        if rows is None:
            raise ValueError("the trunk holds no English-through-student states")
        features["trunk_states"] = pad_rows(rows, indices, features["input_ids"].shape[1])
        features["trunk_depth"] = self.depth


def _trunk_rows(student: Any, tokenizer: Any, encoded: dict[str, list], depth: int, batch_size: int) -> list[Any]:
    import torch

    from clir_eval.models.trunk import states_at

    lengths = np.array([len(ids) for ids in encoded["input_ids"]])
    rows: list[Any] = [None] * len(lengths)
    order = np.argsort(lengths, kind="stable")
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            batch = TokenizedBitext._pad(tokenizer, encoded, indices)
            states = states_at(student.backbone, depth, student.model_inputs(batch))
            for row, i in enumerate(indices):
                rows[i] = states[row, : lengths[i]].clone()
    return rows


# The last trunk computed in this process, by the trunk's weights (models.trunk chain) and the exact token ids:
# the students of a study trained from one start on the same pairs share it (one entry: a trunk of all LAFAND
# is a few GB).
_SHARED: dict[str, TrunkStates] = {}


def shared_trunk(student: Any, data: TokenizedBitext, depth: int) -> TrunkStates:
    """The :class:`TrunkStates` of ``student`` over ``data``, computed once per process for equal trunks."""
    from clir_eval.models.trunk import trunk_chain

    ids = hashlib.sha256(json.dumps([data.source["input_ids"],
                                     data.student_target["input_ids"] if data.student_target else None])
                         .encode()).hexdigest()
    key = f"{trunk_chain(student)[depth]}:{ids}"
    if key not in _SHARED:
        _SHARED.clear()
        _SHARED[key] = TrunkStates(student, data, depth)
    return _SHARED[key]


@dataclass
class MicroBatches:
    """The training micro-batches of one process, by micro-batch counter (what a checkpoint stores).

    Micro-batch ``micro`` is this process's slice (rows ``rank * local_size`` to ``(rank + 1) * local_size``) of
    global batch ``micro % len(sampler)`` of epoch ``micro // len(sampler)``, with what the run precomputed attached:
    drawn negatives, the frozen trunk's states and the teacher's cached outputs.
    """

    data: TokenizedBitext
    sampler: EpochSampler
    rank: int
    local_size: int
    negatives: NegativeBank | None = None
    trunk: TrunkStates | None = None
    teacher_cache: TeacherCache | None = None

    def __call__(self, micro: int) -> DistillBatch:
        epoch, index = divmod(micro, len(self.sampler))
        self.sampler.set_epoch(epoch)
        rows = self.sampler[index]
        local = rows[self.rank * self.local_size : (self.rank + 1) * self.local_size]
        batch = self.data.batch(local)
        if self.negatives is not None:
            batch.negatives, batch.negative_mask = self.negatives.draw(rows, local, self.sampler.seed, micro)
        if self.trunk is not None:
            self.trunk.attach(batch.source, local)
            if batch.student_target is not None:
                self.trunk.attach(batch.student_target, local, target=True)
        if self.teacher_cache is not None:
            batch.teacher_outputs = self.teacher_cache.outputs(batch.target, [int(i) for i in local])
        return batch

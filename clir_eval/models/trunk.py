"""Shared-trunk inference: the layers several encoders have in common run once per token batch.

Students distilled from one backbone with its embeddings and lower k layers frozen compute exactly
what the backbone computes below layer k, and an untrained student (backbone + projection) computes
the whole backbone. When such encoders encode the same texts in one process (a study's query
systems, one after another), the shared layers' states are computed by the first and reused by the
others, which run only their own upper layers, pooling, projection and normalisation.

How sharing is found: every backbone gets a *chain* of digests, ``chain[d]`` naming the function
that the embeddings and the first ``d`` transformer layers compute (their weights and buffers, the
model config that changes their arithmetic, the encoder's tokenizer, prefix and max-length settings;
memoised per model and recomputed only for tensors changed in place since). Two encoders compute
the same states up to depth ``d`` exactly when their ``chain[d]`` agree. An encoder stores its states
at the depths where its chain meets another encoder's (one alive in the process, or seen encoding
earlier), keyed by ``(chain[d], the exact token batch)``, in one small in-process LRU cache bounded
in bytes; an encoder resumes from the deepest stored depth of its own chain. The resumed forward is
the backbone's own ``forward`` with the embeddings replaced by the stored states and the layers below
``d`` left out, so the attention masks are built by the model itself, exactly as in a full run: the
results are byte-identical to separate runs (same batches, same padding).

Depth 0 (the embeddings alone) is never stored: an embedding lookup costs less than copying its
output. Only BERT-shaped backbones (``embeddings`` + ``encoder.layer``: BERT, RoBERTa, XLM-R, MiniLM,
E5) in eval mode share; anything else runs its plain forward.

In training, :func:`states_at` and :func:`resume` do the same by hand: the trainer computes a student's frozen
lower layers once over the training sentences (:class:`clir_eval.distill.data.TrunkStates`) and resumes the
backbone from those states at every step. The frozen teacher's last states of each training batch go into this cache
(:class:`clir_eval.distill.data.SharedTeacher`), so the next student trained on the same batches resumes the teacher
at full depth.

The cache holds at most ``$CLIR_EVAL_TRUNK_CACHE_MIB`` MiB (default 512; 0 turns sharing off), read
when the cache is first used; :func:`trunk_cache` gives it for resizing or clearing. Not thread-safe:
a resumed forward swaps modules of the backbone for its duration.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import weakref
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

CACHE_ENV = "CLIR_EVAL_TRUNK_CACHE_MIB"
DEFAULT_CACHE_MIB = 512
_SEEN_LIMIT = 64  # encoder identities remembered after their models are gone (a few hundred bytes each)
# Config keys that do not change what the embeddings and the first d layers compute: the depth itself
# (a truncated student shares the layers it kept), names and bookkeeping. dtype is in the weight digests.
_CONFIG_KEYS_IGNORED = frozenset({
    "_name_or_path", "name_or_path", "num_hidden_layers", "architectures", "transformers_version", "id2label",
    "label2id", "dtype", "torch_dtype", "problem_type", "finetuning_task", "output_hidden_states",
    "output_attentions", "return_dict", "use_cache", "pruned_heads", "tie_word_embeddings",
})


# -- the cache ------------------------------------------------------------------------------------
@dataclass
class TrunkStats:
    """What the cache did: hits by resume depth, batches run from the embeddings, states stored/evicted."""

    hits: Counter[int] = field(default_factory=Counter)
    misses: int = 0
    stored: int = 0
    evicted: int = 0


class TrunkCache:
    """LRU map ``(chain digest, batch digest) -> hidden states``, bounded by the bytes it holds."""

    def __init__(self, max_bytes: int) -> None:
        self._entries: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self.nbytes = 0
        self.max_bytes = max(0, int(max_bytes))
        self.stats = TrunkStats()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, str]) -> torch.Tensor | None:
        states = self._entries.get(key)
        if states is not None:
            self._entries.move_to_end(key)
        return states

    def put(self, key: tuple[str, str], states: torch.Tensor) -> None:
        size = states.numel() * states.element_size()
        if size > self.max_bytes or key in self._entries:
            return
        self._entries[key] = states
        self.nbytes += size
        self.stats.stored += 1
        self._shrink()

    def resize(self, max_bytes: int) -> None:
        """Change the bound (0 turns sharing off), evicting the least recently used states to fit."""
        self.max_bytes = max(0, int(max_bytes))
        self._shrink()

    def clear(self) -> None:
        """Drop every stored state and reset the statistics."""
        self._entries.clear()
        self.nbytes = 0
        self.stats = TrunkStats()

    def _shrink(self) -> None:
        while self.nbytes > self.max_bytes and self._entries:
            _, states = self._entries.popitem(last=False)
            self.nbytes -= states.numel() * states.element_size()
            self.stats.evicted += 1


_CACHE: TrunkCache | None = None


def trunk_cache() -> TrunkCache:
    """The process's cache, created on first use with ``$CLIR_EVAL_TRUNK_CACHE_MIB`` MiB."""
    global _CACHE
    if _CACHE is None:
        raw = os.environ.get(CACHE_ENV, "").strip()
        try:
            mib = float(raw) if raw else DEFAULT_CACHE_MIB
        except ValueError:
            raise ValueError(f"{CACHE_ENV} must be a number of MiB, got {raw!r}") from None
        _CACHE = TrunkCache(int(mib * 2**20))
    return _CACHE


# -- digests ------------------------------------------------------------------------------------------
def _tensor_bytes(tensor: torch.Tensor) -> Any:
    return tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()


# Per-tensor digests, memoised per module: the 96M-parameter embedding matrix of a frozen student is hashed
# once, while tensors an optimizer changed in place (a new version counter) are hashed again.
_TENSOR_DIGESTS: "weakref.WeakKeyDictionary[nn.Module, dict[str, tuple[tuple[int, int, int], str]]]" = (
    weakref.WeakKeyDictionary())


def module_digest(module: nn.Module) -> str:
    """SHA-256 over a module's parameters and buffers (names, dtypes, shapes, bytes)."""
    memo = _TENSOR_DIGESTS.setdefault(module, {})
    digest = hashlib.sha256()
    tensors = [*module.named_parameters(), *(("buffer:" + n, b) for n, b in module.named_buffers())]
    for name, tensor in tensors:
        stamp = (id(tensor), tensor.data_ptr(), tensor._version)
        known = memo.get(name)
        if known is None or known[0] != stamp:
            part = hashlib.sha256(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            part.update(_tensor_bytes(tensor))
            known = memo[name] = (stamp, part.hexdigest())
        digest.update(name.encode())
        digest.update(known[1].encode())
    return digest.hexdigest()


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _trunk_modules(backbone: nn.Module) -> tuple[nn.Module, nn.ModuleList] | None:
    """``(embeddings, layers)`` of a BERT-shaped encoder backbone, else None."""
    embeddings = getattr(backbone, "embeddings", None)
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    config = getattr(backbone, "config", None)
    if not isinstance(embeddings, nn.Module) or not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return None
    if config is None or getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return None
    return embeddings, layers


def _base_digest(encoder: Any) -> str:
    """What every depth of the chain depends on besides weights: model class and config, tokenisation."""
    backbone = encoder.backbone
    config = {k: v for k, v in backbone.config.to_dict().items() if k not in _CONFIG_KEYS_IGNORED}
    tokenizer = encoder.tokenizer
    tokenization = {
        "class": type(tokenizer).__name__, "size": len(tokenizer), "pad": tokenizer.pad_token_id,
        "side": getattr(tokenizer, "padding_side", None), "query_prefix": encoder.config.query_prefix,
        "passage_prefix": encoder.config.passage_prefix, "max_length": encoder.config.max_length,
    }
    attention = getattr(backbone.config, "_attn_implementation", None)
    device = next(backbone.parameters()).device.type
    return _digest(type(backbone).__name__, config, attention, device, tokenization)


def trunk_chain(encoder: Any) -> tuple[str, ...]:
    """``chain[d]`` for d = 0 (embeddings) .. L (all layers) of a sentence encoder's backbone.

    Raises:
        ValueError: the backbone is not BERT-shaped (no ``embeddings`` + ``encoder.layer``).
    """
    modules = _trunk_modules(encoder.backbone)
    if modules is None:
        raise ValueError(f"{type(encoder.backbone).__name__} has no embeddings + encoder.layer trunk")
    embeddings, layers = modules
    chain = [_digest(_base_digest(encoder), module_digest(embeddings))]
    for layer in layers:
        chain.append(_digest(chain[-1], module_digest(layer)))
    return tuple(chain)


def _head_digest(encoder: Any) -> str:
    """What an encoder does after the backbone: pooling, normalisation, projection."""
    projection = encoder.projection
    return _digest(encoder.config.pooling, encoder.config.normalize,
                   module_digest(projection) if projection is not None else None)


def batch_digest(inputs: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a padded token batch (every input tensor's name, dtype, shape and values)."""
    digest = hashlib.sha256()
    for name in sorted(inputs):
        tensor = inputs[name]
        digest.update(f"{name}{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def shared_depth(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """The deepest d with ``a[d] == b[d]`` (-1 when even the embeddings differ)."""
    depth = -1
    for x, y in zip(a, b):
        if x != y:
            break
        depth += 1
    return depth


# -- which encoders share with which --------------------------------------------------------------------
_LIVE: "weakref.WeakSet[Any]" = weakref.WeakSet()
# (base digest, head digest, chain) of encoders that ran through a plan, newest last
_SEEN: OrderedDict[tuple[str, str, tuple[str, ...]], None] = OrderedDict()


def register(encoder: Any) -> None:
    """Make a live encoder a possible partner of the others (held weakly; its weights are hashed only
    when another encoder with the same model config and tokenisation plans its run)."""
    _LIVE.add(encoder)


@dataclass(frozen=True)
class _Identity:
    base: str
    head: str
    chain: tuple[str, ...]


def _identity(encoder: Any) -> _Identity:
    return _Identity(_base_digest(encoder), _head_digest(encoder), trunk_chain(encoder))


def _partner_chains(encoder: Any, me: _Identity) -> list[tuple[str, ...]]:
    """Chains of the other encoders (alive or seen) that could share a trunk with ``encoder``."""
    chains = []
    for other in list(_LIVE):
        if other is encoder or _trunk_modules(other.backbone) is None or other.backbone.training:
            continue
        if _base_digest(other) != me.base:
            continue  # another model config or tokenisation: nothing to share, no need to hash its weights
        them = _identity(other)
        if (them.head, them.chain) != (me.head, me.chain):
            chains.append(them.chain)
    for base, head, chain in _SEEN:
        if base == me.base and (head, chain) != (me.head, me.chain):
            chains.append(chain)
    return chains


def forget() -> None:
    """Clear the cache and the encoders seen so far (live encoders stay partners while alive)."""
    trunk_cache().clear()
    _SEEN.clear()


def _remember(me: _Identity) -> None:
    key = (me.base, me.head, me.chain)
    _SEEN[key] = None
    _SEEN.move_to_end(key)
    while len(_SEEN) > _SEEN_LIMIT:
        _SEEN.popitem(last=False)


# -- running a backbone from stored states ----------------------------------------------------------------
class _Stored(nn.Module):
    """Stands in for the embeddings module: returns the stored states of the resumed depth."""

    def __init__(self, states: torch.Tensor) -> None:
        super().__init__()
        self.states = states

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.states


def _install_output_hooks(backbone: nn.Module) -> None:
    """Put transformers' hidden-state hooks on every layer before any is swapped out.

    transformers 5 records ``hidden_states`` with forward hooks that it installs on the layers present at a
    model's first call with hooks wanted, once. Installed during a resumed call, they would sit on the upper
    layers only, and every later full forward would return ``depth`` hidden states too few (the dev evaluation
    of a student whose OT term reads an intermediate layer crashed, or read the wrong layer). With a hook on
    every layer, a resumed call still records ``states`` first: the first layer that runs adds its input.
    """
    try:
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # older transformers collect hidden states in the encoder's loop, without hooks
        return
    maybe_install_capturing_hooks(backbone)


@contextlib.contextmanager
def _resumed_from(backbone: nn.Module, depth: int, states: torch.Tensor) -> Iterator[None]:
    """The backbone's own forward, starting at layer ``depth`` from ``states`` (modules swapped back after)."""
    _install_output_hooks(backbone)
    encoder = backbone.encoder
    embeddings, layers = backbone.embeddings, encoder.layer
    backbone.embeddings = _Stored(states)
    encoder.layer = nn.ModuleList(list(layers)[depth:])
    try:
        yield
    finally:
        backbone.embeddings = embeddings
        encoder.layer = layers


@contextlib.contextmanager
def _captured(layers: nn.ModuleList, depths: list[int], sink: dict[int, torch.Tensor]) -> Iterator[None]:
    """Copy the output of layer ``d - 1`` (the states at depth d) into ``sink[d]`` for each depth."""
    handles = []
    for depth in depths:
        def hook(module: nn.Module, args: Any, output: Any, depth: int = depth) -> None:
            states = output[0] if isinstance(output, tuple) else output
            sink[depth] = states.detach().clone()  # a copy: no later in-place op can reach the cache

        handles.append(layers[depth - 1].register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class TrunkPlan:
    """How one encoder runs its backbone over the batches of one ``encode`` call."""

    def __init__(self, encoder: Any, chain: tuple[str, ...] | None = None, store: tuple[int, ...] = (),
                 cache: TrunkCache | None = None) -> None:
        self.backbone = encoder.backbone
        self.chain = chain
        self.store = store
        self.cache = cache

    @property
    def shares(self) -> bool:
        return self.chain is not None and self.cache is not None

    def last_hidden_state(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(b, L, h)`` last hidden state of the backbone on a padded batch (already on its device)."""
        if not self.shares:
            return self.backbone(**inputs, return_dict=True).last_hidden_state
        assert self.chain is not None and self.cache is not None
        batch = batch_digest(inputs)
        depths = len(self.chain) - 1
        start, states = 0, None
        for depth in range(depths, 0, -1):
            states = self.cache.get((self.chain[depth], batch))
            if states is not None:
                start = depth
                break
        if states is None:
            self.cache.stats.misses += 1
        else:
            self.cache.stats.hits[start] += 1
            if start == depths:
                return states
        captured: dict[int, torch.Tensor] = {}
        layers = self.backbone.encoder.layer
        with contextlib.ExitStack() as stack:
            stack.enter_context(_captured(layers, [d for d in self.store if d > start], captured))
            if states is not None:
                stack.enter_context(_resumed_from(self.backbone, start, states))
            last = self.backbone(**inputs, return_dict=True).last_hidden_state
        for depth, kept in captured.items():
            self.cache.put((self.chain[depth], batch), kept)
        return last


def plan(encoder: Any) -> TrunkPlan:
    """The trunk plan of a sentence encoder for one ``encode`` call: where it may resume and what it stores.

    Encoders that cannot share (not BERT-shaped, in training mode, cache off) get a plan that runs
    the plain forward.
    """
    cache = trunk_cache()
    if not cache.enabled or encoder.backbone.training or _trunk_modules(encoder.backbone) is None:
        return TrunkPlan(encoder)
    me = _identity(encoder)
    store = sorted({d for d in (shared_depth(me.chain, c) for c in _partner_chains(encoder, me)) if d >= 1})
    _remember(me)
    if store:
        logger.debug("trunk: %s stores its states at depths %s", getattr(encoder, "name", "encoder"), store)
    return TrunkPlan(encoder, me.chain, tuple(store), cache)


# -- the trunk in training ---------------------------------------------------------------------------------
def states_at(backbone: nn.Module, depth: int, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``(b, L, h)`` hidden states after the embeddings and the first ``depth`` layers (the backbone's own
    forward over its lowest layers, so masks are built as in a full run)."""
    encoder = backbone.encoder
    layers = encoder.layer
    encoder.layer = nn.ModuleList(list(layers)[:depth])
    try:
        return backbone(**inputs, return_dict=True).last_hidden_state
    finally:
        encoder.layer = layers


def resume(backbone: nn.Module, depth: int, states: torch.Tensor, inputs: Mapping[str, torch.Tensor],
           **kwargs: Any) -> Any:
    """The backbone's outputs on ``inputs`` computed from ``states``, its hidden states at ``depth`` (layers
    below ``depth`` left out; ``hidden_states[0]`` of the result is ``states``)."""
    with _resumed_from(backbone, depth, states):
        return backbone(**inputs, return_dict=True, **kwargs)


def has_trunk(backbone: nn.Module) -> bool:
    """Whether ``backbone`` is BERT-shaped (``embeddings`` + ``encoder.layer``), so its lower layers can be
    run apart from the others."""
    return _trunk_modules(backbone) is not None

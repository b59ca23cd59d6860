"""Query translation with any Hugging Face sequence-to-sequence MT model (Marian, NLLB, M2M100, ...).

The language codes are configuration, never read from the model name: NLLB wants ``source_lang_code``
such as ``"swh_Latn"`` and ``target_lang_code`` ``"eng_Latn"``; M2M100 ``"sw"`` and ``"en"``; a Marian
model (one language pair) needs neither. The source code is set on the tokenizer (``tokenizer.src_lang``);
the target code is forced as the first generated token (``forced_bos_token_id``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clir_eval.collections.records import Topic
from clir_eval.retrieval.translation.base import TranslatedQuery

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Seq2SeqConfig:
    """Generation settings (beam search by default, deterministic)."""

    batch_size: int = 16
    num_beams: int = 4
    max_new_tokens: int = 128
    max_input_length: int = 256
    source_lang_code: str | None = None
    target_lang_code: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_beams", "max_new_tokens", "max_input_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def load_seq2seq(location: str) -> tuple[Any, Any]:
    """``(tokenizer, model)`` for a local directory or a hub id, offline first (as :mod:`clir_eval.models.loading`)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from clir_eval.models import loading

    if Path(location).is_dir():
        return AutoTokenizer.from_pretrained(location), AutoModelForSeq2SeqLM.from_pretrained(location)
    try:
        return (AutoTokenizer.from_pretrained(location, local_files_only=True),
                AutoModelForSeq2SeqLM.from_pretrained(location, local_files_only=True))
    except OSError:
        pass
    if loading._offline_mode() or not loading._hub_reachable():
        raise loading.ModelNotAvailableError(
            f"MT model {location!r} is not a local directory, not in the Hugging Face cache, and the hub cannot "
            "be reached. Pass a local model directory, or translate elsewhere and use bm25-translated:<tsv>."
        )
    logger.info("downloading %s from the Hugging Face hub", location)
    return AutoTokenizer.from_pretrained(location), AutoModelForSeq2SeqLM.from_pretrained(location)


class Seq2SeqTranslator:
    """Translate topics with ``model.generate`` in length-sorted batches; output order = input order."""

    def __init__(self, model: str, config: Seq2SeqConfig = Seq2SeqConfig(), tokenizer: Any = None, network: Any = None) -> None:
        """Load ``model`` (id or directory), or use an already loaded ``tokenizer`` and ``network``."""
        self.model_name = model
        self.config = config
        if (tokenizer is None) != (network is None):
            raise ValueError("pass both tokenizer and network, or neither")
        if tokenizer is None:
            tokenizer, network = load_seq2seq(model)
        self.tokenizer = tokenizer
        self.network = network.eval()
        if config.device is not None:
            self.network.to(config.device)
        if config.source_lang_code is not None:
            if not hasattr(tokenizer, "src_lang"):
                raise ValueError(f"{model}: its tokenizer has no source-language setting; drop source_lang_code")
            tokenizer.src_lang = config.source_lang_code
        self.forced_bos_token_id = None
        if config.target_lang_code is not None:
            token_id = tokenizer.convert_tokens_to_ids(config.target_lang_code)
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise ValueError(f"{model}: target language code {config.target_lang_code!r} is not a token of its vocabulary")
            self.forced_bos_token_id = int(token_id)

    def translate(self, topics: list[Topic]) -> list[TranslatedQuery]:
        import torch

        texts = [topic.text for topic in topics]
        if not texts:
            return []
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=True, max_length=self.config.max_input_length)["input_ids"]]
        # Longest first, stable: batches hold similar lengths (little padding) and the order is reproducible.
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        outputs: list[str | None] = [None] * len(texts)
        device = next(self.network.parameters()).device
        generate_kwargs: dict[str, Any] = {"num_beams": self.config.num_beams, "max_new_tokens": self.config.max_new_tokens,
                                           "do_sample": False}
        if self.forced_bos_token_id is not None:
            generate_kwargs["forced_bos_token_id"] = self.forced_bos_token_id
        with torch.inference_mode():
            for start in range(0, len(order), self.config.batch_size):
                idx = order[start : start + self.config.batch_size]
                batch = self.tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                                       max_length=self.config.max_input_length).to(device)
                generated = self.network.generate(**batch, **generate_kwargs)
                for i, text in zip(idx, self.tokenizer.batch_decode(generated, skip_special_tokens=True)):
                    outputs[i] = text.strip()
        queries = []
        for topic, text in zip(topics, outputs):
            if not text:
                # An empty translation would be an empty BM25 query; keep the source text so the query still
                # matches names and numbers, and say so.
                logger.warning("MT gave an empty translation for %r; using the source text", topic.qid)
                text = topic.text
            queries.append(TranslatedQuery(topic.qid, text=text))
        return queries

    def describe(self) -> dict[str, Any]:
        return {"provider": "seq2seq", "model": self.model_name, "config": asdict(self.config)}

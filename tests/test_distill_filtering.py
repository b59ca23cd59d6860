"""Bitext filtering by ratio margin: misaligned pairs are dropped and the budget is filled from further pairs."""

import gzip
import json
import random

import numpy as np
import pytest

from clir_eval.collections.records import BitextPair
from clir_eval.distill.filtering import filtered_sample, margin_scores, ratio_margin


def _pairs(n: int, misaligned: set[int]) -> list[BitextPair]:
    """Pair i translates sentence i; a misaligned pair's English side is another pair's sentence."""
    pairs = []
    for i in range(n):
        target = f"s{(i + 7) % n}" if i in misaligned else f"s{i}"
        pairs.append(BitextPair(f"s{i}", target, "xx", "en", f"p{i}"))
    return pairs


def _embedder(dim: int = 32, noise: float = 0.3, seed: int = 0):
    """A sentence's embedding is its own random vector; the two sides of a translation differ by noise."""
    rng = np.random.default_rng(seed)
    vectors: dict[str, np.ndarray] = {}

    def embed(texts: list[str]) -> np.ndarray:
        out = []
        for text in texts:
            if text not in vectors:
                vectors[text] = rng.normal(size=dim)
            out.append(vectors[text] + noise * rng.normal(size=dim))
        return np.array(out)

    return embed


def test_translations_score_above_one_and_misaligned_pairs_below():
    pairs = _pairs(60, misaligned={3, 17, 40})
    margins = margin_scores(pairs, _embedder())
    bad = [3, 17, 40]
    assert all(margins[i] < 1.0 for i in bad)
    assert all(margins[i] > 1.0 for i in range(60) if i not in bad)


def test_the_margin_is_scale_free_and_checks_its_input():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(10, 8)), rng.normal(size=(10, 8))
    np.testing.assert_allclose(ratio_margin(x, y), ratio_margin(3 * x, 0.5 * y))
    with pytest.raises(ValueError, match="aligned"):
        ratio_margin(x, y[:9])


def test_the_filtered_sample_drops_misaligned_pairs_and_fills_the_budget():
    misaligned = set(random.Random(0).sample(range(400), 60))
    pairs = _pairs(400, misaligned)
    kept, scores = filtered_sample(pairs, 100, 1.0, _embedder(), seed="13-xx-train")
    assert len(kept) == 100 and len({p.pair_id for p in kept}) == 100
    # 15 % of the pool is misaligned; a random pair beats the mean of its sides' 4 best neighbours out of 100
    # only by chance (a few %), so nearly all are gone.
    assert len({int(p.pair_id[1:]) for p in kept} & misaligned) <= 3
    # The first window is the unfiltered sample: its aligned pairs are all kept, in order, the rest topped up.
    unfiltered = random.Random("13-xx-train").sample(pairs, 100)
    aligned_first = [p for p in unfiltered if int(p.pair_id[1:]) not in misaligned]
    assert [p for p in kept if p in unfiltered] == [p for p in unfiltered if scores[p.pair_id] >= 1.0]
    assert set(aligned_first) <= set(kept)
    # Further candidates replace the dropped pairs, about as many as the drop rate predicts.
    assert 100 < len(scores) < 150
    assert all(scores[p.pair_id] >= 1.0 for p in kept)


def test_without_a_budget_every_pair_is_scored():
    pairs = _pairs(50, misaligned={5})
    kept, scores = filtered_sample(pairs, None, 1.0, _embedder(), seed="s")
    assert len(scores) == 50 and [p.pair_id for p in pairs if p not in kept] == ["p5"]


@pytest.mark.slow
def test_a_study_trains_its_student_on_the_filtered_pairs(tmp_path, tiny_bert_dir, monkeypatch):
    """Through the runner: a sentence paired with itself is its own nearest neighbour, a sentence paired with an
    unrelated one is not, so the step keeps the first kind and records every margin.

    A random tiny BERT embeds every sentence alike (cosines of 1.000), so the backbone here is a bag of words:
    the smallest model whose embeddings tell sentences apart."""
    from clir_eval.experiment.config import load_config
    from clir_eval.experiment.runner import MARGINS_FILE, StudyRunner
    from clir_eval.models.sentence import SentenceEncoder

    class BagOfWords:
        def encode(self, texts, **_):
            out = np.zeros((len(texts), 300))
            for row, text in enumerate(texts):
                for word in text.split():
                    out[row, int(word[1:])] += 1
            return out

    loaded = []
    monkeypatch.setattr(SentenceEncoder, "from_pretrained", lambda name, *a, **k: loaded.append(name) or BagOfWords())

    rng = random.Random(3)
    words = [f"w{i}" for i in range(300)]
    sentences = [" ".join(rng.sample(words, 8)) for _ in range(120)]
    scrambled = set(range(0, 120, 6))
    source = tmp_path / "bitext"
    source.mkdir()
    with gzip.open(source / "xx-en.train.jsonl.gz", "wt", encoding="utf-8") as handle:
        for i, text in enumerate(sentences):
            target = sentences[(i + 50) % 120] if i in scrambled else text
            handle.write(json.dumps({"id": f"x{i}", "source": text, "target": target}) + "\n")
    with gzip.open(source / "xx-en.dev.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "d0", "source": "dev line", "target": "dev line"}) + "\n")
    (source / "bitext.yaml").write_text(
        "target_lang: en\nlanguages: {xx: {train: xx-en.train.jsonl.gz, dev: xx-en.dev.jsonl.gz}}\n", encoding="utf-8")
    config_file = tmp_path / "study.yaml"
    config_file.write_text(f"""
name: tiny
teacher: {tiny_bert_dir}
collections: [{{name: ntrex, split: test, languages: [sw]}}]
systems: [teacher]
students:
  - {{name: kd, method: kd, backbone: {tiny_bert_dir}, bitext: [{source}], languages: [xx], max_pairs: 40,
      min_margin: 1.0}}
""", encoding="utf-8")
    runner = StudyRunner(load_config(config_file), cache_root=tmp_path / "cache")
    runner.load_collections()
    spec = runner.config.students[0]
    kept = runner.spec_bitext(spec)
    assert len(kept) == 40 and all(p.source == p.target for p in kept)
    assert loaded == [str(tiny_bert_dir)]  # scored by the student's own backbone
    (step,) = (tmp_path / "cache" / "bitext").glob("xx-train-margin-*")
    rows = [line.split("\t") for line in (step / MARGINS_FILE).read_text(encoding="utf-8").splitlines()[1:]]
    below = {pid for pid, margin, _ in rows if float(margin) < 1.0}
    scored_scrambled = {pid for pid, _, _ in rows if int(pid[1:]) in scrambled}
    assert below and below == scored_scrambled
    assert {pid for pid, _, flag in rows if flag == "1"} == {p.pair_id for p in kept}
    # The unfiltered budget of the same study still reads the scrambled pairs it drew.
    unfiltered = runner.bitext(spec.bitext, spec.languages, "train", 40)
    assert any(p.source != p.target for p in unfiltered)

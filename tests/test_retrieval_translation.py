"""Query translation providers: user file, oracle, PSQ from bitext (eflomal), HF seq2seq (tiny random Marian)."""

import random

import pytest

from clir_eval.collections.records import BitextPair, Topic
from clir_eval.io import InputFileError
from clir_eval.retrieval.translation.base import QueryTranslator
from clir_eval.retrieval.translation.provided import FileTranslator, OracleTranslator
from clir_eval.retrieval.translation.psq import PsqConfig, PsqTableConfig, PsqTranslator, TranslationTable

LEXICON = {
    "paka": "cat", "mbwa": "dog", "nyumba": "house", "gari": "car", "mto": "river", "benki": "bank",
    "pesa": "money", "soko": "market", "leo": "today", "habari": "news", "maji": "water", "chakula": "food",
    "shule": "school", "afya": "health", "mji": "city", "nchi": "country", "rais": "president",
    "serikali": "government", "uchaguzi": "election", "watu": "people",
}


def synthetic_bitext(n: int = 300, seed: int = 0) -> list[BitextPair]:
    """Swahili-English pairs where every Swahili word has one English translation (plus English 'the')."""
    rng = random.Random(seed)
    words = sorted(LEXICON)
    pairs = []
    for i in range(n):
        chosen = rng.sample(words, rng.randint(3, 6))
        pairs.append(BitextPair(" ".join(chosen), "the " + " ".join(LEXICON[w] for w in chosen), "sw", "en", f"p{i}"))
    return pairs


def test_file_translator(tmp_path):
    path = tmp_path / "mt.tsv"
    path.write_text("q1\tcat on the mat\nq2\tmoney bank\n\n", encoding="utf-8")
    translator = FileTranslator(path)
    assert isinstance(translator, QueryTranslator)
    out = translator.translate([Topic("q2", "pesa benki", "sw"), Topic("q1", "paka", "sw")])
    assert [(q.qid, q.text) for q in out] == [("q2", "money bank"), ("q1", "cat on the mat")]
    assert translator.describe()["provider"] == "file"
    with pytest.raises(InputFileError, match="no translation"):
        translator.translate([Topic("q9", "x", "sw")])


@pytest.mark.parametrize("content, message", [("q1 no tab\n", "2 tab-separated"), ("q1\tx\nq1\ty\n", "duplicate"),
                                              ("q1\t \n", "empty translation"), ("\n", "no translations")])
def test_file_translator_errors_name_the_line(tmp_path, content, message):
    path = tmp_path / "bad.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputFileError, match=message) as error:
        FileTranslator(path)
    assert str(path) in str(error.value)


def test_oracle_translator_maps_by_qid():
    oracle = OracleTranslator([Topic("q1", "the cat", "en"), Topic("q2", "the bank", "en")])
    assert [q.text for q in oracle.translate([Topic("q2", "benki", "sw")])] == ["the bank"]
    with pytest.raises(KeyError):
        oracle.translate([Topic("q3", "x", "sw")])


def test_psq_translator_prunes_and_weights():
    table = TranslationTable("sw", "standard", {
        "pesa": (("monei", 0.6), ("cash", 0.3), ("fund", 0.05), ("rare", 0.005)),
        "ya": (("of", 0.004),),
    })
    config = PsqConfig(max_translations=5, cumulative_threshold=0.85, min_probability=0.01)
    translator = PsqTranslator(table, config)
    assert translator.term_translations("pesa") == [("monei", 0.6), ("cash", 0.3)]  # 0.9 >= 0.85 stops
    assert PsqTranslator(table, PsqConfig(max_translations=1)).term_translations("pesa") == [("monei", 0.6)]
    assert translator.term_translations("ya") == []  # below min_probability


def test_psq_table_round_trip(tmp_path):
    table = TranslationTable("sw", "standard", {"pesa": (("monei", 0.75),)}, {"aligner": "test"})
    table.save(tmp_path / "t.json")
    loaded = TranslationTable.load(tmp_path / "t.json")
    assert loaded.entries == table.entries and loaded.sha256() == table.sha256()
    (tmp_path / "bad.json").write_text("{}", encoding="utf-8")
    with pytest.raises(InputFileError):
        TranslationTable.load(tmp_path / "bad.json")


@pytest.mark.slow
def test_psq_learns_the_lexicon_from_bitext(tmp_path):
    from clir_eval.retrieval.analysis import TextAnalyzer
    from clir_eval.retrieval.translation.psq import learn_translation_table

    pairs = synthetic_bitext()
    table = learn_translation_table(pairs, config=PsqTableConfig(n_samplers=2), cache_dir=tmp_path)
    english = TextAnalyzer("en")
    correct = 0
    for sw, en in LEXICON.items():
        best = table.translations(sw)[0]
        correct += best[0] == english.analyze(en)[0] and best[1] > 0.8
    assert correct >= len(LEXICON) - 1  # eflomal samples (unseeded); allow one miss
    assert "the" not in {e for trans in table.entries.values() for e, _ in trans}  # stopwords are not index terms
    # cached: the same bitext and settings load the stored table
    assert learn_translation_table(pairs, config=PsqTableConfig(n_samplers=2), cache_dir=tmp_path).sha256() == table.sha256()
    queries = PsqTranslator(table).translate([Topic("q1", "Pesa benki Nairobi", "sw")])
    weights = dict(queries[0].terms)
    assert weights[english.analyze("money")[0]] > 0.8 and weights[english.analyze("bank")[0]] > 0.8
    assert weights["nairobi"] == 1.0  # unseen term passed through, analysed as English
    with pytest.raises(ValueError, match="sw"):
        PsqTranslator(table).translate([Topic("q1", "x", "ha")])


def _tiny_marian(path, max_positions=64, words=None, train_pairs=(), steps=0):
    """A 1-layer Marian model and a word-level fast tokenizer over ``words`` (default: the lexicon's), saved to
    ``path``: randomly initialised, or fitted for ``steps`` Adam steps on ``train_pairs`` (source, target) so it
    translates them. ``max_positions`` above 128 lets it generate at the default Seq2SeqConfig."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    words = sorted(set(words) if words else set(LEXICON) | set(LEXICON.values()))
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = MarianConfig(vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                          max_position_embeddings=max_positions, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                          forced_eos_token_id=1)
    model = MarianMTModel(config)
    if steps:
        sources, targets = [p[0] for p in train_pairs], [p[1] for p in train_pairs]
        batch = tokenizer(sources, text_target=targets, return_tensors="pt", padding=True)
        batch["labels"][batch["labels"] == tokenizer.pad_token_id] = -100
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for _ in range(steps):
            optimizer.zero_grad()
            model(**batch).loss.backward()
            optimizer.step()
        model.eval()
    model.save_pretrained(path)
    return path


def test_seq2seq_translator_with_a_tiny_random_marian(tmp_path):
    import torch

    from clir_eval.retrieval.translation.seq2seq import Seq2SeqConfig, Seq2SeqTranslator

    torch.set_num_threads(1)
    path = _tiny_marian(tmp_path / "marian")
    topics = [Topic(f"q{i}", text, "sw") for i, text in enumerate(
        ["paka", "pesa benki leo", "rais wa nchi", "habari za mji na serikali leo", "maji"])]
    batched = Seq2SeqTranslator(str(path), Seq2SeqConfig(batch_size=4, num_beams=2, max_new_tokens=6)).translate(topics)
    one_by_one = Seq2SeqTranslator(str(path), Seq2SeqConfig(batch_size=1, num_beams=2, max_new_tokens=6)).translate(topics)
    assert [q.qid for q in batched] == [t.qid for t in topics]  # input order restored after length sorting
    assert all(q.text for q in batched)
    assert [q.text for q in batched] == [q.text for q in one_by_one]  # padding does not change the output
    with pytest.raises(ValueError, match="target language code"):
        Seq2SeqTranslator(str(path), Seq2SeqConfig(target_lang_code="eng_Latn"))
    with pytest.raises(ValueError):
        Seq2SeqConfig(num_beams=0)

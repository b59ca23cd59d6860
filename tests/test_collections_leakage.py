"""The leakage guard refuses bitext that contains test queries, unless told to keep or drop them."""

import logging

import pytest

from clir_eval.collections.leakage import LeakageError, check_leakage, evaluation_topics, normalize
from clir_eval.collections.records import BitextPair, Topic
from clir_eval.collections.registry import load_collection

TEST_TOPICS = [
    Topic("q1", "Bei ya mafuta imepanda", "sw"),
    Topic("q1", "Oil prices have risen", "en"),
    Topic("q2", "Mvua kubwa Nairobi", "sw"),
    Topic("q2", "Heavy rain in Nairobi", "en"),
]


def _pairs():
    return [
        BitextPair("  BEI ya\u00a0mafuta   imepanda ", "Fuel costs went up", "sw", "en", "p1"),  # source leak
        BitextPair("Mvua ilinyesha sana", "Heavy  rain in NAIROBI", "sw", "en", "p2"),  # target leak
        BitextPair("Habari njema", "Good news", "sw", "en", "p3"),
        BitextPair("Mvua kubwa Nairobi", "x", "ha", "en", "p4"),  # same text, other language: no leak
    ]


def test_normalize_is_nfkc_casefold_whitespace():
    assert normalize("  Stra\u00dfe\u00a0\tＡＢＣ\n") == "strasse abc"


def test_refuses_with_count_and_examples():
    with pytest.raises(LeakageError) as info:
        check_leakage(_pairs(), TEST_TOPICS)
    message = str(info.value)
    assert message.startswith("2 of 4 bitext pairs equal a test topic")
    assert "1 by source, 1 by target" in message
    assert "p1 source" in message and "q1" in message and "p2 target" in message


def test_allow_keeps_everything_and_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="clir_eval.collections.leakage"):
        report = check_leakage(_pairs(), TEST_TOPICS, allow_leakage=True)
    assert len(report.pairs) == 4 and report.num_leaking == 2 and report.dropped == 0
    assert "allow_leakage=True" in caplog.text


def test_drop_removes_only_the_leaking_pairs():
    report = check_leakage(_pairs(), TEST_TOPICS, drop_leaking=True)
    assert [p.pair_id for p in report.pairs] == ["p3", "p4"]
    assert report.dropped == 2
    assert [(item.pair.pair_id, item.side, item.qids) for item in report.leaking] == [
        ("p1", "source", ("q1",)),
        ("p2", "target", ("q2",)),
    ]


def test_clean_bitext_passes_and_both_overrides_conflict():
    report = check_leakage(_pairs()[2:], TEST_TOPICS)
    assert report.num_leaking == 0 and len(report.pairs) == 2
    with pytest.raises(ValueError, match="choose one"):
        check_leakage([], TEST_TOPICS, allow_leakage=True, drop_leaking=True)


def test_ntrex_test_sentences_as_bitext_are_caught():
    ntrex = load_collection("ntrex", validate=False)
    english = {t.qid: t.text for t in ntrex.topics("en", "test")}
    stolen = [BitextPair(t.text, english[t.qid], "sw", "en", t.qid) for t in ntrex.topics("sw", "test")[:5]]
    with pytest.raises(LeakageError, match="^5 of 5"):
        check_leakage(stolen, evaluation_topics([ntrex]))
    dev_pairs = [BitextPair(t.text, "-", "sw", "en", t.qid) for t in ntrex.topics("sw", "dev")[:50]]
    assert check_leakage(dev_pairs, evaluation_topics([ntrex])).num_leaking == 0


def test_a_lafand_x_test_pair_planted_in_clean_bitext_is_refused():
    """The guard every student passes (the built-in collections' test topics) knows lafand-x: one LAFAND test pair
    planted among clean pairs is refused, whether its Hausa side or only its English side is the test text."""
    from clir_eval.collections.leakage import builtin_test_topics, guard_bitext

    lafand_x = load_collection("lafand-x", validate=False)
    topics = builtin_test_topics()
    query = lafand_x.topics("ha", "test")[10]
    english = {t.qid: t.text for t in lafand_x.topics("en", "test")}[query.qid]
    clean = [BitextPair(f"sentensi {i}", f"clean sentence number {i}", "ha", "en", f"c{i}") for i in range(20)]
    assert guard_bitext(clean, topics).num_leaking == 0
    for planted in (BitextPair(query.text, english, "ha", "en", "planted"),
                    BitextPair("wani abu daban", english.upper(), "ha", "en", "planted")):
        with pytest.raises(LeakageError, match=r"^1 of 21 .*planted"):
            guard_bitext([*clean[:10], planted, *clean[10:]], topics)
    # a dev query is not a test query: the guard lets it through (dev is for choosing the budget)
    dev = lafand_x.topics("ha", "dev")[0]
    assert guard_bitext([BitextPair(dev.text, "-", "ha", "en", "d")], evaluation_topics([lafand_x])).num_leaking == 0

"""Progress reporting: log lines with count, rate and ETA when stderr is not a terminal."""

import logging

import pytest

from clir_eval.progress import progress


def test_progress_logs_count_rate_and_eta_when_not_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="clir_eval.progress")
    with progress("encoding corpus", total=100, unit="docs", interval=0.0) as report:
        for _ in range(4):
            report.advance(25)
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("encoding corpus: 50/100 docs (50.0 %),") and "ETA" in line for line in lines)
    assert lines[-1].startswith("encoding corpus: done, 100 docs in")


def test_progress_of_a_resumed_step_counts_from_where_it_was(caplog):
    caplog.set_level(logging.INFO, logger="clir_eval.progress")
    with progress("encoding", total=10, unit="docs", done=6, interval=0.0) as report:
        report.advance(2)
    assert any("8/10 docs (80.0 %)" in r.getMessage() for r in caplog.records)


def test_a_failed_step_does_not_log_done(caplog):
    caplog.set_level(logging.INFO, logger="clir_eval.progress")
    with pytest.raises(RuntimeError):
        with progress("indexing", total=3, interval=0.0) as report:
            report.advance(1)
            raise RuntimeError("killed")
    assert not any("done" in r.getMessage() for r in caplog.records)


def test_a_step_shorter_than_the_interval_logs_nothing(caplog):
    caplog.set_level(logging.INFO, logger="clir_eval.progress")
    with progress("reading corpus", total=3, interval=60.0) as report:
        report.advance(3)
    assert caplog.records == []

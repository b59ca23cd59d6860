"""Progress of long steps: a rich bar on a terminal, periodic log lines (count, rate, ETA) otherwise.

A step longer than a few seconds wraps its loop in :func:`progress` and calls ``advance(n)``. On a terminal
(stderr is a TTY) the user sees a transient rich bar; when stderr is a file (a batch job, ``2> log``) the bar
would be invisible or garbage, so the same progress goes to the ``clir_eval.progress`` logger every
``interval`` seconds and once at the end. A step shorter than ``interval`` logs nothing (no noise from the many
short steps of a small study). Nothing is printed by this module itself; the CLI configures logging.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("clir_eval.progress")

#: Seconds between log lines when stderr is not a terminal.
LOG_INTERVAL = 10.0


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class Progress:
    """Counts work done in one step and reports it (see the module docstring).

    Attributes:
        description: what is counted, e.g. ``"encoding msmarco"``.
        total: the expected count, or None when unknown (no ETA then).
        unit: the counted thing, e.g. ``"docs"``.
        done: the count so far (may start above 0 when a step resumes).
        note: what else the step has to say now (a training loss), shown after the count.
    """

    description: str
    total: int | None = None
    unit: str = "items"
    done: int = 0
    note: str = ""
    interval: float = LOG_INTERVAL
    bar: bool = False
    _started: float = field(default_factory=time.monotonic, repr=False)
    _start_count: int = field(default=0, repr=False)
    _last_log: float = field(default_factory=time.monotonic, repr=False)
    _rich: Any = field(default=None, repr=False)
    _task: Any = field(default=None, repr=False)
    _logged: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self._start_count = self.done

    @property
    def rate(self) -> float:
        """Items per second since this step (re)started."""
        elapsed = time.monotonic() - self._started
        return (self.done - self._start_count) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        """``description: done/total unit (pct), rate unit/s, ETA h:mm:ss[; note]`` (what the log shows)."""
        rate = self.rate
        note = f"; {self.note}" if self.note else ""
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            return (f"{self.description}: {self.done:,}/{self.total:,} {self.unit} ({100 * self.done / self.total:.1f} %),"
                    f" {rate:,.1f} {self.unit}/s, ETA {_duration(eta)}{note}")
        return f"{self.description}: {self.done:,} {self.unit}, {rate:,.1f} {self.unit}/s{note}"

    def set_note(self, note: str) -> None:
        """Replace the note (shown on the bar at once, in the log with the next line)."""
        self.note = note
        if self._rich is not None:
            self._rich.update(self._task, note=note)

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more items done."""
        self.done += n
        if self._rich is not None:
            self._rich.update(self._task, completed=self.done)
            return
        now = time.monotonic()
        if now - self._last_log >= self.interval:
            self._last_log = now
            self._logged = True
            logger.info("%s", self.line())

    def skip(self, n: int) -> None:
        """Count ``n`` items found done already (a resumed step): they move the count, not the rate."""
        self.done += n
        self._start_count += n
        if self._rich is not None:
            self._rich.update(self._task, completed=self.done)

    def _open(self) -> None:
        if not self.bar:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                   TimeRemainingColumn)

        self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[note]}"), TimeRemainingColumn(), transient=True)
        self._rich.start()
        self._task = self._rich.add_task(self.description, total=self.total, completed=self.done, note=self.note)

    def _close(self, failed: bool) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        elapsed = time.monotonic() - self._started
        if not failed and (self._logged or elapsed >= self.interval):
            logger.info("%s: done, %s %s in %s (%.1f %s/s)", self.description, f"{self.done:,}", self.unit,
                        _duration(elapsed), self.rate, self.unit)


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


@contextlib.contextmanager
def progress(description: str, total: int | None = None, unit: str = "items", done: int = 0,
             show: bool = True, interval: float = LOG_INTERVAL) -> Iterator[Progress]:
    """Report the progress of one step (a rich bar on a terminal, log lines otherwise).

    Args:
        show: False reports only to the log (e.g. on ranks other than 0, or inside tests).
        done: items already done before this run (a resumed step).
    """
    report = Progress(description, total, unit, done=done, interval=interval, bar=show and _stderr_is_terminal())
    report._open()
    failed = True
    try:
        yield report
        failed = False
    finally:
        report._close(failed)

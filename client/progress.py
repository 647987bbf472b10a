"""How far a long step is, on stderr: a bar on a terminal, plain lines anywhere else.

Every progress display of the commands (`encode`'s reading and encoding, `upload`, `run`)
is a `Progress`. On a terminal it is a tqdm bar, redrawn in place. Where stderr is not a
terminal (a log file, a pipe, cron, CI, systemd, `nohup`) a bar writes nothing a reader can
use, so it prints complete lines instead, throttled here and nowhere else:

- one line when a stage starts: as its count first moves, what begins and its total
  (`encoding: 0/2000 rows (0%)`; a command refused before has printed only its error), or
  at once for a step `stage` starts (`waiting for the matcher to store it`); one when it
  ends, if it moved since its last line (`encoding: 2000/2000 rows (100%) after 3s`). A
  stage without a total (rows being read) starts with its first count (`reading: 1000
  rows`), as does one whose count is read from elsewhere (`run`'s, `moveto`);
- in between, at most one line every `LINE_EVERY_S` seconds, and only once the count has
  moved `LINE_STEP` of the total since the last line: at most about 20 lines a stage
  whatever its length, one every 30 s or rarer. A stage without a total (rows being read)
  gets one every `LINE_EVERY_S` seconds while its count moves.

A disabled `Progress` (`-q`) shows nothing either way. Progress told a whole line at a time
(`index sync`'s changes) is held back by the same rule with a `Throttle`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any

# Between two lines of one stage, at least this many seconds ...
LINE_EVERY_S = 30.0
# ... and at least this share of the stage's total done: at most ~20 lines a stage.
LINE_STEP = 0.05

# The unit of every count of records (`encode`'s reading and encoding, `upload`): one word,
# as `encode`'s report counts them ("Encoded 4000 of 4000 rows"; upload said "rec").
ROWS = " rows"

# The lines' clock (seconds, monotonic); a test moves it to see the throttle work.
clock: Callable[[], float] = time.monotonic


class Progress:
    """One progress display: `update` by a count, `moveto` a count of a total, `stage` for
    a new step (with a new total, or keeping the count), `describe` for a new description
    of the same step, `close` at the end. `prefix` starts each line (not the bar);
    `counts=False` shows shares only (work units that mean nothing to the reader);
    `in_bytes=True` counts bytes, shown in MB (in kB under one: a part of less than a
    megabyte is shown too, where a count in whole megabytes never moved), "of" the total's
    where one is given."""

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        *,
        unit: str = "",
        enabled: bool = True,
        prefix: str = "",
        counts: bool = True,
        bar_format: str | None = None,
        stream: IO[str] | None = None,
        in_bytes: bool = False,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._lines = enabled and not _is_terminal(self._stream)
        self._bar: Any = None
        if enabled and not self._lines:
            from tqdm import tqdm

            scaled = {"unit": "B", "unit_scale": True, "unit_divisor": 1024} if in_bytes else {}
            self._bar = tqdm(total=total, desc=desc, file=self._stream, leave=False,
                             dynamic_ncols=True, bar_format=bar_format,
                             **({"unit": unit} | scaled))  # fmt: skip
        self.desc, self.total, self.n = desc, total, 0
        self._unit = f" {unit.strip()}" if unit.strip() else ""
        self._prefix, self._counts = f"{prefix}: " if prefix else "", counts
        self._in_bytes = in_bytes
        self._started = self._last_time = clock()
        self._last_n = 0
        self._waiting = self._lines  # its first line when its count first moves

    def update(self, n: int = 1) -> None:
        """`n` more done (a callback's tick). As lines, a stage with a total starts with
        one at its first tick, before the count moves: what begins and its total
        (`encoding: 0/8 rows (0%)`); a count read from elsewhere (`moveto`) does not."""
        if self._waiting and self.total:
            self._line()
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._lines:
            self._maybe_line()

    def moveto(self, n: int, total: int) -> None:
        """`n` done of `total` (a status read from elsewhere)."""
        self.n, self.total = n, total
        if self._bar is not None:
            self._bar.total, self._bar.n = total, n
            self._bar.refresh()
        elif self._lines:
            self._maybe_line()

    def describe(self, desc: str) -> None:
        """A new description of the same step: shown by the bar, and by the next line."""
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description(desc)

    def stage(self, desc: str, total: int | None = None) -> None:
        """A new step: its own count from 0 of `total` when given (else the bar keeps its
        count, and lines show none), and its own lines, starting with one now."""
        if self._lines:
            self._end_line()
        self.desc = desc
        if total is not None or self._lines:  # a line's count is its stage's own
            self.n, self.total = 0, total
        if self._bar is not None:
            if total is not None:
                self._bar.reset(total=total)
            self._bar.set_description(desc)
        elif self._lines:
            self._started = self._last_time = clock()
            self._last_n = self.n
            self._line()  # a step said to start: at once

    def still(self) -> None:
        """The step goes on with nothing new to count (a run a member sees only as
        `running`, docs/privacy-design.md): the bar redraws its elapsed time; as lines, one
        saying how long it has gone on (`run: running after 2m00s`), at most one every
        `LINE_EVERY_S` seconds and rarer as it goes on (a fifth of its time so far between
        two: about 20 lines in a long wait)."""
        if self._bar is not None:
            self._bar.refresh()
        elif self._lines and not self._waiting:
            now = clock()
            if now - self._last_time >= max(LINE_EVERY_S, (now - self._started) / 5):
                self._line(elapsed=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._lines:
            self._end_line()
        self._lines = False

    def _maybe_line(self) -> None:
        if self._waiting:
            self._line()
            return
        if clock() - self._last_time < LINE_EVERY_S or self.n == self._last_n:
            return
        if self.total and self.n - self._last_n < LINE_STEP * self.total and self.n < self.total:
            return
        self._line(elapsed=True)

    def _end_line(self) -> None:
        if self.n != self._last_n:
            self._line(elapsed=True)

    def _line(self, elapsed: bool = False) -> None:
        text = f"{self._prefix}{self.desc}"
        if self.total and self._in_bytes:  # "12 MB of 44 MB (27%)": sizes, not raw bytes
            share = 100 * self.n // self.total
            text += f": {size_text(self.n)} of {size_text(self.total)} ({share}%)"
        elif self.total and self._counts:
            text += f": {self.n}/{self.total}{self._unit} ({100 * self.n // self.total}%)"
        elif self.total:
            text += f": {100 * self.n // self.total}%"
        elif self.n and self._in_bytes:
            text += f": {size_text(self.n)}"
        elif self.n:
            text += f": {self.n}{self._unit}"
        now = clock()
        if elapsed:
            text += f" after {_duration(now - self._started)}"
        print(text, file=self._stream, flush=True)
        self._last_time, self._last_n, self._waiting = now, self.n, False


def size_text(n: int) -> str:
    """Bytes in MB (of 2**20, as the bar's), in kB under one (a part of less than a megabyte
    is shown too, where a count in whole megabytes never moved)."""
    return f"{n >> 20} MB" if n >= 2**20 else f"{-(-n // 1024)} kB"


class Throttle:
    """The lines rule above for progress told a whole line at a time (`index sync`'s
    "Change N of M stored: ..."), on a terminal too: `due` says whether the line for `n` of
    `total` is to be printed (the first; the last, `n >= total`; in between at most one every
    `LINE_EVERY_S` seconds and `LINE_STEP` of the total). `held` is the last one held back,
    for the caller to print when the count ends short of its total."""

    def __init__(self) -> None:
        self._last_time: float | None = None
        self._last_n = 0
        self.held = False

    def due(self, n: int, total: int) -> bool:
        now = clock()
        soon = self._last_time is not None and (
            now - self._last_time < LINE_EVERY_S or n - self._last_n < LINE_STEP * total
        )
        if soon and n < total:
            self.held = True
            return False
        self._last_time, self._last_n, self.held = now, n, False
        return True


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s // 60 % 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"

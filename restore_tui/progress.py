"""Progress for long jobs: bytes done of total, throughput and time left.

``RateMeter`` is the pure computation (the engine and wizard reuse it);
``ProgressPrinter`` shows it on stderr, one updating line on a terminal.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TextIO

from layout.units import human_size as human_bytes

#: the side a restore waits on when no byte moves: reading the backup, or the disk written
WaitingOn = Literal["backup", "target"]

#: throughput is measured over this many recent seconds, so a slow start or a
#: burst of zero extents does not distort the estimate for long
WINDOW_SECONDS = 10.0
#: no throughput or time left before this much has been measured: a few bytes of
#: partition table in a millisecond would otherwise promise "about 7 min left"
MIN_MEASURE_SECONDS = 1.0


@dataclass(frozen=True)
class Snapshot:
    done: int
    total: int
    rate_bytes_s: float | None  # None until there is enough to measure
    eta_s: float | None  # None when unknown

    @property
    def fraction(self) -> float:
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)


class RateMeter:
    """Throughput over a sliding window and the time left at that rate."""

    def __init__(
        self,
        total: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        window_s: float = WINDOW_SECONDS,
    ) -> None:
        self.total = total
        self.clock = clock
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()
        self._first: float | None = None

    def update(self, done: int, now: float | None = None) -> Snapshot:
        t = self.clock() if now is None else now
        samples = self._samples
        if self._first is None:
            self._first = t
        samples.append((t, done))
        # Keep one sample older than the window so the window is always spanned.
        while len(samples) > 2 and t - samples[1][0] >= self.window_s:
            samples.popleft()
        t0, d0 = samples[0]
        rate: float | None = None
        finished = done >= self.total
        if t > t0 and done >= d0 and (finished or t - self._first >= MIN_MEASURE_SECONDS):
            # A job that finished within the first second still gets its true rate.
            rate = (done - d0) / (t - t0)
        eta: float | None = None
        if finished:
            eta = 0.0
        elif rate is not None and rate > 0:
            eta = (self.total - done) / rate
        return Snapshot(done, self.total, rate, eta)


def human_duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def percent(done: int, total: int) -> int:
    """Whole percent done, rounded down: 100 only when everything is done. The one way every
    front-end (progress lines, progress screen, the resume offer) turns work into a number."""
    if total <= 0 or done >= total:
        return 100
    return max(0, min(99, done * 100 // total))


def rough_duration(seconds: float) -> str:
    """How long nothing has happened, as a person says it: ``40 s``, ``2 min``, ``1 h 05 min``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    return human_duration(s)


def stall_words(waiting_on: WaitingOn, stalled_s: float, what_now: str) -> str:
    """What a stall means, for a person: which disk is not answering, what may be wrong,
    and (``what_now``, each front-end's own words) what he can do."""
    if waiting_on == "backup":
        who = (
            "restore-tui is waiting for the disk that holds the backup. A USB disk may have "
            "gone to sleep, or its cable may be loose."
        )
    else:
        who = (
            "restore-tui is waiting for the disk being restored. It may be failing, or its "
            "cable may be loose."
        )
    return f"Nothing has moved for {rough_duration(stalled_s)}: {who} {what_now}"


def describe(snap: Snapshot) -> str:
    """``45% — 120.0 MiB of 256.0 MiB, 85.2 MiB/s, about 1 min 30 s left``."""
    text = f"{snap.fraction * 100:3.0f}% — {human_bytes(snap.done)} of {human_bytes(snap.total)}"
    if snap.rate_bytes_s is not None:
        text += f", {human_bytes(snap.rate_bytes_s)}/s"
    if snap.eta_s is not None and snap.done < snap.total:
        text += f", about {human_duration(snap.eta_s)} left"
    return text


class ProgressPrinter:
    """A ``progress(done, total)`` callback that prints to a stream (stderr).

    On a terminal it rewrites one line a few times a second; otherwise (a log
    file, a pipe) it prints a plain line every ``plain_every_s`` seconds.
    """

    def __init__(
        self,
        label: str,
        total: int,
        *,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        plain_every_s: float = 10.0,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.meter = RateMeter(total, clock=clock)
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.2 if self.tty else plain_every_s
        self._last_print = -1e18
        self._width = 0
        self.last: Snapshot | None = None

    def __call__(self, done: int, total: int | None = None) -> None:
        if total is not None and total != self.meter.total:
            self.meter.total = total
        now = self.clock()
        self.last = self.meter.update(done, now)
        if now - self._last_print >= self.interval:
            self._last_print = now
            self._show(self.last)

    def _show(self, snap: Snapshot) -> None:
        line = f"{self.label}: {describe(snap)}"
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self, message: str | None = None) -> None:
        """Print the final state and end the line."""
        snap = self.last or self.meter.update(0)
        line = f"{self.label}: {message or describe(snap)}"
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad + "\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

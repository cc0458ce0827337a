"""Progress: the pure rate/ETA meter, and what the printer writes on a terminal or a log."""

from __future__ import annotations

import io

import pytest

from restore_tui.progress import (
    ProgressPrinter,
    RateMeter,
    describe,
    human_duration,
    percent,
    rough_duration,
)

MiB = 1024 * 1024


def test_rate_and_eta_from_a_steady_flow() -> None:
    meter = RateMeter(100 * MiB, window_s=10)
    assert meter.update(0, now=0.0).rate_bytes_s is None
    snap = meter.update(10 * MiB, now=2.0)
    assert snap.rate_bytes_s == pytest.approx(5 * MiB)
    assert snap.eta_s == pytest.approx(18.0)
    assert snap.fraction == pytest.approx(0.1)


def test_rate_follows_a_slowdown_within_the_window() -> None:
    meter = RateMeter(1000 * MiB, window_s=10)
    t, done = 0.0, 0
    for _ in range(20):  # 20 s at 10 MiB/s
        meter.update(done, now=t)
        t, done = t + 1, done + 10 * MiB
    for _ in range(15):  # then 15 s at 1 MiB/s: the window forgets the fast start
        snap = meter.update(done, now=t)
        t, done = t + 1, done + 1 * MiB
    assert snap.rate_bytes_s is not None and snap.rate_bytes_s < 1.2 * MiB
    assert snap.eta_s is not None and snap.eta_s > 700


def test_finished_has_no_time_left() -> None:
    meter = RateMeter(5, window_s=10)
    meter.update(0, now=0.0)
    assert meter.update(5, now=1.0).eta_s == 0.0
    assert "left" not in describe(meter.update(5, now=1.5))


def test_stalled_has_unknown_eta() -> None:
    meter = RateMeter(5 * MiB)
    meter.update(MiB, now=0.0)
    snap = meter.update(MiB, now=3.0)
    assert snap.rate_bytes_s == 0 and snap.eta_s is None


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_printer_on_a_terminal_rewrites_one_line() -> None:
    clock = iter(float(i) for i in range(100))
    stream = _Tty()
    printer = ProgressPrinter("Backing up", 100 * MiB, stream=stream, clock=lambda: next(clock))
    for done in range(0, 100 * MiB + 1, 10 * MiB):
        printer(done, 100 * MiB)
    printer.finish()
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.count("\r") == 12
    assert "Backing up:  50% — 50.0 MiB of 100.0 MiB, 10.0 MiB/s, about 5 s left" in text


def test_printer_to_a_log_prints_occasional_plain_lines() -> None:
    clock = iter(float(i) for i in range(100))
    stream = io.StringIO()
    printer = ProgressPrinter(
        "Checking", 60 * MiB, stream=stream, clock=lambda: next(clock), plain_every_s=10
    )
    for done in range(0, 60 * MiB + 1, MiB):  # one MiB per second for a minute
        printer(done)
    printer.finish()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 8  # at 0, 10, ..., 60 s, then the final line
    assert lines[-1].startswith("Checking: 100%")


def test_human_duration() -> None:
    assert human_duration(5.4) == "5 s"
    assert human_duration(90) == "1 min 30 s"
    assert human_duration(3 * 3600 + 120) == "3 h 02 min"


def test_no_estimate_from_a_first_instant() -> None:
    """16 bytes of table in a millisecond must not promise minutes left."""
    meter = RateMeter(100 * 1024 * 1024)
    meter.update(0, now=0.0)
    early = meter.update(16, now=0.001)
    assert early.rate_bytes_s is None and early.eta_s is None
    later = meter.update(50 * 1024 * 1024, now=2.0)
    assert later.eta_s is not None and 1.5 < later.eta_s < 2.5
    # A job done within its first second still reports how fast it went.
    quick = RateMeter(1000)
    quick.update(0, now=0.0)
    done = quick.update(1000, now=0.5)
    assert done.rate_bytes_s == 2000 and done.eta_s == 0.0


def test_one_percent_rounding_for_every_front_end() -> None:
    """Rounded down, 100 only when all is done: nearly finished never reads as finished."""
    assert percent(0, 200) == 0
    assert percent(55, 100) == 55
    assert percent(2759, 10000) == 27  # not 28, as a rounding progress bar would say
    assert percent(999, 1000) == 99
    assert percent(1000, 1000) == 100
    assert percent(0, 0) == 100  # nothing to do is done


def test_rough_duration_for_a_stall() -> None:
    assert rough_duration(0.3) == "0 s"
    assert rough_duration(45) == "45 s"
    assert rough_duration(125) == "2 min"
    assert rough_duration(2 * 3600 + 300) == "2 h 05 min"

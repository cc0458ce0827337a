"""A stall is named: when no byte moves, the engine says which disk it waits on, and for how long.

The backup side is held inside the archive's ``pieces()`` iteration, the target side
inside the writer's ``write``: the engine thread is really stuck in the call, as it is
when a USB disk sleeps. The threshold is small (a constructor parameter); no test asserts
more about time than "not before the threshold".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_engine_helpers import SECTOR, MemoryArchive, expected_bytes, full_disk_plan, sample_source

from archive.base import Area, Piece
from restore_tui.engine import ProgressEvent, RestoreEngine, chunk_batches, device_io_counter
from restore_tui.progress import rough_duration, stall_words
from restore_tui.writer import CheckedWriter

STALL = 0.3
HOLD = 10.0  # the most a test holds the engine; it lets go as soon as it saw what it waits for


class Recorder:
    """Events with the moment each arrived; ``seen(kind)`` is set on the first of a kind."""

    def __init__(self) -> None:
        self.events: list[tuple[float, ProgressEvent]] = []
        self._seen: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def seen(self, kind: str) -> threading.Event:
        with self._lock:
            return self._seen.setdefault(kind, threading.Event())

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            self.events.append((time.monotonic(), event))
        self.seen(event.kind).set()

    def of(self, kind: str) -> list[tuple[float, ProgressEvent]]:
        with self._lock:
            return [(t, e) for t, e in self.events if e.kind == kind]


class HeldArchive(MemoryArchive):
    """A backup whose reading stops, once, before the piece at ``hold_at`` of ``area``."""

    def __init__(self, *args: object, area: Area, hold_at: int, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.hold_area, self.hold_at = area, hold_at
        self.release = threading.Event()
        self.held_since: float | None = None

    def pieces(self, area: Area, start: int = 0) -> Iterator[Piece]:
        for piece in super().pieces(area, start):
            if area == self.hold_area and piece.offset >= self.hold_at and self.held_since is None:
                self.held_since = time.monotonic()
                self.release.wait(HOLD)
            yield piece


def engine(plan, archive, target: Path, tmp_path: Path, progress, **kw) -> RestoreEngine:  # type: ignore[no-untyped-def]
    kw.setdefault("stall_seconds", STALL)
    return RestoreEngine(
        plan,
        archive,
        str(target),
        journal_location=tmp_path / "journal.json",
        progress=progress,
        device_activity=None,  # only what the engine sees counts: the disk under /tmp is shared
        **kw,
    )


def run_in_thread(eng: RestoreEngine) -> tuple[threading.Thread, list[BaseException]]:
    failure: list[BaseException] = []

    def work() -> None:
        try:
            eng.run()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, failure


def assert_stall_then_moving(rec: Recorder, side: str, held_since: float | None) -> None:
    stalls = rec.of("stalled")
    assert stalls, "no stall was reported"
    at, first = stalls[0]
    assert first.waiting_on == side
    assert first.stalled_s is not None and first.stalled_s >= STALL
    assert held_since is not None and at - held_since >= STALL, "reported before the threshold"
    assert first.stage_name == "partition-2"  # where it stopped, for the words around it
    moving = rec.of("moving")
    assert moving, "bytes moved again, but nothing said so"
    moved_at, again = moving[0]
    assert moved_at >= stalls[-1][0] and again.waiting_on == side
    assert again.stalled_s is not None and again.stalled_s >= STALL
    # After "moving" the restore goes on writing.
    assert "write" in [e.kind for t, e in rec.events if t >= moved_at]


def test_a_backup_that_stops_answering_is_named_and_clears(tmp_path: Path) -> None:
    disk, table = sample_source()
    p2 = table.partition(2)
    archive = HeldArchive(disk, table, area=2, hold_at=p2.start_lba * SECTOR + 512 * 1024)
    target = tmp_path / "target.img"
    target.write_bytes(bytes(len(disk)))
    before = target.read_bytes()
    plan = full_disk_plan(archive, target, len(disk))
    rec = Recorder()
    eng = engine(plan, archive, target, tmp_path, rec)
    thread, failure = run_in_thread(eng)

    assert rec.seen("stalled").wait(HOLD), "no stall was reported while the backup was held"
    assert eng.stalled_on == "backup"
    archive.release.set()
    thread.join(HOLD)
    assert not thread.is_alive() and not failure
    assert_stall_then_moving(rec, "backup", archive.held_since)
    assert eng.stalled_on is None
    assert target.read_bytes() == expected_bytes(plan, archive, before)


def test_a_target_that_stops_answering_is_named_and_clears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk, table = sample_source()
    p2 = table.partition(2)
    archive = MemoryArchive(disk, table)
    target = tmp_path / "target.img"
    target.write_bytes(bytes(len(disk)))
    before = target.read_bytes()
    plan = full_disk_plan(archive, target, len(disk))
    release = threading.Event()
    held: list[float] = []
    real_write = CheckedWriter.write

    def write(self: CheckedWriter, offset: int, data: bytes | memoryview) -> None:
        if offset >= p2.start_lba * SECTOR + 512 * 1024 and not held:
            held.append(time.monotonic())
            release.wait(HOLD)  # the disk takes the write, but not for a long while
        real_write(self, offset, data)

    monkeypatch.setattr(CheckedWriter, "write", write)
    rec = Recorder()
    eng = engine(plan, archive, target, tmp_path, rec)
    thread, failure = run_in_thread(eng)

    assert rec.seen("stalled").wait(HOLD), "no stall was reported while the target was held"
    assert eng.stalled_on == "target"
    release.set()
    thread.join(HOLD)
    assert not thread.is_alive() and not failure
    assert_stall_then_moving(rec, "target", held[0] if held else None)
    assert target.read_bytes() == expected_bytes(plan, archive, before)


def test_a_long_stall_is_reported_again_with_how_long(tmp_path: Path) -> None:
    disk, table = sample_source()
    p2 = table.partition(2)
    archive = HeldArchive(disk, table, area=2, hold_at=p2.start_lba * SECTOR)
    target = tmp_path / "target.img"
    target.write_bytes(bytes(len(disk)))
    plan = full_disk_plan(archive, target, len(disk))
    rec = Recorder()
    thread, failure = run_in_thread(engine(plan, archive, target, tmp_path, rec))
    deadline = time.monotonic() + HOLD
    while len(rec.of("stalled")) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    archive.release.set()
    thread.join(HOLD)
    assert not failure
    lengths = [e.stalled_s or 0 for _, e in rec.of("stalled")]
    assert len(lengths) >= 3 and lengths == sorted(lengths)
    assert len(rec.of("moving")) == 1


def test_waiting_on_no_disk_is_not_a_stall(tmp_path: Path) -> None:
    """Time spent outside a read or a write (here: a slow progress callback) is not a disk
    that stopped answering."""
    disk, table = sample_source()
    archive = MemoryArchive(disk, table)
    target = tmp_path / "target.img"
    target.write_bytes(bytes(len(disk)))
    plan = full_disk_plan(archive, target, len(disk))
    kinds: list[str] = []

    def slow(event: ProgressEvent) -> None:
        kinds.append(event.kind)
        if event.kind == "stage-start":
            time.sleep(2.5)

    engine(plan, archive, target, tmp_path, slow, stall_seconds=1.0).run()
    assert "stalled" not in kinds and kinds[-1] == "finished"


def test_a_disk_the_kernel_sees_working_is_not_stalled(tmp_path: Path) -> None:
    """A long flush moves bytes the engine does not see one by one; the disk's own counters
    do, and then no stall is reported."""
    disk, table = sample_source()
    p2 = table.partition(2)
    archive = HeldArchive(disk, table, area=2, hold_at=p2.start_lba * SECTOR)
    target = tmp_path / "target.img"
    target.write_bytes(bytes(len(disk)))
    plan = full_disk_plan(archive, target, len(disk))
    ticks = iter(range(10**9))
    rec = Recorder()
    eng = RestoreEngine(
        plan,
        archive,
        str(target),
        journal_location=tmp_path / "journal.json",
        progress=rec,
        stall_seconds=STALL,
        device_activity=lambda path: lambda: next(ticks),  # always busy
    )
    thread, failure = run_in_thread(eng)
    time.sleep(4 * STALL)
    archive.release.set()
    thread.join(HOLD)
    assert not failure and archive.held_since is not None
    assert rec.of("stalled") == []


def test_device_counter_reads_the_kernels_numbers_or_says_unknown(tmp_path: Path) -> None:
    assert device_io_counter(str(tmp_path / "missing"))() is None
    value = device_io_counter(str(tmp_path))()
    assert value is None or value >= 0


def test_verify_batches_never_cut_a_chunk() -> None:
    from archive.manifest import Chunk

    chunks = [Chunk(offset=i * 100, length=100, kind="zero") for i in range(10)]
    assert chunk_batches(chunks, 0, 1000, 250) == [(0, 200), (200, 400), (400, 600),
                                                   (600, 800), (800, 1000)]  # fmt: skip
    assert chunk_batches(chunks, 50, 1000, 10_000) == [(50, 1000)]
    cuts = [b for _, b in chunk_batches(chunks, 50, 950, 150)][:-1]
    assert cuts and all(c % 100 == 0 for c in cuts)
    # Without digests the bytes are compared against the archive read from the range's
    # start: one range, not one re-read of the archive per batch.
    plain = [Chunk(offset=i * 100, length=100, kind="data") for i in range(10)]
    assert chunk_batches(plain, 0, 1000, 250) == [(0, 1000)]


def test_the_words_name_the_disk_and_how_long() -> None:
    backup = stall_words("backup", 125, "You can wait.")
    assert backup.startswith("Nothing has moved for 2 min: restore-tui is waiting for the disk ")
    assert "holds the backup" in backup and "gone to sleep" in backup
    assert backup.endswith("You can wait.")
    target = stall_words("target", 40, "")
    assert "Nothing has moved for 40 s" in target and "disk being restored" in target
    assert "failing" in target and "cable" in target
    assert rough_duration(3700) == "1 h 01 min"

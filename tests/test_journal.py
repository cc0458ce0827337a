"""The checkpoint journal: durable replacement, where it lives, and what it says.

A crash at any point of a save leaves the previous record whole; the engine
flushes data before every record that vouches for it.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from test_engine_helpers import MemoryArchive, full_disk_plan, sample_source

from layout.probe import MountEntry, read_mounts
from restore_tui import engine as engine_module
from restore_tui import journal as journal_module
from restore_tui import writer as writer_module
from restore_tui.engine import ProgressEvent, RestoreCancelled, RestoreEngine
from restore_tui.journal import (
    Journal,
    JournalError,
    beside_path,
    find_for_archive,
    find_unfinished,
    lost_at_restart,
    state_dir,
    write_durably,
)


@pytest.fixture
def plan_and_target(tmp_path: Path):  # type: ignore[no-untyped-def]
    disk, table = sample_source(size=4 * 1024 * 1024, seed=21)
    archive = MemoryArchive(disk, table, path=tmp_path / "backup.rtui")
    target = tmp_path / "target.img"
    target.write_bytes(bytes(len(disk)))
    return full_disk_plan(archive, target, len(disk)), archive, target


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return state / "restore-tui"


def test_write_durably_replaces_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "j.json"
    write_durably(path, '{"n": 1}')
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        os,
        "fsync",
        lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))[1],
    )
    write_durably(path, '{"n": 2}')
    # The temp file is fsynced before the rename, the directory after it.
    assert synced[0].endswith(".j.json.tmp") and synced[-1] == str(tmp_path)
    assert json.loads(path.read_text()) == {"n": 2}

    # A crash between writing the temp file and renaming it: the old record stays whole.
    def crash(src: str, dst: str) -> None:
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_durably(path, '{"n": 3, "half": "writ')
    assert json.loads(path.read_text()) == {"n": 2}


def test_journal_beside_the_archive_and_its_summary(plan_and_target, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plan, archive, target = plan_and_target
    journal = Journal.create(
        plan,
        archive_path=archive.path,
        target_path=str(target),
        target_identity=plan.target.identity,
    )
    assert (
        journal.path == tmp_path / "backup.rtui.restore-journal.json" == beside_path(archive.path)
    )
    journal.save(
        completed_stages=("table", "partition-1"),
        current_stage="partition-2",
        done_in_action=plan.stages[2].actions[0].length // 2,
    )
    loaded = find_for_archive(archive.path)
    assert loaded is not None and loaded.record == journal.record
    summary = loaded.summary()
    assert (summary.stage_number, summary.stage_count) == (3, 3)
    assert 50 <= summary.percent < 99
    assert summary.describe() == (
        f"Resume restoring backup.rtui onto {plan.target.name} at {target} (stage 3 of 3, "
        f"{summary.percent} %)"
    )
    assert [s.path for s in find_unfinished([archive.path], search_dirs=[])] == [journal.path]
    journal.save(finished=True)
    assert find_for_archive(archive.path) is None
    assert find_unfinished([archive.path], search_dirs=[]) == []


def test_falls_back_to_the_state_dir_when_the_archive_folder_takes_no_file(
    plan_and_target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_state_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    plan, archive, target = plan_and_target
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    # The folder beside the archive cannot hold a file (like a read-only medium).
    monkeypatch.setattr(journal_module, "beside_path", lambda a: blocked / "j.json")
    journal = Journal.create(
        plan,
        archive_path=archive.path,
        target_path=str(target),
        target_identity=plan.target.identity,
    )
    assert journal.path.parent == private_state_dir == state_dir()
    assert find_for_archive(archive.path) is not None
    assert [s.path for s in find_unfinished(search_dirs=[private_state_dir])] == [journal.path]


def test_damaged_journal_is_named(tmp_path: Path) -> None:
    path = tmp_path / "x.restore-journal.json"
    path.write_text('{"journal_version": 1, "plan_dig')
    with pytest.raises(JournalError, match="damaged"):
        Journal.load(path)
    assert find_unfinished(search_dirs=[tmp_path]) == []


def test_engine_flushes_data_before_every_record(
    plan_and_target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    plan, archive, target = plan_and_target
    log: list[str] = []
    real_write, real_sync = (
        writer_module.CheckedWriter._pwrite_all,
        writer_module.CheckedWriter.sync,
    )
    real_durable = journal_module.write_durably

    def pwrite(self, offset, view, *lent):  # type: ignore[no-untyped-def]
        log.append("data")
        real_write(self, offset, view, *lent)

    def sync(self):  # type: ignore[no-untyped-def]
        log.append("sync")
        real_sync(self)

    def durable(path, text):  # type: ignore[no-untyped-def]
        log.append("record")
        real_durable(path, text)

    monkeypatch.setattr(writer_module.CheckedWriter, "_pwrite_all", pwrite)
    monkeypatch.setattr(writer_module.CheckedWriter, "sync", sync)
    monkeypatch.setattr(journal_module, "write_durably", durable)
    cancel = threading.Event()
    writes = {"n": 0}

    def progress(e: ProgressEvent) -> None:
        writes["n"] += e.kind == "write"
        if writes["n"] == 20:
            cancel.set()

    with pytest.raises(RestoreCancelled):
        RestoreEngine(
            plan, archive, str(target), cancel=cancel, progress=progress, checkpoint_seconds=0.0
        ).run()
    assert log.count("record") > 10
    pending = False
    for entry in log:
        if entry == "data":
            pending = True
        elif entry == "sync":
            pending = False
        else:
            assert not pending, "a checkpoint was recorded before its data was flushed"
    assert engine_module.CHECKPOINT_SECONDS <= 5  # "at least every few seconds"


def test_a_record_in_memory_is_said_to_be_lost_at_a_restart(tmp_path: Path) -> None:
    record = tmp_path / "backup.rtui.restore-journal.json"
    st = os.stat(tmp_path)
    devno = (os.major(st.st_dev), os.minor(st.st_dev))

    def mounted_as(fstype: str) -> list[MountEntry]:
        return [MountEntry(devno=devno, mount_point="/x", source="none", fstype=fstype)]

    assert lost_at_restart(record, mounted_as("ext4")) is None
    assert lost_at_restart(record, mounted_as("vfat")) is None
    note = lost_at_restart(record, mounted_as("tmpfs"))
    assert note is not None and "lost if the computer restarts" in note and "(tmpfs)" in note
    live = lost_at_restart(record, mounted_as("overlay"))
    assert live is not None and "live system" in live


def test_a_real_tmpfs_is_recognised() -> None:
    shm = Path("/dev/shm")
    fstypes = {m.fstype for m in read_mounts() if m.mount_point == str(shm)}
    if fstypes != {"tmpfs"}:
        pytest.skip("/dev/shm is not a tmpfs on this machine")
    assert lost_at_restart(shm / "x.restore-journal.json") is not None


def test_every_checkpoint_records_the_percent_the_engine_showed(tmp_path: Path) -> None:
    """A partition that stores only part of itself: by plan bytes a stop looks much less
    done than by what really moved. The record carries the engine's units, so the resume
    offer says the percent the progress lines and screen said at that checkpoint."""
    disk, table = sample_source(size=4 * 1024 * 1024, seed=22)
    p2 = table.partition(2)
    lo = p2.start_lba * 512
    archive = MemoryArchive(
        disk, table, stored={2: [(lo, lo + 600_000)]}, path=tmp_path / "backup.rtui"
    )
    target = tmp_path / "target.img"
    target.write_bytes(bytes(len(disk)))
    plan = full_disk_plan(archive, target, len(disk))
    cancel = threading.Event()
    checkpoints: list[ProgressEvent] = []

    def progress(e: ProgressEvent) -> None:
        if e.kind == "checkpoint":
            checkpoints.append(e)
        if e.kind == "write" and e.stage_name == "partition-2" and e.stage_done >= 300_000:
            cancel.set()

    with pytest.raises(RestoreCancelled):
        RestoreEngine(
            plan, archive, str(target), cancel=cancel, progress=progress, checkpoint_seconds=0.0
        ).run()
    journal = find_for_archive(archive.path)
    assert journal is not None
    record, last = journal.record, checkpoints[-1]
    assert (record.done_units, record.total_units) == (last.overall_done, last.overall_total)
    assert journal.summary().percent == last.overall_percent
    # The old way (plan byte lengths) gave another number: the bug this replaces.
    by_length = record.bytes_done() * 100 // sum(s.bytes_to_write for s in plan.stages)
    assert by_length != last.overall_percent

    # A resumed engine starts from that same number, before it writes anything.
    first: list[ProgressEvent] = []
    resumed = RestoreEngine(plan, archive, str(target), journal=journal, progress=first.append)
    resumed.run()
    assert first[0].overall_percent == last.overall_percent
    assert [e.stage_name for e in first if e.kind == "stage-already-done"] == [
        "table",
        "partition-1",
    ]
    assert first[-1].kind == "finished"
    assert Journal.load(journal.path).record.done_units == resumed.overall_total


def test_a_record_without_progress_units_still_loads(plan_and_target, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Records written before the units were kept: loaded, and their percent from plan bytes."""
    plan, archive, target = plan_and_target
    journal = Journal.create(
        plan,
        archive_path=archive.path,
        target_path=str(target),
        target_identity=plan.target.identity,
    )
    journal.save(completed_stages=("table",), current_stage="partition-1")
    old = json.loads(journal.path.read_text())
    for key in ("done_units", "total_units"):
        old.pop(key, None)
    assert old["journal_version"] == 1
    journal.path.write_text(json.dumps(old))
    loaded = Journal.load(journal.path)
    assert loaded.record.done_units is None and loaded.record.total_units is None
    total = sum(s.bytes_to_write for s in plan.stages)
    assert loaded.summary().percent == loaded.record.bytes_done() * 100 // total
    loaded.save(done_units=30, total_units=40)
    assert Journal.load(journal.path).summary().percent == 75

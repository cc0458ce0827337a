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
        f"Resume restoring backup.rtui onto the disk image {target} (stage 3 of 3, "
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

    def pwrite(self, offset, view):  # type: ignore[no-untyped-def]
        log.append("data")
        real_write(self, offset, view)

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

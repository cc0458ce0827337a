"""The restore engine on image files with an in-memory archive and hand-made plans.

Every test checks the target's bytes: what the plan writes, and that nothing else
changed; resume, cancellation, damage and verification failures included.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from test_engine_helpers import (
    SECTOR,
    MemoryArchive,
    expected_bytes,
    full_disk_plan,
    make_plan,
    mbr_sector0,
    sample_source,
)

from layout.models import Partition, PartitionTable
from layout.plan import RestoreArea, Stage, WriteBytes
from layout.table_io import read_table, table_fingerprint
from restore_tui import writer as writer_module
from restore_tui.engine import (
    DamagedBackup,
    ProgressEvent,
    RestoreCancelled,
    RestoreEngine,
    TableMismatch,
    TargetChanged,
    VerifyFailed,
)
from restore_tui.journal import Journal

PATTERN = b"\xa5"


def blank_target(tmp_path: Path, size: int, name: str = "target.img") -> Path:
    target = tmp_path / name
    target.write_bytes(PATTERN * size)
    return target


def engine_for(plan, archive, target: Path, tmp_path: Path, **kw) -> RestoreEngine:  # type: ignore[no-untyped-def]
    return RestoreEngine(
        plan, archive, str(target), journal_location=tmp_path / "journal.json", **kw
    )


def test_full_disk_restore_writes_exactly_the_plan(tmp_path: Path) -> None:
    disk, table = sample_source()
    # Partition 2 stores only part of itself, like a filesystem's used blocks.
    p2 = table.partition(2)
    lo = p2.start_lba * SECTOR
    archive = MemoryArchive(
        disk, table, stored={2: [(lo, lo + 700_000), (lo + 900_000, lo + 1_500_000)]}
    )
    target = blank_target(tmp_path, len(disk))
    before = target.read_bytes()
    plan = full_disk_plan(archive, target, len(disk))
    events: list[ProgressEvent] = []
    engine_for(plan, archive, target, tmp_path, progress=events.append).run()

    after = target.read_bytes()
    assert after == expected_bytes(plan, archive, before)
    # Stored ranges equal the source, unstored ones were never written.
    assert after[:SECTOR] == disk[:SECTOR]
    assert after[lo : lo + 700_000] == disk[lo : lo + 700_000]
    assert after[lo + 700_000 : lo + 900_000] == before[lo + 700_000 : lo + 900_000]
    parsed = read_table(lambda o, n: after[o : o + n], len(after))
    assert parsed is not None and table_fingerprint(parsed) == table_fingerprint(table)

    kinds = [e.kind for e in events]
    assert kinds[-1] == "finished"
    assert kinds.count("stage-done") == len(plan.stages)
    last = events[-1]
    assert (
        last.overall_done
        == last.overall_total
        == engine_for(plan, archive, target, tmp_path).overall_total
    )
    journal = Journal.load(tmp_path / "journal.json")
    assert journal.record.finished
    assert journal.record.completed_stages == tuple(s.name for s in plan.stages)


class LoggedArchive(MemoryArchive):
    """Logs when each area's first piece is decoded; ``digests=False`` drops the chunks'
    digests, as in formats that have none (Clonezilla's)."""

    def __init__(self, disk: bytes, table: PartitionTable, log: list[tuple], digests: bool):
        super().__init__(disk, table)
        self.log = log
        if not digests:
            bare = [
                tuple(c.model_copy(update={"sha256": None}) for c in image.chunks)
                for image in self.manifest.partitions
            ]
            images = tuple(
                image.model_copy(update={"chunks": chunks})
                for image, chunks in zip(self.manifest.partitions, bare, strict=True)
            )
            self.manifest = self.manifest.model_copy(update={"partitions": images})

    def pieces(self, area, start=0):  # type: ignore[no-untyped-def]
        for n, piece in enumerate(super().pieces(area, start)):
            if n == 0:
                self.log.append(("decoded", area))
            yield piece


@pytest.mark.parametrize(
    ("digests", "verify", "ahead"),
    [(True, True, True), (True, False, True), (False, False, True), (False, True, False)],
)
def test_the_next_stage_is_decoded_while_the_stage_before_is_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, digests: bool, verify: bool, ahead: bool
) -> None:
    """The flush at a stage's end leaves the processors idle: the next stage's first chunks
    are decoded meanwhile. Not when the stage's end check decodes the backup again to
    compare bytes (no chunk digests): two pipelines of decoded chunks would double the
    memory held."""
    disk, table = sample_source(seed=7)
    log: list[tuple] = []
    archive = LoggedArchive(disk, table, log, digests)
    target = blank_target(tmp_path, len(disk))
    plan = full_disk_plan(archive, target, len(disk))
    want = expected_bytes(plan, archive, target.read_bytes())
    real_sync = writer_module.CheckedWriter.sync

    def sync(self: writer_module.CheckedWriter) -> None:
        real_sync(self)
        log.append(("flushed",))

    monkeypatch.setattr(writer_module.CheckedWriter, "sync", sync)
    log.clear()  # expected_bytes decoded every area too
    engine_for(
        plan, archive, target, tmp_path, verify=verify,
        progress=lambda e: log.append((e.kind, e.message)) if e.kind == "stage-start" else None,
    ).run()  # fmt: skip
    assert target.read_bytes() == want
    start = log.index(("stage-start", "Partition 2"))
    stage_flushed = max(i for i, e in enumerate(log[:start]) if e == ("flushed",))
    decoded = log.index(("decoded", 2))
    assert (decoded < stage_flushed) is ahead, log


def test_damage_met_while_decoding_ahead_is_reported_by_its_own_stage(tmp_path: Path) -> None:
    """The first chunk of partition 2 is damaged and decoded ahead while partition 1 is
    flushed: partition 1 still finishes and is checked; the damage stops partition 2
    before its first byte, and a resume with a good copy finishes."""
    disk, table = sample_source(seed=8)
    archive = MemoryArchive(disk, table)
    target = blank_target(tmp_path, len(disk))
    before = target.read_bytes()
    plan = full_disk_plan(archive, target, len(disk))
    want = expected_bytes(plan, archive, before)
    bad = archive.manifest.image(2).chunks[0]
    assert bad.kind == "data"
    archive.corrupt.add(bad.offset)

    with pytest.raises(DamagedBackup) as info:
        engine_for(plan, archive, target, tmp_path).run()
    assert f"partition 2 at byte {bad.offset}" in str(info.value)
    journal = Journal.load(tmp_path / "journal.json")
    assert journal.record.completed_stages == ("table", "partition-1")
    assert journal.record.current_stage == "partition-2"
    assert journal.record.done_in_action == 0
    p2 = table.partition(2).start_lba * SECTOR
    assert target.read_bytes()[:p2] == want[:p2]
    assert target.read_bytes()[p2:] == before[p2:]
    RestoreEngine(plan, MemoryArchive(disk, table), str(target), journal=journal).run()
    assert target.read_bytes() == want


def test_cancel_then_resume_ends_with_the_same_bytes(tmp_path: Path) -> None:
    disk, table = sample_source(seed=2)
    archive = MemoryArchive(disk, table)
    target = blank_target(tmp_path, len(disk))
    before = target.read_bytes()
    plan = full_disk_plan(archive, target, len(disk))
    want = expected_bytes(plan, archive, before)

    cancel = threading.Event()
    seen = {"writes": 0}

    def stop_in_partition_2(event: ProgressEvent) -> None:
        if event.kind == "write" and event.stage_name == "partition-2":
            seen["writes"] += 1
            if seen["writes"] == 5:
                cancel.set()

    engine = engine_for(
        plan, archive, target, tmp_path, progress=stop_in_partition_2, cancel=cancel
    )
    with pytest.raises(RestoreCancelled, match="restore-tui resume"):
        engine.run()
    journal = Journal.load(tmp_path / "journal.json")
    record = journal.record
    assert record.completed_stages == ("table", "partition-1")
    assert record.current_stage == "partition-2"
    # Cancellation is honoured after the fifth 64 KiB chunk, with a checkpoint right there.
    assert record.done_in_action == 5 * 64 * 1024
    assert not record.finished
    # Bytes past the checkpoint were not written yet.
    p2 = table.partition(2).start_lba * SECTOR
    reached = p2 + record.done_in_action
    assert target.read_bytes()[reached:] == before[reached:]
    assert journal.summary().describe().startswith("Resume restoring test.rtui onto")
    assert journal.summary().stage_number == 3

    notes: list[str] = []
    RestoreEngine(
        plan,
        archive,
        str(target),
        journal=journal,
        progress=lambda e: notes.append(e.message) if e.kind == "note" else None,
    ).run()
    assert target.read_bytes() == want
    assert any("reads back correctly" in n for n in notes)


def test_resume_rewrites_a_stage_whose_last_extent_did_not_stick(tmp_path: Path) -> None:
    disk, table = sample_source(seed=3)
    archive = MemoryArchive(disk, table)
    target = blank_target(tmp_path, len(disk))
    plan = full_disk_plan(archive, target, len(disk))
    want = expected_bytes(plan, archive, target.read_bytes())
    cancel = threading.Event()
    count = {"n": 0}

    def stop(event: ProgressEvent) -> None:
        if event.kind == "write" and event.stage_name == "partition-2":
            count["n"] += 1
            cancel.set() if count["n"] == 3 else None

    with pytest.raises(RestoreCancelled):
        engine_for(plan, archive, target, tmp_path, progress=stop, cancel=cancel).run()
    journal = Journal.load(tmp_path / "journal.json")
    assert journal.record.last_extent is not None
    lo, hi = journal.record.last_extent
    # As if the disk lost its write cache: the last recorded extent reads as before.
    with open(target, "r+b") as f:
        f.seek(lo)
        f.write(PATTERN * (hi - lo))
    notes: list[str] = []
    RestoreEngine(
        plan,
        archive,
        str(target),
        journal=journal,
        progress=lambda e: notes.append(e.message) if e.kind == "note" else None,
    ).run()
    assert any("did not read back the same" in n for n in notes)
    assert target.read_bytes() == want


def test_damaged_chunk_stops_before_writing_it_and_resume_finishes(tmp_path: Path) -> None:
    disk, table = sample_source(seed=4)
    archive = MemoryArchive(disk, table)
    target = blank_target(tmp_path, len(disk))
    before = target.read_bytes()
    plan = full_disk_plan(archive, target, len(disk))
    want = expected_bytes(plan, archive, before)
    bad = [c for c in archive.manifest.image(2).chunks if c.kind == "data"][6]
    archive.corrupt.add(bad.offset)

    with pytest.raises(DamagedBackup) as info:
        engine_for(plan, archive, target, tmp_path).run()
    message = str(info.value)
    assert f"partition 2 at byte {bad.offset}" in message
    assert "nothing from it was written" in message
    assert "restore-tui resume" in message
    now = target.read_bytes()
    # Everything before the damaged chunk is there, nothing from it on.
    p2 = table.partition(2).start_lba * SECTOR
    assert now[p2 : bad.offset] == disk[p2 : bad.offset]
    assert now[bad.offset :] == before[bad.offset :]
    journal = Journal.load(tmp_path / "journal.json")
    assert journal.record.current_stage == "partition-2"
    assert p2 + journal.record.done_in_action == bad.offset

    good = MemoryArchive(disk, table)  # a good copy of the same backup
    RestoreEngine(plan, good, str(target), journal=journal).run()
    assert target.read_bytes() == want


def test_hidden_sectors_patch_over_restored_data_verifies(tmp_path: Path) -> None:
    """One partition restored at a new place, its boot sector patched after the copy."""
    disk, table = sample_source(seed=5)
    archive = MemoryArchive(disk, table)
    size = len(disk)
    target = blank_target(tmp_path, size)
    src = table.partition(1)
    new_start = 6144
    new_table = PartitionTable(
        scheme="msdos",
        disk_size_lba=size // SECTOR,
        mbr_signature="0BADCAFE",
        partitions=(
            Partition(number=1, start_lba=new_start, length_lba=src.length_lba, mbr_type=7),
        ),
    )
    sector0 = mbr_sector0(new_table, bytes(440))
    patch = new_start.to_bytes(4, "little")
    stages = [
        Stage(
            name="table",
            title="Partition table",
            actions=(
                WriteBytes(offset=0,
                    length=SECTOR,
                    description="MBR",
                    data=sector0.hex(),
                ),
            ),
        ),
        Stage(
            name="partition-1",
            title="Partition 1",
            actions=(
                RestoreArea(offset=new_start * SECTOR,
                    length=src.length_lba * SECTOR,
                    description="copy",
                    area=1,
                    source_offset=src.start_lba * SECTOR,
                ),
                WriteBytes(offset=new_start * SECTOR + 0x1C,
                    length=4,
                    description="hidden sectors",
                    data=patch.hex(),
                ),
            ),
        ),
    ]
    plan = make_plan(archive, target, size, new_table, stages)
    before = target.read_bytes()
    engine_for(plan, archive, target, tmp_path).run()
    after = target.read_bytes()
    assert after == expected_bytes(plan, archive, before)
    at = new_start * SECTOR
    assert after[at + 0x1C : at + 0x20] == patch
    assert after[at : at + 0x1C] == disk[src.start_lba * SECTOR : src.start_lba * SECTOR + 0x1C]


def test_changed_table_or_size_is_refused_before_writing(tmp_path: Path) -> None:
    disk, table = sample_source(seed=6)
    archive = MemoryArchive(disk, table)
    target = blank_target(tmp_path, len(disk))
    plan = full_disk_plan(archive, target, len(disk))
    # Someone partitioned the disk after the plan was made.
    other = PartitionTable(
        scheme="msdos",
        disk_size_lba=len(disk) // SECTOR,
        mbr_signature="00000001",
        partitions=(Partition(number=1, start_lba=2048, length_lba=100, mbr_type=0x83),),
    )
    with open(target, "r+b") as f:
        f.write(mbr_sector0(other, bytes(440)))
    snapshot = target.read_bytes()
    with pytest.raises(TargetChanged, match="changed since the plan was made"):
        engine_for(plan, archive, target, tmp_path).run()
    assert target.read_bytes() == snapshot

    small = blank_target(tmp_path, len(disk) - 1024 * 1024, "small.img")
    with pytest.raises(TargetChanged, match="bytes"):
        engine_for(plan, archive, small, tmp_path).run()
    assert small.read_bytes() == PATTERN * (len(disk) - 1024 * 1024)


def test_other_backup_is_refused(tmp_path: Path) -> None:
    disk, table = sample_source(seed=7)
    target = blank_target(tmp_path, len(disk))
    plan = full_disk_plan(MemoryArchive(disk, table), target, len(disk))
    other_disk, _ = sample_source(seed=8)
    with pytest.raises(TargetChanged, match="not the backup this plan was made from"):
        engine_for(plan, MemoryArchive(other_disk, table), target, tmp_path).run()


def test_table_read_back_mismatch_stops(tmp_path: Path) -> None:
    disk, table = sample_source(seed=9)
    archive = MemoryArchive(disk, table)
    target = blank_target(tmp_path, len(disk))
    good = full_disk_plan(archive, target, len(disk))
    # A plan whose `after` claims a table different from the bytes it writes.
    lying = good.model_copy(
        update={"after": table.model_copy(update={"mbr_signature": "FFFFFFFF"})}
    )
    with pytest.raises(TableMismatch, match="disk signature"):
        engine_for(lying, archive, target, tmp_path).run()
    assert Journal.load(tmp_path / "journal.json").record.completed_stages == ()


def test_verification_catches_a_disk_that_changes_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk, table = sample_source(seed=10)
    archive = MemoryArchive(disk, table)
    target = blank_target(tmp_path, len(disk))
    plan = full_disk_plan(archive, target, len(disk))
    p1 = table.partition(1).start_lba * SECTOR
    original = writer_module.CheckedWriter._pwrite_all

    def flaky(self, offset: int, view: memoryview, *lent) -> None:  # type: ignore[no-untyped-def]
        if not offset <= p1 + 100 < offset + len(view):
            original(self, offset, view, *lent)
            return
        data = bytearray(view)
        data[p1 + 100 - offset] ^= 0xFF  # the medium stores one byte wrong
        original(self, offset, memoryview(bytes(data)))

    monkeypatch.setattr(writer_module.CheckedWriter, "_pwrite_all", flaky)
    with pytest.raises(VerifyFailed, match=f"byte {p1 + 100} "):
        engine_for(plan, archive, target, tmp_path).run()
    record = Journal.load(tmp_path / "journal.json").record
    assert "partition-1" not in record.completed_stages

    # Without verification the same flaw goes unnoticed: verification is what caught it.
    target2 = blank_target(tmp_path, len(disk), "t2.img")
    plan2 = full_disk_plan(archive, target2, len(disk))
    RestoreEngine(
        plan2, archive, str(target2), verify=False, journal_location=tmp_path / "j2.json"
    ).run()
    assert target2.read_bytes()[p1 + 100] == disk[p1 + 100] ^ 0xFF


def test_journal_of_another_plan_is_refused(tmp_path: Path) -> None:
    disk, table = sample_source(seed=11)
    archive = MemoryArchive(disk, table)
    target = blank_target(tmp_path, len(disk))
    plan = full_disk_plan(archive, target, len(disk))
    journal = Journal.create(
        plan,
        archive_path=tmp_path / "x.rtui",
        target_path=str(target),
        target_identity=plan.target.identity,
        location=tmp_path / "j.json",
    )
    other = plan.model_copy(update={"erases": "different"})
    with pytest.raises(TargetChanged, match="different plan"):
        RestoreEngine(other, archive, str(target), journal=journal).run()


def test_finished_table_stage_expects_the_plans_table_on_resume(tmp_path: Path) -> None:
    disk, table = sample_source(seed=12)
    archive = MemoryArchive(disk, table)
    target = blank_target(tmp_path, len(disk))
    plan = full_disk_plan(archive, target, len(disk))
    cancel = threading.Event()

    def stop(event: ProgressEvent) -> None:
        if event.kind == "stage-done" and event.stage_name == "table":
            cancel.set()

    with pytest.raises(RestoreCancelled):
        engine_for(plan, archive, target, tmp_path, progress=stop, cancel=cancel).run()
    journal = Journal.load(tmp_path / "journal.json")
    assert journal.record.completed_stages == ("table",)
    # The plan's `before` fingerprint no longer matches (we wrote the table), yet resume goes on.
    RestoreEngine(plan, archive, str(target), journal=journal).run()
    assert target.read_bytes() == expected_bytes(plan, archive, PATTERN * len(disk))

    # But if someone then changes the table, a resume of the finished-table plan refuses.
    journal2 = Journal.load(tmp_path / "journal.json")
    journal2.save(finished=False, completed_stages=("table",))
    with open(target, "r+b") as f:
        f.seek(440)
        f.write(b"\x01\x02\x03\x04")
    with pytest.raises(TargetChanged, match="changed since restore-tui wrote it"):
        RestoreEngine(plan, archive, str(target), journal=journal2).run()


def test_a_disk_with_a_damaged_table_can_be_restored_onto(tmp_path: Path) -> None:
    """A broken table is the usual reason to restore: the plan names it as the probe does."""
    import hashlib

    from layout.table_io import TableError

    disk, table = sample_source(seed=13)
    archive = MemoryArchive(disk, table)
    target = blank_target(tmp_path, len(disk))
    broken = bytearray(PATTERN * SECTOR)
    broken[446:462] = bytes([0x33, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") * 2
    broken[510:512] = b"\x55\xaa"
    with open(target, "r+b") as f:
        f.write(broken)
    with pytest.raises(TableError) as info:
        read_table(lambda o, n: bytes(broken) if o == 0 else b"", len(disk))
    fingerprint = hashlib.sha256(f"damaged table: {info.value}".encode()).hexdigest()
    plan = full_disk_plan(archive, target, len(disk))
    target_ref = plan.target.model_copy(update={"table_fingerprint": fingerprint})
    plan = plan.model_copy(update={"target": target_ref})
    before = target.read_bytes()
    engine_for(plan, archive, target, tmp_path).run()
    assert target.read_bytes() == expected_bytes(plan, archive, before)


def test_resume_onto_a_disk_with_another_serial_is_refused(tmp_path: Path) -> None:
    from layout.models import DiskIdentity

    disk, table = sample_source(seed=14)
    archive = MemoryArchive(disk, table)
    target = blank_target(tmp_path, len(disk))
    plan = full_disk_plan(archive, target, len(disk))
    journal = Journal.create(
        plan,
        archive_path=archive.path,
        target_path=str(target),
        target_identity=DiskIdentity(size_bytes=len(disk), serial="S1", model="Disk A"),
        location=tmp_path / "j.json",
    )
    other = DiskIdentity(size_bytes=len(disk), serial="S2", model="Disk A")
    with pytest.raises(TargetChanged, match="serial number is S2"):
        RestoreEngine(plan, archive, str(target), journal=journal, target_identity=other).run()
    assert target.read_bytes() == PATTERN * len(disk)

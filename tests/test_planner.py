"""Planner tests on synthetic manifests and probed disks: no device is opened.

Plans are applied to a sparse in-memory disk and the result parsed back with
``layout.table_io``, so the table bytes a plan writes are checked, not just its shape.
"""

from __future__ import annotations

import struct

import pytest
from planner_fixtures import (
    BOOT_CODE,
    DIGEST,
    GiB,
    MiB,
    SparseDisk,
    disk_from_table,
    ebr_chain,
    geometry,
    gpt_table,
    make_manifest,
    mbr_with_logicals,
    probed,
    probed_from_disk,
)

from layout.models import FreeRegion, Partition, PartitionTable
from layout.plan import Action, Plan, RestoreArea, Stage, ZeroRange
from layout.validate import check_plan, validate_plan
from restore_tui.planner import PlanError, plan_full_disk, plan_one_partition

ARCHIVE = "/media/usb/backup.rtar"


def actions(plan: Plan, stage: str) -> list[Action]:
    return list(next(s for s in plan.stages if s.name == stage).actions)


# --- full disk ----------------------------------------------------------------


def test_full_disk_mbr_with_logicals_onto_larger_blank_disk() -> None:
    manifest = make_manifest(mbr_with_logicals())
    target = probed(None, 4 * GiB)
    plan = plan_full_disk(manifest, DIGEST, ARCHIVE, target)

    assert [s.name for s in plan.stages] == [
        "table", "reserved", "system", "partition-5", "partition-6"
    ]
    table = actions(plan, "table")
    assert table[0].kind == "write-bytes" and table[0].offset == 0
    assert bytes.fromhex(table[0].data or "") == manifest.sector0  # the source table exactly
    assert table[1].kind == "restore-area" and table[1].area == "track0"
    assert (table[1].offset, table[1].stop) == (512, 2048 * 512)
    ebr_writes = [a for a in table if a.kind == "write-bytes" and a.offset > 0]
    assert [(a.offset // 512, a.data) for a in ebr_writes] == [
        (lba, data.hex()) for lba, data in ebr_chain(manifest.table)
    ]
    # The end of the larger disk is unallocated: a stale GPT backup there is wiped.
    zero = [a for a in table if a.kind == "zero"]
    assert [(a.offset, a.stop) for a in zero] == [(4 * GiB - 33 * 512, 4 * GiB)]

    # Exact geometry: every partition at its source LBAs, restored into its own extent.
    for p in manifest.table.data_partitions:
        (restore,) = [
            a for s in plan.stages for a in s.actions
            if a.kind == "restore-area" and a.area == p.number
        ]
        assert (restore.offset, restore.length) == (p.start_lba * 512, p.length_lba * 512)
        assert restore.source_offset == restore.offset

    disk = SparseDisk(4 * GiB)
    disk.apply_table(plan)
    written = disk.table()
    assert written is not None and written.mbr_signature == "7490A9A7"
    assert geometry(written) == geometry(manifest.table)
    assert plan.after.disk_size_lba == 4 * GiB // 512
    assert any("2.0 GiB larger" in w.text for w in plan.warnings)
    assert plan.erases.startswith(
        "Everything on Samsung SSD 860 EVO 1TB · 4.0 GiB · serial S3Z9NB0K812345X"
    )
    assert plan.target.name == "Samsung SSD 860 EVO 1TB · 4.0 GiB · serial S3Z9NB0K812345X"
    assert plan.target.table_fingerprint == target.table_fingerprint


def test_full_disk_gpt_onto_larger_disk_moves_backup_and_last_usable() -> None:
    manifest = make_manifest(gpt_table())
    size = 3 * GiB
    target = probed(mbr_with_logicals(), size)  # an old MBR layout is replaced
    plan = plan_full_disk(manifest, DIGEST, ARCHIVE, target)
    size_lba = size // 512

    table = actions(plan, "table")
    header = table[-1]
    assert (header.offset, header.length) == ((size_lba - 1) * 512, 512)  # target's last sector
    assert table[-2].offset == (size_lba - 33) * 512
    assert plan.after.gpt_last_usable_lba == size_lba - 34
    # Protective MBR keeps the boot code and covers the whole target.
    sector0 = bytes.fromhex(table[0].data or "")
    assert sector0[:440] == BOOT_CODE
    assert struct.unpack_from("<I", sector0, 446 + 12)[0] == size_lba - 1
    # Track 0 after the primary entries is restored up to the first partition.
    track0 = [a for a in table if a.kind == "restore-area"]
    assert [(a.offset, a.stop) for a in track0] == [(34 * 512, 2048 * 512)]
    assert [s.name for s in plan.stages] == ["table", "reserved", "system", "partition-4"]
    assert [a.area for a in actions(plan, "reserved")] == [1, 2]

    disk = SparseDisk(size)
    disk.apply_table(plan)
    written = disk.table()
    assert written is not None
    assert written.gpt_disk_guid == manifest.table.gpt_disk_guid  # GUIDs kept
    assert geometry(written) == geometry(manifest.table)
    assert written.gpt_last_usable_lba == size_lba - 34
    assert "its 4 partitions" in plan.erases and "replaced" in plan.erases


def test_full_disk_onto_same_size_disk_reproduces_the_source_sector0() -> None:
    manifest = make_manifest(gpt_table())
    plan = plan_full_disk(manifest, DIGEST, ARCHIVE, probed(None, GiB))
    assert bytes.fromhex(actions(plan, "table")[0].data or "") == manifest.sector0
    assert not [w for w in plan.warnings if w.code in ("target-larger", "target-smaller")]


def test_new_ids_are_fresh_deterministic_and_explained() -> None:
    manifest = make_manifest(gpt_table())
    target = probed(None, 2 * GiB)
    one = plan_full_disk(manifest, DIGEST, ARCHIVE, target, new_ids=True, id_seed=7)
    two = plan_full_disk(manifest, DIGEST, ARCHIVE, target, new_ids=True, id_seed=7)
    assert one == two
    assert one.new_ids
    assert one.after.gpt_disk_guid != manifest.table.gpt_disk_guid
    source_guids = {p.gpt_guid for p in manifest.table.partitions}
    new_guids = {p.gpt_guid for p in one.after.partitions}
    assert not source_guids & new_guids and len(new_guids) == 4
    assert any("PARTUUID" in w.text for w in one.warnings)
    disk = SparseDisk(2 * GiB)
    disk.apply_table(one)
    assert disk.table() is not None
    assert disk.table().gpt_disk_guid == one.after.gpt_disk_guid  # type: ignore[union-attr]

    mbr = make_manifest(mbr_with_logicals())
    fresh = plan_full_disk(mbr, DIGEST, ARCHIVE, target, new_ids=True, id_seed=3)
    assert fresh.after.mbr_signature not in (None, "7490A9A7", "00000000")
    sector0 = bytes.fromhex(actions(fresh, "table")[0].data or "")
    assert sector0[:440] == BOOT_CODE
    assert f"{struct.unpack_from('<I', sector0, 440)[0]:08X}" == fresh.after.mbr_signature
    assert sector0[446:] == mbr.sector0[446:]
    assert any("drive letters" in w.text for w in fresh.warnings)


def test_identity_collision_with_another_attached_disk_is_warned() -> None:
    manifest = make_manifest(mbr_with_logicals())
    original = probed(mbr_with_logicals(), 2 * GiB, device="/dev/sda", model="WDC WD5000AAKX")
    target = probed(None, 4 * GiB)
    plan = plan_full_disk(manifest, DIGEST, ARCHIVE, target, other_disks=[original, target])
    (warning,) = [w.text for w in plan.warnings if w.code == "shared-disk-identity"]
    assert "7490A9A7" in warning and "/dev/sda" in warning and "--new-ids" in warning
    # The disk itself is not "another" disk.
    again = plan_full_disk(manifest, DIGEST, ARCHIVE, original, other_disks=[original])
    assert not [w for w in again.warnings if w.code == "shared-disk-identity"]


def test_full_disk_refusals_say_why() -> None:
    manifest = make_manifest(mbr_with_logicals())
    with pytest.raises(PlanError, match="too small") as exc:
        plan_full_disk(manifest, DIGEST, ARCHIVE, probed(None, GiB))
    # The extended container ends at byte 1759051776: 1 GiB is 685309952 bytes short.
    assert "653.6 MiB too little" in str(exc.value)
    with pytest.raises(PlanError, match="4096-byte sectors"):
        plan_full_disk(manifest, DIGEST, ARCHIVE, probed(None, 8 * GiB, sector_size=4096))
    # GPT needs room for the backup table after the last partition.
    gpt = make_manifest(gpt_table())
    last_stop = max(p.stop_lba for p in gpt.table.partitions)
    with pytest.raises(PlanError, match="too small"):
        plan_full_disk(gpt, DIGEST, ARCHIVE, probed(None, (last_stop + 32) * 512))
    assert plan_full_disk(gpt, DIGEST, ARCHIVE, probed(None, (last_stop + 33) * 512))


def test_partition_missing_from_backup_is_warned_and_not_restored() -> None:
    manifest = make_manifest(mbr_with_logicals(), stored={1, 2, 3, 5})
    plan = plan_full_disk(manifest, DIGEST, ARCHIVE, probed(None, 2 * GiB))
    assert "partition-6" not in [s.name for s in plan.stages]
    assert any(w.text.startswith("Partition 6 was not in the backup") for w in plan.warnings)


# --- one partition ------------------------------------------------------------


def small_mbr_target() -> PartitionTable:
    return PartitionTable(
        scheme="msdos", disk_size_lba=2 * GiB // 512, mbr_signature="0BADF00D",
        partitions=(
            Partition(number=1, start_lba=2048, length_lba=409600, mbr_type=0x83,
                      filesystem="ext4"),
        ),
    )


def test_one_partition_into_mbr_primary_slot_patches_hidden_sectors() -> None:
    manifest = make_manifest(mbr_with_logicals())
    disk = disk_from_table(small_mbr_target(), 2 * GiB)
    target = probed_from_disk(disk)
    before = {lba: bytes(data) for lba, data in disk.sectors.items()}
    region = target.free[0]
    plan = plan_one_partition(manifest, DIGEST, ARCHIVE, target, 5, region)

    (entry,) = actions(plan, "table")
    assert (entry.offset, entry.length) == (446 + 16, 16)  # slot 2, nothing else in sector 0
    new = plan.after.partition(2)
    assert new.start_lba == 411648 and new.start_lba % 2048 == 0
    assert new.length_lba == 409600 and new.filesystem == "ntfs" and new.label == "data"
    data, patch, backup_patch = actions(plan, "partition-2")
    assert data.kind == "restore-area" and data.area == 5
    assert data.source_offset == 1437696 * 512 and data.offset == 411648 * 512
    assert patch.offset == 411648 * 512 + 0x1C and bytes.fromhex(patch.data or "") == struct.pack(
        "<I", 411648
    )
    assert backup_patch.offset == new.end_lba * 512 + 0x1C
    assert plan.before == target.table
    assert plan.erases.startswith("Nothing: the new partition goes into unallocated space")

    disk.apply_table(plan)
    assert geometry(disk.table()) == geometry(plan.after)
    # Sector 0 changed only in the 16 bytes of the new entry.
    changed = [i for i in range(512) if disk.sectors[0][i] != before[0][i]]
    assert changed and min(changed) >= 462 and max(changed) < 478


def test_one_partition_into_extended_adds_an_ebr_and_a_link() -> None:
    source = mbr_with_logicals()
    manifest = make_manifest(source)
    target_table = source.model_copy(update={"partitions": source.partitions[:4]})
    disk = disk_from_table(target_table, 2 * GiB)
    target = probed_from_disk(disk)
    inside = [r for r in target.free if r.inside_extended]
    plan = plan_one_partition(
        manifest, DIGEST, ARCHIVE, target, 6, inside[0], ebr_lbas=disk.ebr_lbas()
    )
    new_ebr, link = actions(plan, "table")
    new = plan.after.partition(6)
    assert new.kind == "logical"
    assert new_ebr.offset // 512 == new.start_lba - 2048 and new_ebr.length == 512
    assert (link.offset, link.length) == (1435648 * 512 + 462, 16)
    first_ebr_before = disk.read(1435648 * 512, 512)
    disk.apply_table(plan)
    assert geometry(disk.table()) == geometry(plan.after)
    assert disk.ebr_lbas() == [1435648, new.start_lba - 2048]
    first_ebr_after = disk.read(1435648 * 512, 512)
    assert first_ebr_after[:462] == first_ebr_before[:462]
    assert first_ebr_after[478:] == first_ebr_before[478:]
    # Same start as on the source: the boot sector needs no patch.
    assert [a.kind for a in actions(plan, "partition-6")] == ["restore-area"]


def test_one_partition_into_an_empty_extended_container() -> None:
    source = mbr_with_logicals()
    manifest = make_manifest(source)
    target_table = source.model_copy(update={"partitions": source.partitions[:3]})
    disk = disk_from_table(target_table, 2 * GiB)
    target = probed_from_disk(disk)
    (inside,) = [r for r in target.free if r.inside_extended]
    plan = plan_one_partition(manifest, DIGEST, ARCHIVE, target, 6, inside)
    (ebr,) = actions(plan, "table")
    assert ebr.offset == 1435648 * 512
    disk.apply_table(plan)
    assert geometry(disk.table()) == geometry(plan.after)
    assert plan.after.partition(5).start_lba == inside.start_lba


def test_one_partition_into_gpt_writes_entries_and_headers_only() -> None:
    source = gpt_table()
    manifest = make_manifest(source)
    target_table = source.model_copy(update={"partitions": source.partitions[:2]})
    disk = disk_from_table(target_table, GiB)
    target = probed_from_disk(disk)
    plan = plan_one_partition(manifest, DIGEST, ARCHIVE, target, 4, target.free[0].start_lba)
    table = actions(plan, "table")
    assert [(a.offset, a.length) for a in table] == [
        (1024 + 2 * 128, 128),
        (512, 512),
        ((GiB // 512 - 33) * 512 + 2 * 128, 128),
        (GiB - 512, 512),
    ]
    new = plan.after.partition(3)
    assert new.gpt_guid == source.partition(4).gpt_guid  # kept: no other disk has it
    disk.apply_table(plan)
    written = disk.table()  # parses only when both CRCs are right
    assert geometry(written) == geometry(plan.after)
    assert any("hidden sectors" in w.text for w in plan.warnings)


def test_one_partition_gpt_guid_already_on_disk_gets_a_fresh_one() -> None:
    source = gpt_table()
    manifest = make_manifest(source)
    disk = disk_from_table(source, 2 * GiB)
    target = probed_from_disk(disk)
    plan = plan_one_partition(manifest, DIGEST, ARCHIVE, target, 4, target.free[-1], id_seed=1)
    new = plan.after.partition(5)
    assert new.gpt_guid != source.partition(4).gpt_guid
    assert any("already used" in w.text for w in plan.warnings)


def test_one_partition_refusals() -> None:
    manifest = make_manifest(mbr_with_logicals())
    disk = disk_from_table(small_mbr_target(), 2 * GiB)
    target = probed_from_disk(disk)
    with pytest.raises(PlanError, match="has no partition 9; it has 1, 2, 5, 6"):
        plan_one_partition(manifest, DIGEST, ARCHIVE, target, 9, target.free[0])
    with pytest.raises(PlanError, match="extended container"):
        plan_one_partition(manifest, DIGEST, ARCHIVE, target, 3, target.free[0])
    with pytest.raises(PlanError, match="not in free space"):
        plan_one_partition(manifest, DIGEST, ARCHIVE, target, 5, 4096)
    with pytest.raises(PlanError, match="not free space"):
        plan_one_partition(
            manifest, DIGEST, ARCHIVE, target, 5, FreeRegion(start_lba=4096, length_lba=8192)
        )
    small = probed_from_disk(disk_from_table(small_mbr_target(), 300 * MiB))
    with pytest.raises(PlanError, match="does not fit") as exc:
        plan_one_partition(manifest, DIGEST, ARCHIVE, small, 2, small.free[0])
    assert "too little" in str(exc.value)
    with pytest.raises(PlanError, match="4096-byte sectors"):
        plan_one_partition(
            manifest, DIGEST, ARCHIVE, probed(None, GiB, sector_size=4096), 5, 256
        )
    # A disk with no table is no longer refused: it gets a new one (tested on real images
    # in test_one_partition_blank.py).
    fresh = plan_one_partition(manifest, DIGEST, ARCHIVE, probed(None, GiB), 5, 2048)
    assert fresh.before is None and "new-table" in [w.code for w in fresh.warnings]
    full = PartitionTable(
        scheme="msdos", disk_size_lba=4 * GiB // 512, mbr_signature="12345678",
        partitions=tuple(
            Partition(number=n, start_lba=2048 + (n - 1) * 204800, length_lba=204800,
                      mbr_type=0x83)
            for n in range(1, 5)
        ),
    )
    crowded = probed_from_disk(disk_from_table(full, 4 * GiB))
    with pytest.raises(PlanError, match="no free MBR slot"):
        plan_one_partition(manifest, DIGEST, ARCHIVE, crowded, 6, crowded.free[0])


def test_logical_partition_needs_the_ebr_chain() -> None:
    source = mbr_with_logicals()
    manifest = make_manifest(source)
    target_table = source.model_copy(update={"partitions": source.partitions[:4]})
    disk = disk_from_table(target_table, 2 * GiB)
    target = probed(disk.table(), disk.size, ebr_lbas=disk.ebr_lbas())
    inside = next(r for r in target.free if r.inside_extended)
    with pytest.raises(PlanError, match="chain of extended boot records"):
        plan_one_partition(manifest, DIGEST, ARCHIVE, target, 6, inside)


# --- validation and JSON --------------------------------------------------------


def test_validate_refuses_overlaps_outside_and_gpt_areas() -> None:
    manifest = make_manifest(gpt_table())
    plan = plan_full_disk(manifest, DIGEST, ARCHIVE, probed(None, 2 * GiB))
    size = 2 * GiB
    assert validate_plan(plan, size) == []
    assert validate_plan(plan, GiB)  # the disk shrank under the plan

    def with_extra(action: Action) -> Plan:
        extra = Stage(name="extra", title="extra", actions=(action,))
        return plan.model_copy(update={"stages": (*plan.stages, extra)})

    overlap = with_extra(ZeroRange(offset=1048576, length=512, description="x"))
    assert any("overlaps" in p for p in validate_plan(overlap, size))
    outside = with_extra(ZeroRange(offset=size - 256, length=512, description="x"))
    assert any("past the end" in p for p in validate_plan(outside, size))
    backup = with_extra(ZeroRange(offset=size - 4096, length=512, description="x"))
    assert any("backup GPT" in p for p in validate_plan(backup, size))
    stray = with_extra(
        RestoreArea(area=4, offset=size - 100 * MiB, length=MiB,
               source_offset=0, description="x")
    )
    assert any("outside every partition" in p for p in validate_plan(stray, size))
    with pytest.raises(PlanError, match="not safe"):
        check_plan(overlap, size)


def test_validate_one_partition_never_touches_kept_partitions() -> None:
    manifest = make_manifest(mbr_with_logicals())
    target = probed_from_disk(disk_from_table(small_mbr_target(), 2 * GiB))
    plan = plan_one_partition(manifest, DIGEST, ARCHIVE, target, 5, target.free[0])
    bad = Stage(
        name="extra", title="x",
        actions=(ZeroRange(offset=4096 * 512, length=512, description="x"),),
    )
    problems = validate_plan(plan.model_copy(update={"stages": (*plan.stages, bad)}), 2 * GiB)
    assert any("partition 1, which must stay untouched" in p for p in problems)


def test_plan_json_round_trip_has_the_promised_fields() -> None:
    import json

    manifest = make_manifest(mbr_with_logicals())
    plan = plan_full_disk(manifest, DIGEST, ARCHIVE, probed(None, 4 * GiB))
    text = plan.to_json()
    assert Plan.from_json(text) == plan
    assert Plan.from_json(text).digest() == plan.digest()
    data = json.loads(text)
    assert data["target"]["device"] == "/dev/sdb"
    for stage in data["stages"]:
        assert stage["name"] and stage["actions"]
        for action in stage["actions"]:
            assert {"kind", "offset", "length"} <= set(action)


def _without(table: PartitionTable, number: int) -> PartitionTable:
    kept = tuple(p for p in table.partitions if p.number != number)
    return table.model_copy(update={"partitions": kept})


def test_system_partition_back_in_its_own_place_needs_no_boot_repair() -> None:
    """C: deleted, then restored to exactly its sectors on the disk it came from: whatever
    pointed to it still does, so no warning (it was false there)."""
    table = mbr_with_logicals()
    manifest = make_manifest(table)
    target = probed_from_disk(disk_from_table(_without(table, 2), 2 * GiB))
    plan = plan_one_partition(manifest, DIGEST, ARCHIVE, target, 2, 206848)
    new = plan.after.partition(2)
    assert (new.start_lba, new.length_lba) == (206848, 1228800)
    assert "system-partition-alone" not in [w.code for w in plan.warnings]


def test_system_partition_elsewhere_gives_the_repair_steps() -> None:
    manifest = make_manifest(mbr_with_logicals())
    target = probed_from_disk(disk_from_table(small_mbr_target(), 2 * GiB))
    plan = plan_one_partition(manifest, DIGEST, ARCHIVE, target, 2, target.free[0])
    (said,) = [w for w in plan.warnings if w.code == "system-partition-alone"]
    assert "Repair your computer, then Startup Repair" in said.text
    assert "bcdboot C:\\Windows" in said.text


def test_done_screen_next_steps_for_a_restored_system_partition() -> None:
    """C: restored on its own is where the computer starts, not 'a new drive'."""
    from types import SimpleNamespace

    from restore_tui.screens.end import (
        ONE_PARTITION_NEXT_STEPS,
        SYSTEM_PARTITION_NEXT_STEPS,
        default_next_steps,
    )

    manifest = make_manifest(mbr_with_logicals())
    target = probed_from_disk(disk_from_table(small_mbr_target(), 2 * GiB))
    for number, wanted in ((2, SYSTEM_PARTITION_NEXT_STEPS), (5, ONE_PARTITION_NEXT_STEPS)):
        plan = plan_one_partition(manifest, DIGEST, ARCHIVE, target, number, target.free[0])
        job = SimpleNamespace(plan=plan, archive=SimpleNamespace(manifest=manifest))
        assert default_next_steps(job) == wanted  # type: ignore[arg-type]


def test_a_shared_filesystem_uuid_says_what_it_means_and_how_to_change_it() -> None:
    source = mbr_with_logicals()
    data = source.partition(5).model_copy(update={"fs_uuid": "1A2B3C4D5E6F7A8B"})
    source = source.model_copy(
        update={"partitions": tuple(data if p.number == 5 else p for p in source.partitions)}
    )
    manifest = make_manifest(source)
    original = probed(source, 2 * GiB, device="/dev/sda", model="WDC WD5000AAKX")
    target = probed_from_disk(disk_from_table(small_mbr_target(), 2 * GiB))
    plan = plan_one_partition(
        manifest, DIGEST, ARCHIVE, target, 5, target.free[0], other_disks=[original]
    )
    (said,) = [w for w in plan.warnings if w.code == "shared-fs-uuid"]
    assert said.params["partition"] == 5 and "WDC WD5000AAKX" in str(said.params["other"])
    assert "Windows does not mind" in said.text and "ntfslabel --new-serial" in said.text

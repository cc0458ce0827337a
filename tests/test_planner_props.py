"""Property tests of planning over random layouts and free regions.

Every plan the planner produces validates and, applied to a sparse disk, parses
back to its own ``after`` table with every kept partition unchanged; plans made
unsafe on purpose (overlapping, past the disk's end) are always refused.
"""

from __future__ import annotations

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from planner_fixtures import (
    DIGEST,
    MiB,
    SparseDisk,
    disk_from_table,
    geometry,
    make_manifest,
    probed_from_disk,
)

from layout.gaps import align_up
from layout.models import Partition, PartitionTable
from layout.plan import Action, Plan, Stage
from layout.validate import validate_plan
from restore_tui.planner import PlanError, plan_full_disk, plan_one_partition

MIB_LBA = MiB // 512
SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
FILESYSTEMS = st.sampled_from(["ntfs", "vfat", "ext4", None])


@st.composite
def mbr_tables(draw: st.DrawFn, *, logicals: bool = True) -> PartitionTable:
    """Primaries with random gaps, and maybe an extended container with logicals."""
    cursor = draw(st.integers(1, 4)) * MIB_LBA
    parts: list[Partition] = []
    primaries = draw(st.integers(0, 3))
    for number in range(1, primaries + 1):
        cursor += draw(st.sampled_from([0, 1, 63, MIB_LBA, 7 * MIB_LBA]))
        length = draw(st.integers(1, 64 * MIB_LBA))
        parts.append(Partition(number=number, start_lba=cursor, length_lba=length,
                               mbr_type=0x07, filesystem=draw(FILESYSTEMS)))
        cursor += length
    if logicals and draw(st.booleans()):
        ext_start = align_up(cursor + draw(st.integers(0, 3)) * MIB_LBA, MIB_LBA)
        inner = ext_start
        inner_parts: list[Partition] = []
        for i in range(draw(st.integers(0, 3))):
            # The first EBR is at the container's start; later ones 1 MiB before their logical.
            inner += MIB_LBA * draw(st.integers(1, 3)) if i == 0 else MIB_LBA + draw(
                st.integers(0, 3)) * MIB_LBA
            length = draw(st.integers(1, 32 * MIB_LBA))
            inner_parts.append(Partition(number=5 + i, kind="logical", start_lba=inner,
                                         length_lba=length, mbr_type=0x83))
            inner += length
        ext_len = inner - ext_start + draw(st.integers(0, 64)) * MIB_LBA + 1
        parts.append(Partition(number=primaries + 1, kind="extended", start_lba=ext_start,
                               length_lba=ext_len, mbr_type=0x0F))
        parts.extend(inner_parts)
        cursor = ext_start + ext_len
    disk = cursor + draw(st.integers(0, 128)) * MIB_LBA + draw(st.integers(0, 4095)) + 64
    return PartitionTable(scheme="msdos", disk_size_lba=disk, mbr_signature="CAFEF00D",
                          partitions=tuple(parts))


@st.composite
def gpt_tables(draw: st.DrawFn) -> PartitionTable:
    cursor = 34 + draw(st.sampled_from([0, 2014, 2014 + MIB_LBA]))
    parts: list[Partition] = []
    slots = draw(st.lists(st.integers(1, 8), max_size=5, unique=True))
    for i, slot in enumerate(slots):
        cursor += draw(st.sampled_from([0, 1, MIB_LBA, 5 * MIB_LBA]))
        length = draw(st.integers(1, 64 * MIB_LBA))
        parts.append(Partition(
            number=slot, start_lba=cursor, length_lba=length,
            gpt_type="EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
            gpt_guid=f"{i + 1:08X}-0000-4000-8000-{slot:012X}", gpt_name=f"part{slot}",
            filesystem=draw(FILESYSTEMS),
        ))
        cursor += length
    disk = max(cursor + 33, 2 * 34) + draw(st.integers(0, 128)) * MIB_LBA + draw(
        st.integers(0, 4095)
    )
    return PartitionTable(scheme="gpt", disk_size_lba=disk,
                          gpt_disk_guid="0A0B0C0D-0000-4000-8000-000000000001",
                          gpt_first_usable_lba=34, gpt_last_usable_lba=disk - 34,
                          gpt_entry_count=128, gpt_entry_size=128, partitions=tuple(parts))


@st.composite
def sources(draw: st.DrawFn) -> PartitionTable:
    """A backed-up disk with one data partition of random size and start."""
    length = draw(st.integers(1, 48 * MIB_LBA))
    start = draw(st.sampled_from([63, 2048, 4096 + 7]))
    fs = draw(FILESYSTEMS)
    disk = start + length + 64
    if draw(st.booleans()):
        return PartitionTable(
            scheme="msdos", disk_size_lba=disk, mbr_signature="0000BEEF",
            partitions=(Partition(number=1, start_lba=start, length_lba=length,
                                  mbr_type=0x07, filesystem=fs),),
        )
    return PartitionTable(
        scheme="gpt", disk_size_lba=disk, gpt_disk_guid="0A0B0C0D-0000-4000-8000-0000000000FF",
        gpt_first_usable_lba=34, gpt_last_usable_lba=disk - 34,
        partitions=(Partition(number=3, start_lba=start, length_lba=length,
                              gpt_type="0FC63DAF-8483-4772-8E79-3D69D8477DE4",
                              gpt_guid="99999999-0000-4000-8000-000000000003",
                              filesystem=fs),),
    )


def applied(plan: Plan, disk: SparseDisk) -> PartitionTable | None:
    disk.apply_table(plan)
    return disk.table()


@SETTINGS
@given(
    target_table=st.one_of(mbr_tables(), gpt_tables()),
    source=sources(),
    choice=st.integers(0, 10),
    offset=st.integers(0, 3000),
)
def test_one_partition_plans_validate_and_keep_every_other_partition(
    target_table: PartitionTable, source: PartitionTable, choice: int, offset: int
) -> None:
    size = target_table.disk_size_lba * 512
    disk = disk_from_table(target_table, size)
    target = probed_from_disk(disk)
    manifest = make_manifest(source)
    number = source.partitions[0].number
    region = target.free[choice % len(target.free)] if target.free else None
    # Either a whole free region, or a sector somewhere (often not free at all).
    spot: object = region if region is not None and choice % 2 == 0 else (
        (region.start_lba + offset) if region is not None else offset
    )
    try:
        plan = plan_one_partition(
            manifest, DIGEST, "/b", target, number, spot,  # type: ignore[arg-type]
            ebr_lbas=disk.ebr_lbas(), id_seed=1,
        )
    except PlanError:
        event("refused")
        if isinstance(spot, type(region)) and region is not None:
            start = align_up(region.start_lba, MIB_LBA)
            fits = start + source.partitions[0].length_lba <= region.start_lba + (
                region.length_lba)
            slot_free = target_table.scheme == "gpt" or region.inside_extended or sum(
                1 for p in target_table.partitions if p.kind != "logical") < 4
            # An MBR without entries reads as a blank disk: it gets a new table instead.
            assert not (fits and slot_free), "a partition that fits was refused"
        return
    event(f"planned into {plan.after.scheme}" + (" logical" if any(
        p.kind == "logical" and p not in (target.table.partitions if target.table else ())
        for p in plan.after.partitions) else ""))
    assert validate_plan(plan, size) == []
    assert plan.before == target.table
    existing = target.table.partitions if target.table is not None else ()
    new = [p for p in plan.after.partitions if p not in existing]
    assert len(new) == 1 and new[0].start_lba % MIB_LBA == 0
    assert new[0].length_lba == source.partitions[0].length_lba
    written = applied(plan, disk)
    assert geometry(written) == geometry(plan.after)
    assert written is not None
    kept = {(p.number, p.start_lba, p.length_lba) for p in written.partitions}
    assert {(p.number, p.start_lba, p.length_lba) for p in target_table.partitions} <= kept


@SETTINGS
@given(source=st.one_of(mbr_tables(), gpt_tables()), extra=st.integers(-200, 4000))
def test_full_disk_plans_fit_exactly_or_are_refused(source: PartitionTable, extra: int) -> None:
    assume(any(p.kind != "extended" for p in source.partitions))
    manifest = make_manifest(source)
    size_lba = source.disk_size_lba + extra
    stop = max(p.stop_lba for p in source.partitions)
    need = stop + (33 if source.scheme == "gpt" else 0)
    disk = SparseDisk(size_lba * 512)
    target = probed_from_disk(disk)
    try:
        plan = plan_full_disk(manifest, DIGEST, "/b", target)
    except PlanError as exc:
        assert size_lba < need, f"refused although it fits: {exc}"
        assert "too small" in str(exc)
        return
    assert size_lba >= need
    assert validate_plan(plan, size_lba * 512) == []
    written = applied(plan, disk)
    assert geometry(written) == geometry(source)
    if source.scheme == "gpt":
        assert written is not None and written.gpt_last_usable_lba == size_lba - 34


@SETTINGS
@given(
    source=st.one_of(mbr_tables(), gpt_tables()),
    pick=st.integers(0, 1000),
    past=st.integers(1, 4096),
    mutation=st.sampled_from(["duplicate", "past-end"]),
)
def test_overlapping_or_out_of_disk_plans_are_refused(
    source: PartitionTable, pick: int, past: int, mutation: str
) -> None:
    assume(any(p.kind != "extended" for p in source.partitions))
    manifest = make_manifest(source)
    size = source.disk_size_lba * 512
    plan = plan_full_disk(manifest, DIGEST, "/b", probed_from_disk(SparseDisk(size)))
    every = [a for s in plan.stages for a in s.actions]
    action = every[pick % len(every)]
    if mutation == "duplicate":
        bad: Action = action
    else:
        shift = min(past, action.length)
        bad = action.model_copy(update={"offset": (size // 512) * 512 - action.length + shift})
    broken = plan.model_copy(update={
        "stages": (*plan.stages, Stage(name="extra", title="extra", actions=(bad,)))
    })
    problems = validate_plan(broken, size)
    assert problems
    if mutation == "past-end":
        assert any("past the end" in p for p in problems)
    else:
        assert any("overlaps" in p for p in problems)

"""Free-region geometry: worked examples and hypothesis checks against a per-sector oracle.

The oracle marks every sector taken or free one by one, so the interval code in
``layout.gaps`` is checked against a method that cannot share its mistakes.
"""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layout.gaps import (
    MiB,
    align_down,
    align_up,
    free_regions,
    gpt_reserved_sectors,
    largest_region,
    region_containing,
)
from layout.models import FreeRegion, Partition, PartitionTable

GiB = 1024 * MiB


def guid() -> str:
    return str(uuid.uuid4()).upper()


def test_align_helpers() -> None:
    assert align_up(0, 2048) == 0
    assert align_up(1, 2048) == 2048
    assert align_up(2048, 2048) == 2048
    assert align_down(4095, 2048) == 2048
    assert align_down(2048, 2048) == 2048
    with pytest.raises(ValueError):
        align_up(5, 0)


@given(st.integers(0, 10**12), st.integers(1, 10**7))
def test_align_properties(value: int, alignment: int) -> None:
    up, down = align_up(value, alignment), align_down(value, alignment)
    assert up % alignment == 0 and down % alignment == 0
    assert down <= value <= up
    assert up - down in (0, alignment)


def test_blank_disk_leaves_room_for_either_table() -> None:
    size = GiB // 512
    (region,) = free_regions(None, size, 512)
    assert region.start_lba == 2048
    # The backup GPT (header + 32 entry sectors) stays free at the end.
    assert region.end_lba == size - 34
    assert not region.inside_extended


def test_blank_4kn_disk() -> None:
    size = GiB // 4096
    (region,) = free_regions(None, size, 4096)
    assert region.start_lba == 256  # 1 MiB in 4 KiB sectors
    assert region.end_lba == size - 1 - gpt_reserved_sectors(4096)
    assert region.sector_size == 4096


def test_windows_mbr_with_unallocated_tail() -> None:
    size = 20 * GiB // 512
    table = PartitionTable(
        scheme="msdos",
        disk_size_lba=size,
        mbr_signature="7490A9A7",
        partitions=(
            Partition(number=1, start_lba=2048, length_lba=204800, mbr_type=0x07),
            Partition(number=2, start_lba=206848, length_lba=10 * GiB // 512, mbr_type=0x07),
        ),
    )
    (region,) = free_regions(table, size, 512)
    assert region.start_lba == 206848 + 10 * GiB // 512
    assert region.end_lba == size - 1  # MBR keeps nothing at the end
    assert region.size_bytes == size * 512 - region.start_lba * 512


def test_legacy_63_sector_start_is_aligned_past() -> None:
    size = 2 * GiB // 512
    table = PartitionTable(
        scheme="msdos",
        disk_size_lba=size,
        partitions=(Partition(number=1, start_lba=63, length_lba=1_000_000, mbr_type=0x07),),
    )
    (region,) = free_regions(table, size, 512)
    # The partition ends at sector 1_000_062; the region starts at the next MiB.
    assert region.start_lba == align_up(1_000_063, 2048)
    assert region.end_lba == size - 1


def test_gpt_regions_stay_inside_usable_lbas() -> None:
    size = 4 * GiB // 512
    last = size - 34
    table = PartitionTable(
        scheme="gpt",
        disk_size_lba=size,
        gpt_disk_guid=guid(),
        gpt_first_usable_lba=34,
        gpt_last_usable_lba=last,
        partitions=(
            Partition(number=1, start_lba=2048, length_lba=1_048_576, gpt_guid=guid()),
            Partition(number=3, start_lba=3_145_728, length_lba=1_048_576, gpt_guid=guid()),
        ),
    )
    regions = free_regions(table, size, 512)
    assert [(r.start_lba, r.end_lba) for r in regions] == [
        (1_050_624, 3_145_727),
        (4_194_304, last),
    ]


def test_gpt_disk_that_grew_keeps_the_old_backup_area() -> None:
    # The table was written for a smaller disk: its last usable LBA still rules
    # until the table is moved, so nothing past it is offered.
    old = GiB // 512
    table = PartitionTable(
        scheme="gpt",
        disk_size_lba=old,
        gpt_disk_guid=guid(),
        gpt_first_usable_lba=34,
        gpt_last_usable_lba=old - 34,
        partitions=(Partition(number=1, start_lba=2048, length_lba=4096, gpt_guid=guid()),),
    )
    (region,) = free_regions(table, 2 * old, 512)
    assert region.end_lba == old - 34


def test_extended_with_free_space_and_ebrs() -> None:
    size = 8 * GiB // 512
    ext_start = 4_196_352
    table = PartitionTable(
        scheme="msdos",
        disk_size_lba=size,
        partitions=(
            Partition(number=1, start_lba=2048, length_lba=4_194_304, mbr_type=0x83),
            Partition(
                number=2, start_lba=ext_start, length_lba=size - ext_start, kind="extended",
                mbr_type=0x05,
            ),
            Partition(
                number=5, start_lba=ext_start + 2048, length_lba=2_097_152, kind="logical",
                mbr_type=0x83,
            ),
            # fdisk style: this logical's EBR sits 1 MiB before it.
            Partition(
                number=6, start_lba=ext_start + 2048 + 2_097_152 + 1_048_576 + 2048,
                length_lba=1_048_576, kind="logical", mbr_type=0x83,
            ),
        ),
    )
    p5, p6 = table.partition(5), table.partition(6)
    ebr6 = p6.start_lba - 2048
    regions = free_regions(table, size, 512, ebr_lbas=[ext_start, ebr6])
    inner = [r for r in regions if r.inside_extended]
    assert not [r for r in regions if not r.inside_extended]
    # Between logical 5 and the EBR of 6: one sector for the new EBR, then aligned.
    assert (inner[0].start_lba, inner[0].end_lba) == (align_up(p5.stop_lba + 1, 2048), ebr6 - 1)
    assert inner[1].start_lba == align_up(p6.stop_lba + 1, 2048)
    assert inner[1].end_lba == size - 1
    # Without the chain the gap before logical 6 is not offered: its EBR could be there.
    unknown = free_regions(table, size, 512)
    assert [r.start_lba for r in unknown] == [inner[1].start_lba]


def test_empty_extended_container() -> None:
    size = GiB // 512
    table = PartitionTable(
        scheme="msdos",
        disk_size_lba=size,
        partitions=(
            Partition(number=1, start_lba=2048, length_lba=2048, mbr_type=0x83),
            Partition(number=2, start_lba=4096, length_lba=size - 4096, kind="extended",
                      mbr_type=0x0F),
        ),
    )
    (region,) = free_regions(table, size, 512)
    assert region.inside_extended
    # The new first EBR goes at the container's start, the partition at the next MiB.
    assert region.start_lba == 6144
    assert region.end_lba == size - 1


def test_min_bytes_drops_slivers() -> None:
    size = GiB // 512
    table = PartitionTable(
        scheme="msdos",
        disk_size_lba=size,
        partitions=(
            Partition(number=1, start_lba=2048, length_lba=2048, mbr_type=0x83),
            # 2047 free sectors (just under 1 MiB) between the two partitions
            Partition(number=2, start_lba=6143, length_lba=size - 6143, mbr_type=0x83),
        ),
    )
    assert free_regions(table, size, 512) == ()
    small = free_regions(table, size, 512, align_bytes=512, min_bytes=512)
    assert [(r.start_lba, r.length_lba) for r in small] == [(1, 2047), (4096, 2047)]


def test_region_helpers() -> None:
    a = FreeRegion(start_lba=2048, length_lba=100)
    b = FreeRegion(start_lba=8192, length_lba=5000)
    assert largest_region([a, b]) == b
    assert largest_region([]) is None
    assert region_containing([a, b], 2147) == a
    assert region_containing([a, b], 2148) is None


# ---------------------------------------------------------------------------
# Property tests against a per-sector oracle, on small disks with 8-sector alignment.

ALIGN_BYTES = 4096
MIN_BYTES = 4096


def oracle(
    table: PartitionTable, disk_size_lba: int, ebrs: list[int]
) -> list[tuple[int, int, bool]]:
    """Regions as (start, stop, inside_extended), found sector by sector."""
    ss = table.sector_size
    align = max(1, ALIGN_BYTES // ss)
    min_lba = max(1, -(-MIN_BYTES // ss))
    if table.scheme == "gpt":
        assert table.gpt_first_usable_lba is not None and table.gpt_last_usable_lba is not None
        first, stop = table.gpt_first_usable_lba, min(table.gpt_last_usable_lba + 1, disk_size_lba)
    else:
        first, stop = 1, disk_size_lba
    top_taken = [False] * disk_size_lba
    for p in table.partitions:
        if p.kind != "logical":
            for s in range(p.start_lba, min(p.stop_lba, disk_size_lba)):
                top_taken[s] = True
    found: list[tuple[int, int, bool]] = []

    def runs(free: list[bool], lo: int, hi: int) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        s = lo
        while s < hi:
            if free[s]:
                e = s
                while e < hi and free[e]:
                    e += 1
                out.append((s, e))
                s = e
            else:
                s += 1
        return out

    for a, b in runs([not t for t in top_taken], first, stop):
        start = -(-a // align) * align
        if b - start >= min_lba:
            found.append((start, b, False))
    ext = [p for p in table.partitions if p.kind == "extended"]
    if ext:
        e = ext[0]
        inner_free = [False] * disk_size_lba
        for s in range(e.start_lba, min(e.stop_lba, stop)):
            inner_free[s] = True
        logicals = [p for p in table.partitions if p.kind == "logical"]
        for p in logicals:
            for s in range(p.start_lba, min(p.stop_lba, disk_size_lba)):
                inner_free[s] = False
        taken_sectors = [*ebrs, e.start_lba] if logicals else ebrs
        for s in taken_sectors:
            if s < disk_size_lba:
                inner_free[s] = False
        for a, b in runs(inner_free, e.start_lba, min(e.stop_lba, stop)):
            start = -(-(a + 1) // align) * align
            if b - start >= min_lba:
                found.append((start, b, True))
    return sorted(found)


@st.composite
def cut_points(draw: st.DrawFn, lo: int, hi: int, max_pieces: int) -> list[tuple[int, int]]:
    """Disjoint sorted [start, stop) spans inside [lo, hi)."""
    n = draw(st.integers(0, max_pieces))
    points = sorted(draw(st.lists(st.integers(lo, hi), min_size=2 * n, max_size=2 * n)))
    spans = []
    for i in range(n):
        a, b = points[2 * i], points[2 * i + 1]
        if b > a and (not spans or a >= spans[-1][1]):
            spans.append((a, b))
    return spans


@st.composite
def mbr_tables(draw: st.DrawFn) -> tuple[PartitionTable, int, list[int]]:
    size = draw(st.integers(64, 3000))
    spans = draw(cut_points(1, size, 4))
    ext_index = draw(st.sampled_from([None, *range(len(spans))])) if spans else None
    parts: list[Partition] = []
    ebrs: list[int] = []
    number = 5
    for i, (a, b) in enumerate(spans):
        if i == ext_index:
            parts.append(Partition(number=i + 1, start_lba=a, length_lba=b - a, kind="extended",
                                   mbr_type=0x05))
            # Each logical's EBR sits at the start of its span (the first one at
            # the container's first sector), the partition somewhere after it.
            for la, lb in draw(cut_points(a + 1, b, 4)):
                first = not ebrs
                ebr = a if first else la
                start = la if first else la + draw(st.integers(1, 3))
                if start >= lb:
                    continue
                ebrs.append(ebr)
                parts.append(Partition(number=number, start_lba=start, length_lba=lb - start,
                                       kind="logical", mbr_type=0x83))
                number += 1
        else:
            parts.append(Partition(number=i + 1, start_lba=a, length_lba=b - a, mbr_type=0x83))
    table = PartitionTable(scheme="msdos", disk_size_lba=size, partitions=tuple(parts))
    disk = draw(st.integers(max(1, size - 20), size + 40))
    return table, max(disk, 2), ebrs


@st.composite
def gpt_tables(draw: st.DrawFn) -> tuple[PartitionTable, int, list[int]]:
    size = draw(st.integers(80, 3000))
    first = draw(st.integers(2, 40))
    last = draw(st.integers(first, size - 2))
    spans = draw(cut_points(first, last + 1, 6))
    parts = tuple(
        Partition(number=i + 1, start_lba=a, length_lba=b - a, gpt_guid=guid())
        for i, (a, b) in enumerate(spans)
    )
    table = PartitionTable(
        scheme="gpt", disk_size_lba=size, gpt_disk_guid=guid(), gpt_first_usable_lba=first,
        gpt_last_usable_lba=last, partitions=parts,
    )
    disk = draw(st.integers(max(1, size - 20), size + 40))
    return table, disk, []


@settings(max_examples=300, deadline=None)
@given(st.one_of(mbr_tables(), gpt_tables()))
def test_free_regions_match_the_sector_oracle(case: tuple[PartitionTable, int, list[int]]) -> None:
    table, disk, ebrs = case
    regions = free_regions(
        table, disk, 512, align_bytes=ALIGN_BYTES, min_bytes=MIN_BYTES, ebr_lbas=ebrs
    )
    got = [(r.start_lba, r.start_lba + r.length_lba, r.inside_extended) for r in regions]
    assert got == oracle(table, disk, ebrs)


Case = tuple[PartitionTable, int, list[int]]


@settings(max_examples=200, deadline=None)
@given(mbr_tables())
def test_regions_never_touch_partitions_or_ebrs(case: Case) -> None:
    table, disk, ebrs = case
    for known in (ebrs, None):
        for r in free_regions(table, disk, 512, align_bytes=ALIGN_BYTES, min_bytes=MIN_BYTES,
                              ebr_lbas=known):
            assert r.start_lba % 8 == 0
            assert r.length_lba >= 8
            assert r.start_lba >= 1 and r.end_lba < disk
            for p in table.partitions:
                overlaps = r.start_lba <= p.end_lba and p.start_lba <= r.end_lba
                if p.kind == "extended":
                    # Inside-extended regions lie wholly in the container; others outside it.
                    inside = p.start_lba < r.start_lba and r.end_lba <= p.end_lba
                    assert inside if r.inside_extended else not overlaps
                else:
                    assert not overlaps
            for ebr in ebrs:
                assert not (r.start_lba <= ebr <= r.end_lba)
            if r.inside_extended:
                # The sector before the region is left for the new logical's EBR,
                # and it is not another partition's or EBR.
                before = r.start_lba - 1
                assert before not in ebrs
                assert all(not (p.start_lba <= before <= p.end_lba)
                           for p in table.partitions if p.kind == "logical")

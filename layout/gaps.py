"""Free space on a disk: the unallocated regions where a partition could be created.

Pure functions over a :class:`PartitionTable` (after subiquity's ``gaps.py``):
no device is opened, everything is integer LBA in the table's sector size.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import cast

from layout.models import FreeRegion, Partition, PartitionTable, SectorSize

MiB = 1024 * 1024
# A GPT entry array is 128 entries of 128 bytes in every table we create.
GPT_ENTRY_ARRAY_BYTES = 128 * 128


def align_up(value: int, alignment: int) -> int:
    """The smallest multiple of ``alignment`` that is >= ``value``."""
    if alignment <= 0:
        raise ValueError("alignment must be positive")
    return -(-value // alignment) * alignment


def align_down(value: int, alignment: int) -> int:
    """The largest multiple of ``alignment`` that is <= ``value``."""
    if alignment <= 0:
        raise ValueError("alignment must be positive")
    return (value // alignment) * alignment


def gpt_reserved_sectors(sector_size: int) -> int:
    """Sectors one GPT copy takes: its header plus a 16 KiB entry array."""
    return 1 + align_up(GPT_ENTRY_ARRAY_BYTES, sector_size) // sector_size


def usable_area(
    table: PartitionTable | None, disk_size_lba: int, sector_size: int
) -> tuple[int, int]:
    """``[first, stop)`` in LBA where partitions may lie on this disk.

    A blank disk (no table) leaves room for either scheme: sector 0 and the
    primary GPT at the start (the 1 MiB alignment covers that) and a backup GPT
    at the end, so a region found here stays valid whichever table is written.
    """
    if table is None:
        return 1, max(1, disk_size_lba - gpt_reserved_sectors(sector_size))
    if table.scheme == "gpt":
        reserved = gpt_reserved_sectors(sector_size)
        first = table.gpt_first_usable_lba
        if first is None:
            first = 1 + reserved
        last = table.gpt_last_usable_lba
        if last is None:
            last = table.disk_size_lba - 1 - reserved
        # A disk that shrank under its table (or an image cut short) ends earlier.
        return first, min(last + 1, disk_size_lba)
    return 1, disk_size_lba


def _complement(
    occupied: Iterable[tuple[int, int]], start: int, stop: int
) -> list[tuple[int, int]]:
    """The spans of ``[start, stop)`` not covered by any ``[a, b)`` of ``occupied``."""
    spans: list[tuple[int, int]] = []
    cursor = start
    for a, b in sorted(occupied):
        if b <= cursor:
            continue
        if a > cursor:
            spans.append((cursor, min(a, stop)))
        cursor = max(cursor, b)
        if cursor >= stop:
            break
    if cursor < stop:
        spans.append((cursor, stop))
    return [(a, b) for a, b in spans if a < b]


def _extended_occupied(
    extended: Partition, logicals: list[Partition], ebr_lbas: Collection[int] | None
) -> list[tuple[int, int]]:
    """What inside the extended container is taken: logicals and their EBR sectors."""
    occupied: list[tuple[int, int]] = [(p.start_lba, p.stop_lba) for p in logicals]
    if logicals:
        # The first EBR always sits at the container's first sector.
        occupied.append((extended.start_lba, extended.start_lba + 1))
    if ebr_lbas is not None:
        occupied.extend((lba, lba + 1) for lba in ebr_lbas)
    else:
        # Without the chain we cannot know where each later EBR sits (fdisk puts
        # it 1 MiB before its partition, Windows 63 sectors before, others right
        # after the previous one), so the whole gap before a logical is taken.
        previous_stop = extended.start_lba + 1
        for p in sorted(logicals, key=lambda q: q.start_lba):
            if p.start_lba > previous_stop:
                occupied.append((previous_stop, p.start_lba))
            previous_stop = max(previous_stop, p.stop_lba)
    return occupied


def free_regions(
    table: PartitionTable | None,
    disk_size_lba: int,
    sector_size: int,
    *,
    align_bytes: int = MiB,
    min_bytes: int = MiB,
    ebr_lbas: Collection[int] | None = None,
) -> tuple[FreeRegion, ...]:
    """Unallocated regions of the disk, in disk order.

    Each region starts on an ``align_bytes`` boundary (partitions we create are
    1 MiB aligned) and ends exactly where the next used sector or the usable area
    begins: the end is not rounded, so a partition of an exact source size fits
    wherever the sectors are really free. Regions shorter than ``min_bytes`` are
    left out.

    MBR: sector 0 is the table. Space inside the extended container is reported
    with ``inside_extended=True``; such a region already leaves one sector before
    its start for the new logical partition's EBR. ``ebr_lbas`` are the sectors
    of the existing EBR chain (from the parsed table); when unknown, the gaps
    before later logical partitions are treated as taken.
    """
    align_lba = max(1, align_bytes // sector_size)
    min_lba = max(1, -(-min_bytes // sector_size))
    first, stop = usable_area(table, disk_size_lba, sector_size)
    regions: list[FreeRegion] = []

    def add(span_start: int, span_stop: int, *, inside_extended: bool) -> None:
        start = align_up(span_start, align_lba)
        if span_stop - start >= min_lba:
            regions.append(
                FreeRegion(
                    start_lba=start,
                    length_lba=span_stop - start,
                    sector_size=_sector_size(sector_size),
                    inside_extended=inside_extended,
                )
            )

    partitions = table.partitions if table is not None else ()
    top_level = [(p.start_lba, p.stop_lba) for p in partitions if p.kind != "logical"]
    for a, b in _complement(top_level, first, stop):
        add(a, b, inside_extended=False)

    extended = next((p for p in partitions if p.kind == "extended"), None)
    if extended is not None:
        logicals = [p for p in partitions if p.kind == "logical"]
        occupied = _extended_occupied(extended, logicals, ebr_lbas)
        inner_stop = min(extended.stop_lba, stop)
        for a, b in _complement(occupied, extended.start_lba, inner_stop):
            # The new logical's own EBR takes the span's first sector.
            add(a + 1, b, inside_extended=True)

    return tuple(sorted(regions, key=lambda r: r.start_lba))


def _sector_size(value: int) -> SectorSize:
    if value not in (512, 1024, 2048, 4096):
        raise ValueError(f"unsupported logical sector size {value}")
    return cast(SectorSize, value)


def largest_region(regions: Iterable[FreeRegion]) -> FreeRegion | None:
    """The biggest region (the earliest one when sizes tie)."""
    best: FreeRegion | None = None
    for region in regions:
        if best is None or region.length_lba > best.length_lba:
            best = region
    return best


def region_containing(regions: Iterable[FreeRegion], lba: int) -> FreeRegion | None:
    """The region that holds sector ``lba``, if any."""
    for region in regions:
        if region.start_lba <= lba <= region.end_lba:
            return region
    return None

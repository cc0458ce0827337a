"""Shared models of disks, partition tables, partitions and free regions.

Everything is an integer in logical sectors (LBA) with the sector size carried
explicitly; these models have no dependencies and never touch hardware.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

GUID_PATTERN = r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$"
Guid = Annotated[str, Field(pattern=GUID_PATTERN)]
MbrSignature = Annotated[str, Field(pattern=r"^[0-9A-F]{8}$")]
SectorSize = Literal[512, 1024, 2048, 4096]
NonNegative = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(gt=0)]

MAX_PARTITIONS = 256

# Flags we keep, in libparted's vocabulary.
PartitionFlag = Literal[
    "boot", "esp", "bios_grub", "msr", "hidden", "lba", "raid", "lvm", "swap", "diag", "legacy_boot"
]


class Frozen(BaseModel):
    """Base for every persisted model: immutable, and unknown fields are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class DiskIdentity(Frozen):
    """What a disk *is*, as far as the hardware tells: never its /dev name."""

    model: str | None = None
    vendor: str | None = None
    serial: str | None = None
    wwn: str | None = None
    bus: str | None = None  # "sata", "nvme", "usb", "virtio", "loop", "image", ...
    size_bytes: NonNegative
    logical_sector_size: SectorSize = 512
    physical_sector_size: Positive = 512

    @property
    def size_lba(self) -> int:
        return self.size_bytes // self.logical_sector_size


class Partition(Frozen):
    """One entry of a partition table.

    For GPT, ``number`` is the entry's slot + 1; for MBR, 1-4 are primary or
    extended slots and 5.. are logical partitions in chain order.
    """

    number: Annotated[int, Field(ge=1, le=MAX_PARTITIONS)]
    start_lba: NonNegative
    length_lba: Positive
    kind: Literal["primary", "extended", "logical"] = "primary"
    mbr_type: Annotated[int, Field(ge=0, le=255)] | None = None
    gpt_type: Guid | None = None
    gpt_guid: Guid | None = None
    gpt_name: str | None = None
    gpt_attributes: Annotated[int, Field(ge=0, lt=2**64)] = 0
    flags: tuple[PartitionFlag, ...] = ()
    filesystem: str | None = None  # blkid's TYPE: "ntfs", "vfat", "ext4", "swap", ...
    fs_version: str | None = None  # blkid's VERSION: "FAT32", "1.0", ... (where it says)
    label: str | None = None
    fs_uuid: str | None = None

    @property
    def end_lba(self) -> int:
        """Last sector that belongs to the partition (inclusive)."""
        return self.start_lba + self.length_lba - 1

    @property
    def stop_lba(self) -> int:
        """First sector after the partition (exclusive end)."""
        return self.start_lba + self.length_lba


class PartitionTable(Frozen):
    """A disk's partition table: scheme, identity and entries, in LBA of ``sector_size``."""

    scheme: Literal["msdos", "gpt"]
    sector_size: SectorSize = 512
    disk_size_lba: Positive
    mbr_signature: MbrSignature | None = None
    gpt_disk_guid: Guid | None = None
    gpt_first_usable_lba: NonNegative | None = None
    gpt_last_usable_lba: NonNegative | None = None
    gpt_entry_count: Annotated[int, Field(ge=1, le=4096)] | None = None
    gpt_entry_size: Annotated[int, Field(ge=128, le=4096)] | None = None
    partitions: Annotated[tuple[Partition, ...], Field(max_length=MAX_PARTITIONS)] = ()

    @model_validator(mode="after")
    def _check_consistency(self) -> PartitionTable:
        problems = table_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def partition(self, number: int) -> Partition:
        for p in self.partitions:
            if p.number == number:
                return p
        raise KeyError(f"no partition {number} in this table")

    @property
    def data_partitions(self) -> tuple[Partition, ...]:
        """Partitions that hold data (the MBR extended container holds none itself)."""
        return tuple(p for p in self.partitions if p.kind != "extended")

    @property
    def first_partition_lba(self) -> int | None:
        starts = [p.start_lba for p in self.partitions]
        return min(starts) if starts else None


def table_problems(table: PartitionTable) -> list[str]:
    """Plain-language reasons a table cannot be right (empty when it is sound)."""
    problems: list[str] = []
    numbers = [p.number for p in table.partitions]
    if len(set(numbers)) != len(numbers):
        problems.append("two partitions share a number")
    first_ok = 1 if table.scheme == "msdos" else (table.gpt_first_usable_lba or 34)
    last_ok = table.disk_size_lba - 1
    if table.scheme == "gpt":
        last_ok = (
            table.gpt_last_usable_lba
            if table.gpt_last_usable_lba is not None
            else table.disk_size_lba - 34
        )
        if table.gpt_disk_guid is None:
            problems.append("a GPT table needs a disk GUID")
        if any(p.kind != "primary" for p in table.partitions):
            problems.append("GPT has no extended or logical partitions")
    for p in table.partitions:
        if p.start_lba < first_ok or p.end_lba > last_ok:
            problems.append(
                f"partition {p.number} (sectors {p.start_lba}-{p.end_lba}) lies outside "
                f"the usable area {first_ok}-{last_ok}"
            )
    if table.scheme == "msdos":
        extended = [p for p in table.partitions if p.kind == "extended"]
        if len(extended) > 1:
            problems.append("an MBR table can hold only one extended partition")
        if sum(1 for p in table.partitions if p.kind != "logical") > 4:
            problems.append("an MBR table has only four primary slots")
        for p in table.partitions:
            if p.kind == "logical":
                if not extended:
                    problems.append(f"logical partition {p.number} has no extended partition")
                elif not (extended[0].start_lba < p.start_lba and p.end_lba <= extended[0].end_lba):
                    problems.append(f"logical partition {p.number} is not inside the extended one")
            elif p.number > 4:
                problems.append(f"primary partition {p.number} must be numbered 1-4")
    # Overlaps between data-bearing extents; the extended container overlaps its logicals.
    spans = sorted(
        (p.start_lba, p.end_lba, p.number) for p in table.partitions if p.kind != "extended"
    )
    for (_a_start, a_end, a_num), (b_start, _b_end, b_num) in itertools.pairwise(spans):
        if b_start <= a_end:
            problems.append(f"partitions {a_num} and {b_num} overlap (sector {b_start})")
    return problems


class FreeRegion(Frozen):
    """Unallocated space on a disk where a partition could be created."""

    start_lba: NonNegative
    length_lba: Positive
    sector_size: SectorSize = 512
    inside_extended: bool = False

    @property
    def end_lba(self) -> int:
        return self.start_lba + self.length_lba - 1

    @property
    def size_bytes(self) -> int:
        return self.length_lba * self.sector_size

"""Builders for planner and preview tests: synthetic manifests, probed disks, a sparse disk.

The manifests carry real table bytes (sector 0, EBRs) rendered by ``layout.table_io``,
so a plan applied to the sparse in-memory disk can be parsed back and compared.
"""

from __future__ import annotations

import hashlib
import struct
from datetime import UTC, datetime

from archive.manifest import (
    ArchiveManifest,
    BootArea,
    PartitionImage,
    RawSector,
    Role,
    SourceDisk,
)
from archive.roles import infer_role
from layout.gaps import free_regions
from layout.models import DiskIdentity, Partition, PartitionTable
from layout.plan import Plan
from layout.probe import ProbedDisk
from layout.table_io import (
    protective_mbr,
    read_table,
    render_ebr,
    render_gpt,
    render_mbr_entry,
    table_fingerprint,
)

MiB = 1024 * 1024
GiB = 1024 * MiB
BOOT_CODE = bytes((i * 7 + 3) % 256 for i in range(440))
WIN_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
MSR = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"
DIGEST = "ab" * 32


def mbr_sector0(table: PartitionTable) -> bytes:
    sector = bytearray(table.sector_size)
    sector[:440] = BOOT_CODE
    struct.pack_into("<I", sector, 440, int(table.mbr_signature or "0", 16))
    for p in table.partitions:
        if p.kind != "logical":
            at = 446 + 16 * (p.number - 1)
            sector[at : at + 16] = render_mbr_entry(p, table.sector_size)
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def ebr_chain(table: PartitionTable, gap: int = 2048) -> list[tuple[int, bytes]]:
    """EBRs as fdisk writes them: the first at the container's start, later ones ``gap`` before."""
    extended = next((p for p in table.partitions if p.kind == "extended"), None)
    logicals = [p for p in table.partitions if p.kind == "logical"]
    if extended is None or not logicals:
        return []
    lbas = [extended.start_lba] + [p.start_lba - gap for p in logicals[1:]]
    chain = []
    for i, p in enumerate(logicals):
        nxt = lbas[i + 1] if i + 1 < len(lbas) else None
        stop = logicals[i + 1].stop_lba if nxt is not None else None
        chain.append(
            (lbas[i], render_ebr(p, lbas[i], nxt, extended.start_lba, table.sector_size, stop))
        )
    return chain


def make_manifest(
    table: PartitionTable,
    *,
    roles: dict[int, Role] | None = None,
    stored: set[int] | None = None,
    model: str = "WDC WD5000AAKX",
    serial: str = "WD-WCAYUJ123456",
) -> ArchiveManifest:
    ss = table.sector_size
    if table.scheme == "gpt":
        base = bytearray(ss)
        base[:440] = BOOT_CODE
        base[510:512] = b"\x55\xaa"
        sector0 = protective_mbr(bytes(base), table.disk_size_lba)
        ebrs: list[tuple[int, bytes]] = []
    else:
        sector0 = mbr_sector0(table)
        ebrs = ebr_chain(table)
    first = table.first_partition_lba or 2048
    images = []
    for p in table.partitions:
        if stored is not None and p.number not in stored:
            continue
        role = (roles or {}).get(p.number) or infer_role(p, table)[0]
        images.append(PartitionImage(number=p.number, role=role))
    return ArchiveManifest(
        created=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        creator="tests",
        source=SourceDisk(
            identity=DiskIdentity(
                model=model, serial=serial, bus="sata", size_bytes=table.disk_size_lba * ss,
                logical_sector_size=ss,
            ),
            device="/dev/sda",
        ),
        table=table,
        boot=BootArea(
            boot_code=BOOT_CODE.hex(),
            sector0=sector0.hex(),
            track0_stop=first * ss,
            ebrs=tuple(RawSector(lba=lba, data=data.hex()) for lba, data in ebrs),
        ),
        partitions=tuple(images),
    )


def mbr_with_logicals(disk_lba: int = 2 * GiB // 512) -> PartitionTable:
    """System Reserved, Windows, and an extended container with two logical partitions."""
    return PartitionTable(
        scheme="msdos",
        disk_size_lba=disk_lba,
        mbr_signature="7490A9A7",
        partitions=(
            Partition(number=1, start_lba=2048, length_lba=204800, mbr_type=0x07,
                      flags=("boot",), filesystem="ntfs", label="System Reserved"),
            Partition(number=2, start_lba=206848, length_lba=1228800, mbr_type=0x07,
                      filesystem="ntfs", label="Windows"),
            Partition(number=3, start_lba=1435648, kind="extended", length_lba=2000000,
                      mbr_type=0x0F),
            Partition(number=5, start_lba=1437696, kind="logical", length_lba=409600,
                      mbr_type=0x07, filesystem="ntfs", label="data"),
            Partition(number=6, start_lba=1849344, kind="logical", length_lba=204800,
                      mbr_type=0x0C, filesystem="vfat", label="photos"),
        ),
    )


def gpt_table(disk_lba: int = GiB // 512) -> PartitionTable:
    """EFI System, Microsoft Reserved, Windows and a data partition."""
    return PartitionTable(
        scheme="gpt",
        disk_size_lba=disk_lba,
        gpt_disk_guid="5E2B6B0B-1E50-4C16-9B8B-2B3C7E0F4A11",
        gpt_first_usable_lba=34,
        gpt_last_usable_lba=disk_lba - 34,
        gpt_entry_count=128,
        gpt_entry_size=128,
        partitions=(
            Partition(number=1, start_lba=2048, length_lba=204800, gpt_type=ESP,
                      gpt_guid="11111111-2222-4333-8444-555555555555", gpt_name="EFI system",
                      flags=("boot", "esp"), filesystem="vfat", label="EFI"),
            Partition(number=2, start_lba=206848, length_lba=32768, gpt_type=MSR,
                      gpt_guid="21111111-2222-4333-8444-555555555555",
                      gpt_name="Microsoft reserved partition", flags=("msr",)),
            Partition(number=3, start_lba=239616, length_lba=1200000, gpt_type=WIN_DATA,
                      gpt_guid="31111111-2222-4333-8444-555555555555",
                      gpt_name="Basic data partition", filesystem="ntfs", label="Windows"),
            Partition(number=4, start_lba=1439744, length_lba=500000, gpt_type=WIN_DATA,
                      gpt_guid="41111111-2222-4333-8444-555555555555",
                      gpt_name="Basic data partition", filesystem="ntfs", label="data"),
        ),
    )


def probed(
    table: PartitionTable | None,
    size_bytes: int,
    *,
    device: str = "/dev/sdb",
    model: str = "Samsung SSD 860 EVO 1TB",
    serial: str = "S3Z9NB0K812345X",
    sector_size: int = 512,
    ebr_lbas: list[int] | None = None,
) -> ProbedDisk:
    size_lba = size_bytes // sector_size
    return ProbedDisk(
        device=device,
        identity=DiskIdentity(
            model=model, serial=serial, bus="sata", size_bytes=size_bytes,
            logical_sector_size=sector_size,  # type: ignore[arg-type]
            physical_sector_size=sector_size,
        ),
        table=table,
        table_fingerprint=table_fingerprint(table),
        free=free_regions(table, size_lba, sector_size, ebr_lbas=ebr_lbas),
    )


class SparseDisk:
    """An in-memory disk that stores only the sectors written: plans applied without I/O."""

    def __init__(self, size_bytes: int, sector_size: int = 512) -> None:
        self.size = size_bytes
        self.ss = sector_size
        self.sectors: dict[int, bytearray] = {}

    def write(self, offset: int, data: bytes) -> None:
        assert offset >= 0 and offset + len(data) <= self.size
        done = 0
        while done < len(data):
            lba, within = divmod(offset + done, self.ss)
            n = min(self.ss - within, len(data) - done)
            sector = self.sectors.setdefault(lba, bytearray(self.ss))
            sector[within : within + n] = data[done : done + n]
            done += n

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        out = bytearray()
        while len(out) < length:
            lba, within = divmod(offset + len(out), self.ss)
            n = min(self.ss - within, length - len(out))
            out += self.sectors.get(lba, bytes(self.ss))[within : within + n]
        return bytes(out)

    def apply_table(self, plan: Plan) -> None:
        """Carry out the plan's table writes (restore-area data is not simulated)."""
        for stage in plan.stages:
            for action in stage.actions:
                if action.kind == "write-bytes":
                    self.write(action.offset, bytes.fromhex(action.data or ""))
                elif action.kind == "zero":
                    self.write(action.offset, bytes(action.length))

    def table(self) -> PartitionTable | None:
        parsed = read_table(self.read, self.size, self.ss)
        return parsed.table if parsed else None

    def ebr_lbas(self) -> list[int]:
        parsed = read_table(self.read, self.size, self.ss)
        return [lba for lba, _ in parsed.ebrs] if parsed else []


def geometry(table: PartitionTable | None) -> object:
    """A table without the filesystem facts the raw bytes cannot carry."""
    if table is None:
        return None
    return [
        (p.number, p.kind, p.start_lba, p.length_lba, p.mbr_type, p.gpt_type, p.gpt_guid)
        for p in sorted(table.partitions, key=lambda q: q.number)
    ]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def disk_from_table(table: PartitionTable, size_bytes: int) -> SparseDisk:
    """A sparse disk holding ``table``'s real on-disk structures."""
    disk = SparseDisk(size_bytes, table.sector_size)
    ss = table.sector_size
    if table.scheme == "gpt":
        size_lba = size_bytes // ss
        disk.write(0, protective_mbr(bytes(ss), size_lba))
        gpt = render_gpt(table, size_lba)
        disk.write(ss, gpt.primary_header)
        disk.write(gpt.primary_entries_lba * ss, gpt.entries)
        disk.write(gpt.backup_entries_lba * ss, gpt.entries)
        disk.write(gpt.backup_header_lba * ss, gpt.backup_header)
    else:
        disk.write(0, mbr_sector0(table))
        for lba, data in ebr_chain(table):
            disk.write(lba * ss, data)
    return disk


def probed_from_disk(disk: SparseDisk, **kwargs: object) -> ProbedDisk:
    return probed(disk.table(), disk.size, ebr_lbas=disk.ebr_lbas(), **kwargs)  # type: ignore[arg-type]

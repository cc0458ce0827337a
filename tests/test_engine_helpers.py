"""Hand-made archives and plans for engine tests: a backup held in memory, no files.

``MemoryArchive`` implements the Archive interface over the bytes of a source
disk, with chosen chunks reported damaged; ``full_disk_plan`` builds the plan a
planner makes for a same-size target.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from archive.base import TRACK0, Archive, Area, Piece, ProgressCallback, VerifyReport
from archive.errors import CorruptData
from archive.manifest import ArchiveManifest, BootArea, Chunk, PartitionImage, Role, SourceDisk
from layout.models import DiskIdentity, Partition, PartitionTable
from layout.plan import (
    ArchiveRef,
    Plan,
    PlanChoices,
    RestoreArea,
    Stage,
    TargetRef,
    WriteBytes,
)
from layout.table_io import render_mbr_entry, table_fingerprint

SECTOR = 512
CHUNK = 64 * 1024


def mbr_sector0(table: PartitionTable, boot_code: bytes) -> bytes:
    sector = bytearray(SECTOR)
    sector[:440] = boot_code[:440]
    assert table.mbr_signature is not None
    struct.pack_into("<I", sector, 440, int(table.mbr_signature, 16))
    primaries = {p.number: p for p in table.partitions if p.kind != "logical"}
    for slot in range(4):
        sector[446 + 16 * slot : 462 + 16 * slot] = render_mbr_entry(
            primaries.get(slot + 1), SECTOR
        )
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def chunks_of(disk: bytes, ranges: Sequence[tuple[int, int]]) -> list[Chunk]:
    """Chunks for source bytes ``ranges`` of ``disk``; all-zero ones become zero extents."""
    out: list[Chunk] = []
    for start, stop in ranges:
        pos = start
        while pos < stop:
            n = min(CHUNK - pos % CHUNK, stop - pos)
            raw = disk[pos : pos + n]
            if raw == bytes(n):
                out.append(Chunk(offset=pos, length=n, kind="zero"))
            else:
                digest = hashlib.sha256(raw).hexdigest()
                out.append(Chunk(offset=pos, length=n, kind="data", sha256=digest))
            pos += n
    return out


class MemoryArchive(Archive):
    """A backup of ``disk`` (the source disk's bytes) held in memory.

    ``stored`` limits what each partition stores (like a filesystem's used
    blocks); ``corrupt`` holds source offsets of chunks that fail their check.
    """

    format_name = "test archive"

    def __init__(
        self,
        disk: bytes,
        table: PartitionTable,
        *,
        stored: dict[int, Sequence[tuple[int, int]]] | None = None,
        path: Path = Path("/nonexistent/test.rtui"),
    ) -> None:
        self.disk = disk
        self.path = path
        self.corrupt: set[int] = set()
        sector0 = disk[:SECTOR]
        first = table.first_partition_lba or 1
        track0_stop = first * SECTOR
        images = []
        for p in table.data_partitions:
            lo, hi = p.start_lba * SECTOR, p.stop_lba * SECTOR
            ranges = (stored or {}).get(p.number, [(lo, hi)])
            images.append(
                PartitionImage(
                    number=p.number, role=Role.DATA, chunks=tuple(chunks_of(disk, ranges))
                )
            )
        self.manifest = ArchiveManifest(
            created=datetime(2024, 1, 1, tzinfo=UTC),
            creator="test",
            source=SourceDisk(identity=DiskIdentity(size_bytes=len(disk)), device="memory"),
            table=table,
            boot=BootArea(
                boot_code=sector0[:440].hex(),
                sector0=sector0.hex(),
                track0=tuple(chunks_of(disk, [(SECTOR, track0_stop)])),
                track0_stop=track0_stop,
            ),
            partitions=tuple(images),
        )

    def _chunks(self, area: Area) -> tuple[int | None, tuple[Chunk, ...]]:
        if area == TRACK0:
            return None, self.manifest.boot.track0
        assert isinstance(area, int)
        return area, self.manifest.image(area).chunks

    def pieces(self, area: Area, start: int = 0) -> Iterator[Piece]:
        partition, chunks = self._chunks(area)
        for c in chunks:
            if c.stop <= start:
                continue
            if c.offset in self.corrupt:
                raise CorruptData(
                    f"the chunk at byte {c.offset} fails its check",
                    partition=partition,
                    offset=c.offset,
                )
            data = None if c.kind == "zero" else self.disk[c.offset : c.stop]
            yield Piece(c.offset, c.length, data)

    def verify(self, progress: ProgressCallback | None = None) -> VerifyReport:
        return VerifyReport()


def sample_source(size: int = 4 * 1024 * 1024, seed: int = 1) -> tuple[bytes, PartitionTable]:
    """A source disk: MBR with two partitions, random data with a zero run in partition 2."""
    rng = random.Random(seed)
    table = PartitionTable(
        scheme="msdos",
        disk_size_lba=size // SECTOR,
        mbr_signature="1234ABCD",
        partitions=(
            Partition(number=1, start_lba=2048, length_lba=2048, mbr_type=0x07, flags=("boot",)),
            Partition(
                number=2, start_lba=4096, length_lba=size // SECTOR - 4096 - 8, mbr_type=0x83
            ),
        ),
    )
    disk = bytearray(rng.randbytes(size))
    zero_at = size - size // 4
    disk[zero_at : zero_at + 300 * 1024] = bytes(300 * 1024)
    disk[:SECTOR] = mbr_sector0(table, rng.randbytes(440))
    return bytes(disk), table


def full_disk_plan(archive: MemoryArchive, target: Path, target_size: int) -> Plan:
    """The stages a planner makes for a same-size MBR target, by hand."""
    table = archive.manifest.table
    track0_stop = archive.manifest.boot.track0_stop
    stages = [
        Stage(
            name="table",
            title="Partition table, boot code and track 0",
            actions=(
                WriteBytes(offset=0,
                    length=SECTOR,
                    description="MBR",
                    data=archive.disk[:SECTOR].hex(),
                ),
                RestoreArea(offset=SECTOR,
                    length=track0_stop - SECTOR,
                    description="track 0",
                    area="track0",
                    source_offset=SECTOR,
                ),
            ),
        )
    ]
    for p in table.data_partitions:
        lo = p.start_lba * SECTOR
        stages.append(
            Stage(
                name=f"partition-{p.number}",
                title=f"Partition {p.number}",
                actions=(
                    RestoreArea(offset=lo,
                        length=p.length_lba * SECTOR,
                        description=f"partition {p.number}",
                        area=p.number,
                        source_offset=lo,
                    ),
                ),
            )
        )
    return make_plan(archive, target, target_size, table, stages)


def make_plan(
    archive: MemoryArchive,
    target: Path,
    target_size: int,
    after: PartitionTable,
    stages: Sequence[Stage],
    *,
    before_fingerprint: str | None = None,
) -> Plan:
    return Plan(
        choices=PlanChoices(job="full-disk"),
        archive=ArchiveRef(path=str(archive.path), identity=archive.identity()),
        target=TargetRef(
            device=str(target),
            name=f"{target.name} · {target_size} bytes",
            identity=DiskIdentity(size_bytes=target_size, bus="image"),
            table_fingerprint=before_fingerprint or table_fingerprint(None),
        ),
        before=None,
        after=after,
        stages=tuple(stages),
    )


def expected_bytes(plan: Plan, archive: MemoryArchive, before: bytes) -> bytes:
    """What the target must hold after ``plan``: actions applied in order to ``before``."""
    out = bytearray(before)
    for stage in plan.stages:
        for a in stage.actions:
            if a.kind == "write-bytes":
                assert a.data is not None
                out[a.offset : a.stop] = bytes.fromhex(a.data)
            elif a.kind == "zero":
                out[a.offset : a.stop] = bytes(a.length)
            else:
                assert a.source_offset is not None and a.area is not None
                delta = a.offset - a.source_offset
                src_hi = a.source_offset + a.length
                for piece in archive.pieces(a.area, a.source_offset):
                    lo, hi = max(piece.offset, a.source_offset), min(piece.stop, src_hi)
                    if lo >= hi:
                        continue
                    data = (
                        bytes(hi - lo)
                        if piece.data is None
                        else piece.data[lo - piece.offset : hi - piece.offset]
                    )
                    out[lo + delta : hi + delta] = data
    return bytes(out)

"""The archive manifest: what a backup holds, as versioned, validated data.

Every archive we read (our own file, a Clonezilla directory) is described by one
of these; the native format stores it as zstd-compressed JSON behind a footer.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, model_validator

from archive.digest import Algorithm
from layout.models import DiskIdentity, Frozen, PartitionTable

# 2: chunks carry BLAKE3 digests (archive.digest); version 1 (SHA-256) is still read.
SCHEMA_VERSION: Literal[1, 2] = 2
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
HexBytes = Annotated[str, Field(pattern=r"^([0-9a-f]{2})*$")]
NonNegative = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(gt=0)]

# A bound on chunk size keeps memory flat for readers and lets chunks be verified
# and resumed one by one; 64 MiB is far above anything we write (4 MiB).
MAX_CHUNK_BYTES = 64 * 1024 * 1024
MAX_CHUNKS_PER_AREA = 4_000_000


class Role(StrEnum):
    """What a partition is for, in the vocabulary of people restoring Windows/Linux."""

    SYSTEM_RESERVED = "system-reserved"
    EFI_SYSTEM = "efi-system"
    BIOS_BOOT = "bios-boot"
    MSR = "msr"
    SYSTEM = "system"
    DATA = "data"
    SWAP = "swap"
    RECOVERY = "recovery"
    EXTENDED = "extended"


class Chunk(Frozen):
    """A run of source-disk bytes: stored data (one zstd frame) or a run of zeros.

    ``offset`` is the byte offset on the *source disk*. For data chunks the digest
    (``sha256`` in version 1 manifests, ``blake3`` in version 2) is of the raw
    (decompressed) bytes. ``frame_offset``/``frame_length``
    locate the compressed frame inside a native archive file; readers of other
    formats leave them unset.
    """

    offset: NonNegative
    length: Annotated[int, Field(gt=0, le=MAX_CHUNK_BYTES)]
    kind: Literal["data", "zero"]
    sha256: Sha256 | None = None
    blake3: Sha256 | None = None  # the same form: 64 lowercase hex digits
    frame_offset: NonNegative | None = None
    frame_length: Positive | None = None

    @property
    def stop(self) -> int:
        return self.offset + self.length

    @property
    def digest(self) -> tuple[Algorithm, str] | None:
        """(algorithm, hex digest) of the raw bytes, or None (zeros; other formats)."""
        if self.blake3 is not None:
            return "blake3", self.blake3
        if self.sha256 is not None:
            return "sha256", self.sha256
        return None

    @model_validator(mode="after")
    def _check_kind(self) -> Chunk:
        if self.kind == "zero" and (self.digest or self.frame_offset is not None):
            raise ValueError("a zero chunk stores no data and has no digest")
        if self.sha256 is not None and self.blake3 is not None:
            raise ValueError("a chunk carries one digest, not two")
        if (self.frame_offset is None) != (self.frame_length is None):
            raise ValueError("frame_offset and frame_length go together")
        return self


def check_chunks(chunks: tuple[Chunk, ...], start: int, stop: int, what: str) -> None:
    """Chunks must be sorted, disjoint and inside [start, stop)."""
    if len(chunks) > MAX_CHUNKS_PER_AREA:
        raise ValueError(f"{what}: {len(chunks)} chunks is more than any real disk needs")
    previous_stop = start
    for c in chunks:
        if c.offset < previous_stop:
            raise ValueError(
                f"{what}: chunk at byte {c.offset} overlaps the previous one or lies before "
                f"the area's start {start}"
            )
        if c.stop > stop:
            raise ValueError(f"{what}: chunk at byte {c.offset} runs past the area's end {stop}")
        previous_stop = c.stop


class RawSector(Frozen):
    """A table structure kept verbatim (an extended boot record)."""

    lba: NonNegative
    data: HexBytes


class BootArea(Frozen):
    """The start of the disk: boot code, sector 0, and track 0 up to the first partition.

    ``track0`` chunks cover bytes from ``sector_size`` (just after sector 0) to
    the first partition's start, GPT header and entries included for GPT disks.
    """

    boot_code: HexBytes = Field(description="First 440 bytes of sector 0")
    sector0: HexBytes = Field(description="The whole of sector 0 as backed up")
    track0: tuple[Chunk, ...] = ()
    track0_stop: NonNegative = Field(description="Byte offset where track 0 ends")
    ebrs: tuple[RawSector, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> BootArea:
        if len(self.boot_code) != 880:
            raise ValueError("boot code must be exactly 440 bytes")
        if len(self.sector0) < 1024:
            raise ValueError("sector 0 must be at least 512 bytes")
        check_chunks(self.track0, len(self.sector0) // 2, self.track0_stop, "track 0")
        return self


class PartitionImage(Frozen):
    """One backed-up partition: its table entry's number, role and data."""

    number: Positive
    role: Role
    role_evidence: tuple[str, ...] = ()
    used_bytes: NonNegative | None = None
    capture: Literal["used-blocks", "all-sectors", "none"] = "all-sectors"
    capture_note: str | None = None
    chunks: tuple[Chunk, ...] = ()


class SourceDisk(Frozen):
    identity: DiskIdentity
    device: str = Field(description="The /dev name or file at backup time (informational)")


class ArchiveManifest(Frozen):
    """Everything a restore needs to know about a backup, readable without the data."""

    schema_version: Literal[1, 2] = SCHEMA_VERSION
    created: datetime
    creator: str = Field(description="Tool and version that made the backup")
    source: SourceDisk
    table: PartitionTable
    boot: BootArea
    partitions: tuple[PartitionImage, ...] = Field(default=(), max_length=256)

    @model_validator(mode="after")
    def _check(self) -> ArchiveManifest:
        table = self.table
        # BLAKE3 digests came with version 2: a version 1 manifest holding one was not
        # written by restore-tui (and an older restore-tui could not check it).
        if self.schema_version == 1:
            for chunk in (*self.boot.track0, *(c for p in self.partitions for c in p.chunks)):
                if chunk.blake3 is not None:
                    raise ValueError(
                        f"a version 1 manifest carries SHA-256 digests, but the chunk at "
                        f"byte {chunk.offset} has a BLAKE3 one"
                    )
        if table.sector_size != self.source.identity.logical_sector_size:
            raise ValueError(
                f"the table's sector size {table.sector_size} differs from the disk's "
                f"logical sector size {self.source.identity.logical_sector_size}"
            )
        if table.disk_size_lba * table.sector_size > self.source.identity.size_bytes:
            raise ValueError("the table describes a disk larger than the source disk")
        numbers = {p.number for p in table.partitions}
        seen: set[int] = set()
        for image in self.partitions:
            if image.number not in numbers:
                raise ValueError(f"partition image {image.number} has no entry in the table")
            if image.number in seen:
                raise ValueError(f"partition {image.number} is stored twice")
            seen.add(image.number)
            entry = table.partition(image.number)
            start = entry.start_lba * table.sector_size
            check_chunks(
                image.chunks,
                start,
                start + entry.length_lba * table.sector_size,
                f"partition {image.number}",
            )
        first = table.first_partition_lba
        if first is not None and self.boot.track0_stop > first * table.sector_size:
            raise ValueError("track 0 runs into the first partition")
        return self

    def image(self, number: int) -> PartitionImage:
        for image in self.partitions:
            if image.number == number:
                return image
        raise KeyError(f"partition {number} is not in this backup")

    @property
    def boot_code(self) -> bytes:
        return bytes.fromhex(self.boot.boot_code)

    @property
    def sector0(self) -> bytes:
        return bytes.fromhex(self.boot.sector0)

    def stored_bytes(self) -> int:
        """Raw bytes a restore writes (data and zero chunks, track 0 included)."""
        total = sum(c.length for c in self.boot.track0)
        return total + sum(c.length for p in self.partitions for c in p.chunks)


def manifest_json_schema() -> str:
    """The JSON schema checked into the repository (archive/manifest.schema.json)."""
    return json.dumps(ArchiveManifest.model_json_schema(), indent=2, sort_keys=True) + "\n"

"""A raw disk image: a file that holds a whole disk byte for byte, restorable as it is.

Made with ``dd``, Rescuezilla's or ddrescue's raw mode, ``qemu-img convert -O raw``,
or a VMware ``-flat.vmdk``; a fixed-size Windows ``.vhd`` is the same with a 512-byte
footer after the disk. It is recognised by its content: an MBR or GPT table at its
start whose partitions all lie inside the file. The extension (``.img``, ``.dd``,
``.raw``) is never required.

Nothing in such a file checks its data: every byte is restored as it is stored, and
:meth:`RawDiskImage.unchecked` says so. A raw image records no date, so ``created``
is the file's modification time (a copy changes it; :meth:`identity` leaves it out).
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from archive.base import (
    TRACK0,
    Archive,
    Area,
    Damage,
    Piece,
    ProgressCallback,
    Unchecked,
    VerifyReport,
    canonical_json,
    sha256_hex,
)
from archive.errors import ArchiveError, NotAnArchive, TruncatedArchive
from archive.manifest import (
    MAX_CHUNK_BYTES,
    ArchiveManifest,
    BootArea,
    Chunk,
    PartitionImage,
    RawSector,
    SourceDisk,
)
from archive.roles import infer_role
from layout.fsinfo import with_filesystems
from layout.models import DiskIdentity, PartitionTable
from layout.table_io import ParsedTable, TableError, read_table

#: pieces handed to a restore: bounded, so memory stays flat whatever the disk's size
PIECE_BYTES = 4 * 1024 * 1024
#: chunks of the manifest (no digests): large, so a 2 TB disk is 32,768 of them
CHUNK_BYTES = MAX_CHUNK_BYTES
#: how much of the file's start identity() hashes (track 0 and the tables live there)
HEAD_HASH_BYTES = 4 * 1024 * 1024
VHD_FOOTER = 512
VHD_FIXED = 2

FORMAT_NAME = "raw disk image"
VHD_FORMAT_NAME = "fixed-size VHD"


@dataclass(frozen=True)
class RawProbe:
    """What the start of a file says: a usable disk table, or why not.

    ``disk_bytes`` is how much of the file is the disk (all of it, or all but a
    fixed VHD's footer). ``disk_size`` is the size of the disk the table was made
    for: larger than ``disk_bytes`` for a GPT disk copied only up to the end of its
    last partition (the free space and the backup GPT after it are not needed: a
    restore writes the GPT for the target). ``problem`` is set when the file starts
    like a disk with a table but the table cannot be used (damaged, or the file is
    cut short inside a partition).
    """

    parsed: ParsedTable | None
    sector_size: int
    disk_bytes: int
    container: str | None = None  # "vhd" for a fixed-size VHD
    problem: str | None = None
    disk_size: int = 0

    @property
    def size_bytes(self) -> int:
        return max(self.disk_size, self.disk_bytes)


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    # One pread almost always returns everything: hand that out without copying.
    first = os.pread(fd, length, offset)
    if len(first) == length or not first:
        return first
    out = bytearray(first)
    while len(out) < length:
        piece = os.pread(fd, length - len(out), offset + len(out))
        if not piece:
            break
        out += piece
    return bytes(out)


def fixed_vhd_footer(footer: bytes) -> bool:
    """True for a valid footer of a fixed-size VHD ("conectix", disk type 2, checksum).

    Layout (big-endian) as QEMU's block/vpc.c reads it: cookie at 0, disk type at 60,
    checksum at 64 = one's complement of the sum of the other 508 bytes.
    """
    if len(footer) != VHD_FOOTER or footer[:8] != b"conectix":
        return False
    disk_type, stored = struct.unpack_from(">II", footer, 60)
    summed = sum(footer[:64]) + sum(footer[68:])
    return disk_type == VHD_FIXED and (~summed & 0xFFFFFFFF) == stored


def _looks_like_filesystem(sector0: bytes) -> bool:
    """A partition's boot sector, not a disk's MBR (NTFS and exFAT say so at byte 3)."""
    return sector0[3:11] in (b"NTFS    ", b"EXFAT   ")


def probe_raw_image(path: Path) -> RawProbe:
    """Read the start of ``path`` (and a fixed VHD's footer) for a disk's partition table."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        disk_bytes, container = size, None
        if size > VHD_FOOTER and fixed_vhd_footer(_pread_all(fd, VHD_FOOTER, size - VHD_FOOTER)):
            disk_bytes, container = size - VHD_FOOTER, "vhd"

        def read(offset: int, length: int) -> bytes:
            if offset >= disk_bytes:
                return b""
            return _pread_all(fd, min(length, disk_bytes - offset), offset)

        problem: str | None = None
        sector0 = read(0, 512)
        protective = len(sector0) == 512 and 0xEE in sector0[450:512:16]
        # A GPT disk with 4096-byte sectors keeps its header at byte 4096, not 512.
        for ss in (512, 4096) if protective else (512,):
            disk_size = disk_bytes
            try:
                parsed = read_table(read, disk_bytes, ss)
            except TableError as exc:
                problem = problem or str(exc)
                disk_size = _gpt_disk_size(read, ss) if protective else 0
                if disk_size <= disk_bytes:
                    continue
                # Copied only up to the end of the last partition: read the table as
                # made for the whole disk, then every partition must be in the file.
                try:
                    parsed = read_table(read, disk_size, ss)
                except TableError:
                    continue
                if parsed is None:
                    continue
                cut = _first_cut_partition(parsed, disk_bytes)
                if cut is not None:
                    problem = cut
                    break
            if parsed is None:
                break
            if parsed.table.scheme == "msdos" and _looks_like_filesystem(parsed.sector0):
                break
            if not parsed.table.partitions:
                problem = "its partition table lists no partitions, so there is nothing to restore"
                break
            return RawProbe(parsed, ss, disk_bytes, container, disk_size=disk_size)
        return RawProbe(None, 512, disk_bytes, container, problem)
    finally:
        os.close(fd)


def _gpt_disk_size(read: Callable[[int, int], bytes], ss: int) -> int:
    """The disk size the primary GPT header was written for (its backup header's LBA + 1)."""
    header = read(ss, ss)
    if len(header) < 92 or header[:8] != b"EFI PART":
        return 0
    alternate = struct.unpack_from("<Q", header, 32)[0]
    return (alternate + 1) * ss if 0 < alternate < 1 << 40 else 0


def _first_cut_partition(parsed: ParsedTable, disk_bytes: int) -> str | None:
    """Why a GPT copy cut before its disk's end cannot be restored, if it cannot."""
    ss = parsed.table.sector_size
    for p in sorted(parsed.table.partitions, key=lambda q: q.stop_lba):
        if p.stop_lba * ss > disk_bytes:
            return (
                f"the file ends at byte {disk_bytes}, inside partition {p.number} (which ends "
                f"at byte {p.stop_lba * ss}): the copy is cut short"
            )
    return None


# Compared with, never written: the pages stay unallocated (calloc) until read.
_ZERO_PIECE = bytes(PIECE_BYTES)


def _is_zero(data: bytes) -> bool:
    n = len(data)
    return data == (_ZERO_PIECE if n == PIECE_BYTES else _ZERO_PIECE[:n])


def _ranges(chunks: tuple[Chunk, ...]) -> list[tuple[int, int]]:
    """Chunks joined into contiguous byte ranges."""
    out: list[tuple[int, int]] = []
    for c in chunks:
        if out and out[-1][1] == c.offset:
            out[-1] = (out[-1][0], c.stop)
        else:
            out.append((c.offset, c.stop))
    return out


def _chunks(start: int, stop: int) -> tuple[Chunk, ...]:
    return tuple(
        Chunk(offset=o, length=min(CHUNK_BYTES, stop - o), kind="data")
        for o in range(start, stop, CHUNK_BYTES)
    )


class RawDiskImage(Archive):
    """A whole disk, byte for byte, in one file (a fixed-size VHD: with a footer after it)."""

    def __init__(self, path: str | os.PathLike[str], found: RawProbe | None = None) -> None:
        self.path = Path(path)
        found = found if found is not None else probe_raw_image(self.path)
        if found.parsed is None:
            raise NotAnArchive(
                f"{self.path.name} is not a copy of a whole disk: "
                + (found.problem or "it does not start with a partition table")
            )
        parsed = found.parsed
        self._parsed = parsed
        self._disk_bytes = found.disk_bytes
        self._container = found.container
        st = os.stat(self.path)
        self._file_size = st.st_size
        self.format_name = VHD_FORMAT_NAME if found.container == "vhd" else FORMAT_NAME
        ss = found.sector_size
        table = with_filesystems(parsed.table, str(self.path))
        first = table.first_partition_lba
        track0_stop = first * ss if first is not None else min(found.disk_bytes, 1024 * 1024)
        track0 = _chunks(ss, track0_stop) if track0_stop > ss else ()
        images = [self._image(p.number, table) for p in table.partitions]
        what = "a fixed-size VHD (Windows virtual disk)" if found.container else "a raw disk image"
        self.manifest = ArchiveManifest(
            # A raw image records no date: its modification time is all there is.
            created=datetime.fromtimestamp(st.st_mtime, tz=UTC),
            creator=f"{what}, a byte-for-byte copy of a disk (made with dd or similar)",
            source=SourceDisk(
                identity=DiskIdentity(
                    bus="image",
                    size_bytes=found.size_bytes,
                    logical_sector_size=ss,
                    physical_sector_size=ss,
                ),
                device=str(self.path),
            ),
            table=table,
            boot=BootArea(
                boot_code=parsed.sector0[:440].hex(),
                sector0=parsed.sector0.hex(),
                track0=track0,
                track0_stop=track0_stop,
                ebrs=tuple(RawSector(lba=lba, data=raw.hex()) for lba, raw in parsed.ebrs),
            ),
            partitions=tuple(images),
        )

    def _image(self, number: int, table: PartitionTable) -> PartitionImage:
        p = table.partition(number)
        role, evidence = infer_role(p, table)
        if p.kind == "extended":
            return PartitionImage(
                number=number,
                role=role,
                role_evidence=evidence,
                capture="none",
                capture_note="an extended partition holds only the logical partitions' records",
            )
        ss = table.sector_size
        return PartitionImage(
            number=number,
            role=role,
            role_evidence=evidence,
            used_bytes=None,
            capture="all-sectors",
            capture_note="raw copy: every sector as the image file holds it, no checksums",
            chunks=_chunks(p.start_lba * ss, p.stop_lba * ss),
        )

    # -- what it is --------------------------------------------------------------------

    def _content_identity(self) -> str:
        """File name and size, a hash of the first 4 MiB and of every table structure.

        The structures are sector 0, the GPT headers and entries (both copies) and the
        extended boot records, wherever they lie. The table as read (before blkid adds
        filesystem names, which depend on the blkid at hand) counts too. Never the
        modification time, never the folder.
        """
        parsed = self._parsed
        structures = hashlib.sha256()
        head = hashlib.sha256()
        with self.path.open("rb") as f:
            for lo, hi in parsed.structure_extents:
                f.seek(lo)
                structures.update(struct.pack("<QQ", lo, hi))
                structures.update(f.read(hi - lo))
            for lba, raw in parsed.ebrs:
                structures.update(struct.pack("<Q", lba) + raw)
            f.seek(0)
            remaining = min(HEAD_HASH_BYTES, self._disk_bytes)
            while remaining > 0:
                block = f.read(min(remaining, 1 << 20))
                if not block:
                    break
                head.update(block)
                remaining -= len(block)
        return sha256_hex(
            canonical_json(
                {
                    "format": self.format_name,
                    "name": self.path.name,
                    "size": self._file_size,
                    "disk_bytes": self._disk_bytes,
                    "table": parsed.table.model_dump(mode="json"),
                    "structures": structures.hexdigest(),
                    "head": head.hexdigest(),
                }
            )
        )

    def unchecked(self) -> tuple[Unchecked, ...]:
        """Everything: a raw copy carries no checksum for any of its bytes."""
        m = self.manifest
        found = [Unchecked(area="boot-code", reason="raw-copy")]
        if m.boot.track0:
            found.append(Unchecked(area="track0", reason="raw-copy"))
        if m.boot.ebrs:
            found.append(Unchecked(area="ebrs", reason="raw-copy"))
        found.extend(
            Unchecked(area="partition", partition=image.number, reason="raw-copy")
            for image in m.partitions
            if image.capture != "none"
        )
        return tuple(found)

    # -- data --------------------------------------------------------------------------

    def _area_chunks(self, area: Area) -> tuple[Chunk, ...]:
        if area == TRACK0:
            return self.manifest.boot.track0
        return self.manifest.image(area).chunks  # KeyError for a partition not in it

    def pieces(self, area: Area, start: int = 0) -> Iterator[Piece]:
        """The area's bytes in slices of at most 4 MiB; runs of zeros (holes of a sparse
        file too) as zero pieces."""
        return self._pieces(self._area_chunks(area), start)

    def _pieces(self, chunks: tuple[Chunk, ...], start: int) -> Iterator[Piece]:
        if not chunks:
            return
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            for lo, hi in _ranges(chunks):
                if hi <= start:
                    continue
                pos = lo + max(0, (start - lo) // PIECE_BYTES * PIECE_BYTES)
                while pos < hi:
                    n = min(PIECE_BYTES, hi - pos)
                    yield self._piece(fd, pos, n)
                    pos += n
        finally:
            os.close(fd)

    def _piece(self, fd: int, pos: int, n: int) -> Piece:
        if _hole_until(fd, pos) >= pos + n and pos + n <= os.fstat(fd).st_size:
            return Piece(pos, n, None)  # a hole of a sparse file: zeros, nothing to read
        data = _pread_all(fd, n, pos)
        if len(data) != n:
            raise TruncatedArchive(
                f"{self.path.name} ends at byte {pos + len(data)}, but the disk in it goes on "
                f"to byte {self._disk_bytes}: the file was cut short after it was opened. "
                "Use a complete copy of the disk image"
            )
        if _is_zero(data):
            return Piece(pos, n, None)
        return Piece(pos, n, data)

    def verify(self, progress: ProgressCallback | None = None) -> VerifyReport:
        """Read every byte a restore would write (there is no checksum to compare with)."""
        report = VerifyReport()
        total = self.manifest.stored_bytes()
        areas: list[tuple[int | None, tuple[Chunk, ...]]] = [(None, self.manifest.boot.track0)]
        areas.extend((image.number, image.chunks) for image in self.manifest.partitions)
        for number, chunks in areas:
            try:
                for piece in self._pieces(chunks, 0):
                    report.checked_bytes += piece.length
                    report.checked_chunks += 1
                    if progress is not None:
                        progress(report.checked_bytes, total)
            except (ArchiveError, OSError) as exc:
                offset = chunks[0].offset if chunks else 0
                report.damage.append(Damage(number, offset, str(exc)))
        return report


def _hole_until(fd: int, pos: int) -> int:
    """Where the next data at or after ``pos`` begins (``pos`` itself when there is data
    there or the filesystem cannot tell)."""
    try:
        return os.lseek(fd, pos, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no data after pos: a hole up to the end
            return os.fstat(fd).st_size
        return pos

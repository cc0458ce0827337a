"""Streaming reader for partclone images (formats 0001 and 0002), used blocks only.

Parses the header and the used-block bitmap, then yields the stored blocks as
runs of partition bytes, each checked against partclone's own checksums
(CRC32, XXH64, XXH3-128) *before* it is handed out; memory stays bounded by one
checksum group plus one output chunk, whatever the partition's size.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import xxhash

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
    manifest_content,
    sha256_hex,
)
from archive.decompress import ImageStream, image_files, split_parts
from archive.errors import ArchiveError, CorruptData, NotAnArchive, TruncatedArchive
from archive.manifest import ArchiveManifest, BootArea, Chunk, PartitionImage, SourceDisk
from archive.roles import infer_role
from layout.models import DiskIdentity, Partition, PartitionTable

MAGIC_V2 = b"partclone-image\x00"
MAGIC = b"partclone-image"
HEADER_V2 = struct.Struct("<16s14s4sH16sQQQQIIHHHHIBBI")  # 110 bytes, packed
HEADER_V1_SIZE = 4160  # 15+15+4+2 head, 4+8+8+8 fs info, 4096 options
ENDIAN_MAGIC = 0xC0DE
BITMAP_MAGIC_V1 = b"BiTmAgIc"

CSM_NONE, CSM_CRC32, CSM_XXH64, CSM_XXH128 = 0x00, 0x20, 0x30, 0x31
CHECKSUM_SIZES = {CSM_NONE: 0, CSM_CRC32: 4, CSM_XXH64: 8, CSM_XXH128: 16}
CHECKSUM_NAMES = {CSM_NONE: "none", CSM_CRC32: "CRC32", CSM_XXH64: "XXH64", CSM_XXH128: "XXH128"}
BM_NONE, BM_BIT, BM_BYTE = 0x00, 0x01, 0x08

# partclone's own limit on block size.
MAX_BLOCK_SIZE = 64 * 1024 * 1024
# A checksum group is held in memory until its checksum is checked; Clonezilla's
# groups are 10 MiB. Anything far beyond that is a damaged or hostile header.
MAX_GROUP_BYTES = 256 * 1024 * 1024
# The bitmap is held in memory (one bit per block): 1 GiB covers 32 TiB of 4 KiB blocks.
MAX_TOTAL_BLOCKS = 8 * 1024**3
# Output chunks: the manifest's chunk list and what pieces() yields, split here.
CHUNK_BYTES = 4 * 1024 * 1024
# Reading size when the image has no checksums to group by.
_PLAIN_GROUP_BYTES = 4 * 1024 * 1024

# partclone's filesystem names -> blkid's TYPE names.
FS_TYPES = {
    "EXTFS": "ext4",
    "EXT2": "ext2",
    "EXT3": "ext3",
    "EXT4": "ext4",
    "NTFS": "ntfs",
    "FAT": "vfat",
    "FAT12": "vfat",
    "FAT16": "vfat",
    "FAT32": "vfat",
    "EXFAT": "exfat",
    "BTRFS": "btrfs",
    "XFS": "xfs",
    "HFS Plus": "hfsplus",
    "REISERFS": "reiserfs",
    "JFS": "jfs",
    "F2FS": "f2fs",
    "MINIX": "minix",
    "NILFS": "nilfs2",
    "UFS": "ufs",
    "VMFS": "VMFS",
    "APFS": "apfs",
}


def crc32_continue(state: int, data: bytes | memoryview) -> int:
    """partclone's CRC32: reflected 0xEDB88320, seed 0xFFFFFFFF, no final XOR."""
    return zlib.crc32(data, state ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


CRC32_SEED = 0xFFFFFFFF


class PartcloneError(NotAnArchive):
    """A partclone header or bitmap that cannot be right."""


@dataclass(frozen=True)
class PartcloneHeader:
    """The facts of a partclone image header, whatever its format version."""

    image_version: int  # 1 or 2
    partclone_version: str
    filesystem: str  # partclone's name: EXTFS, NTFS, FAT32, raw, ...
    device_size: int
    total_blocks: int
    used_blocks_fs: int  # what the filesystem's superblock said
    used_blocks: int  # bits set in the bitmap, as the header records it
    block_size: int
    checksum_mode: int
    checksum_size: int
    blocks_per_checksum: int
    reseed: bool
    bitmap_mode: int

    @property
    def checksum_name(self) -> str:
        if self.image_version == 1:
            return "CRC32 (format 0001, not checked)"
        return CHECKSUM_NAMES.get(self.checksum_mode, f"mode {self.checksum_mode:#x}")

    @property
    def blkid_type(self) -> str | None:
        return FS_TYPES.get(self.filesystem)


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("ascii", "replace").strip()


def parse_header(head: bytes, name: str = "the image") -> PartcloneHeader:
    """Parse a header from its first bytes: 110 for format 0002, 4160 for 0001.

    Raises :class:`PartcloneError` (or :class:`TruncatedArchive` when ``head`` is
    too short) with a sentence naming what is wrong.
    """
    if len(head) < 36 or not head.startswith(MAGIC):
        raise PartcloneError(
            f"{name} is not a partclone image (it does not start with 'partclone-image')"
        )
    version = head[30:34]
    if version == b"0002":
        return _parse_v2(head, name)
    if version == b"0001":
        return _parse_v1(head, name)
    raise PartcloneError(
        f"{name} is a partclone image of format {version.decode('ascii', 'replace')!r}, "
        "which restore-tui does not know (it reads formats 0001 and 0002)"
    )


def _parse_v2(head: bytes, name: str) -> PartcloneHeader:
    if len(head) < HEADER_V2.size:
        raise TruncatedArchive(f"{name} ends inside its partclone header")
    raw = head[: HEADER_V2.size]
    (
        magic,
        ptc_version,
        _version,
        endian,
        fs,
        device_size,
        total,
        used_fs,
        used,
        block_size,
        _feature_size,
        _image_version,
        _cpu_bits,
        cs_mode,
        cs_size,
        bpc,
        reseed,
        bitmap_mode,
        crc,
    ) = HEADER_V2.unpack(raw)
    if magic != MAGIC_V2:
        raise PartcloneError(f"{name} is not a partclone image (damaged magic)")
    if crc32_continue(CRC32_SEED, raw[:-4]) != crc:
        raise PartcloneError(
            f"{name}: the partclone header's checksum does not match: the header is damaged"
        )
    if endian != ENDIAN_MAGIC:
        raise PartcloneError(
            f"{name} was written on a big-endian machine; restore-tui reads only "
            "little-endian partclone images"
        )
    header = PartcloneHeader(
        image_version=2,
        partclone_version=_text(ptc_version),
        filesystem=_text(fs),
        device_size=device_size,
        total_blocks=total,
        used_blocks_fs=used_fs,
        used_blocks=used,
        block_size=block_size,
        checksum_mode=cs_mode,
        checksum_size=cs_size,
        blocks_per_checksum=bpc,
        reseed=reseed != 0,
        bitmap_mode=bitmap_mode,
    )
    _check_header(header, name)
    return header


def _parse_v1(head: bytes, name: str) -> PartcloneHeader:
    if len(head) < HEADER_V1_SIZE:
        raise TruncatedArchive(f"{name} ends inside its partclone header (format 0001)")
    block_size, device_size, total, used = struct.unpack_from("<iQQQ", head, 36)
    header = PartcloneHeader(
        image_version=1,
        partclone_version="< 0.3.0",
        filesystem=_text(head[15:30]),
        device_size=device_size,
        total_blocks=total,
        used_blocks_fs=used,
        used_blocks=used,
        block_size=block_size,
        # Format 0001 stores a 4-byte CRC after every block, computed by a routine
        # that only ever looked at each block's first byte: useless for integrity.
        checksum_mode=CSM_CRC32,
        checksum_size=4,
        blocks_per_checksum=1,
        reseed=False,
        bitmap_mode=BM_BYTE,
    )
    _check_header(header, name)
    return header


def _check_header(h: PartcloneHeader, name: str) -> None:
    problems: list[str] = []
    if not 0 < h.block_size <= MAX_BLOCK_SIZE:
        problems.append(f"block size {h.block_size} is impossible")
    if h.total_blocks > MAX_TOTAL_BLOCKS:
        problems.append(f"{h.total_blocks} blocks is more than restore-tui can map")
    if h.used_blocks > h.total_blocks:
        problems.append(f"{h.used_blocks} used blocks of only {h.total_blocks}")
    if h.block_size > 0 and h.total_blocks * h.block_size > h.device_size:
        problems.append(
            f"{h.total_blocks} blocks of {h.block_size} bytes do not fit in the "
            f"{h.device_size}-byte partition it records"
        )
    if h.device_size >= 2**63:
        problems.append(f"partition size {h.device_size} is impossible")
    if h.image_version == 2:
        if h.checksum_mode not in CHECKSUM_SIZES:
            problems.append(f"unknown checksum kind {h.checksum_mode:#x}")
        elif CHECKSUM_SIZES[h.checksum_mode] != h.checksum_size:
            problems.append(
                f"checksum size {h.checksum_size} does not fit checksum kind "
                f"{CHECKSUM_NAMES[h.checksum_mode]}"
            )
        if h.checksum_mode != CSM_NONE:
            if h.blocks_per_checksum == 0:
                problems.append("a checksum every 0 blocks is impossible")
            elif h.blocks_per_checksum * h.block_size > MAX_GROUP_BYTES:
                problems.append(
                    f"a checksum only every {h.blocks_per_checksum} blocks is more data "
                    "than restore-tui checks at once"
                )
        if h.bitmap_mode not in (BM_NONE, BM_BIT, BM_BYTE):
            problems.append(f"unknown bitmap kind {h.bitmap_mode:#x}")
        if h.bitmap_mode == BM_NONE and h.used_blocks != h.total_blocks:
            problems.append("an image without a bitmap must store every block")
    if problems:
        raise PartcloneError(f"{name}: the partclone header is damaged: " + "; ".join(problems))


# For each byte value, the runs of set bits inside it as (first bit, count).
def _byte_runs(value: int) -> tuple[tuple[int, int], ...]:
    runs: list[tuple[int, int]] = []
    bit = 0
    while bit < 8:
        if value >> bit & 1:
            start = bit
            while bit < 8 and value >> bit & 1:
                bit += 1
            runs.append((start, bit - start))
        else:
            bit += 1
    return tuple(runs)


_BYTE_RUNS = tuple(_byte_runs(v) for v in range(256))
_NONZERO = re.compile(rb"[^\x00]+")
_FULL_OR_MIXED = re.compile(rb"\xff+|[^\xff]")


def bitmap_runs(bitmap: bytes, total_blocks: int) -> Iterator[tuple[int, int]]:
    """Runs of used blocks as (first block, count), ascending, adjacent runs merged.

    Bit ``i`` of the bitmap is bit ``i % 8`` of byte ``i // 8``, least significant
    first. Bits at or past ``total_blocks`` are ignored. Whole 0x00 and 0xFF bytes
    are handled by regular expressions, so typical bitmaps cost little Python.
    """
    run_start = -1
    run_stop = -1
    for span in _NONZERO.finditer(bitmap):
        base = span.start()
        for part in _FULL_OR_MIXED.finditer(span.group()):
            first_byte = base + part.start()
            if part.group()[0] == 0xFF:
                pieces: tuple[tuple[int, int], ...] = ((0, 8 * (part.end() - part.start())),)
            else:
                pieces = _BYTE_RUNS[part.group()[0]]
            for bit, count in pieces:
                start = first_byte * 8 + bit
                stop = min(start + count, total_blocks)
                if start >= stop:
                    continue
                if start == run_stop:
                    run_stop = stop
                    continue
                if run_stop > run_start >= 0:
                    yield run_start, run_stop - run_start
                run_start, run_stop = start, stop
    if run_stop > run_start >= 0:
        yield run_start, run_stop - run_start


def count_used(bitmap: bytes, total_blocks: int) -> int:
    whole, rest = divmod(total_blocks, 8)
    used = int.from_bytes(bitmap[:whole], "little").bit_count()
    if rest:
        used += (bitmap[whole] & ((1 << rest) - 1)).bit_count()
    return used


_BYTEMAP_TO_ASCII = bytes.maketrans(bytes(range(256)), b"0" + b"1" + b"0" * 254)


def bytemap_to_bitmap(bytemap: bytes) -> bytes:
    """partclone's byte-per-block map (1 = used) turned into the bit form."""
    out = bytearray()
    step = 1 << 16  # a multiple of 8, so each piece packs into whole bytes
    for i in range(0, len(bytemap), step):
        piece = bytemap[i : i + step].translate(_BYTEMAP_TO_ASCII)
        # Reversed, the ASCII digits are the number whose bit k is block k.
        out += int(piece[::-1] or b"0", 2).to_bytes((len(piece) + 7) // 8, "little")
    return bytes(out)


def chunk_ranges(
    runs: Iterator[tuple[int, int]], block_size: int, max_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[int, int]]:
    """Used-block runs as (byte offset, length) pieces of at most ``max_bytes``."""
    per_chunk = max(1, max_bytes // block_size)
    for first, count in runs:
        done = 0
        while done < count:
            n = min(per_chunk, count - done)
            yield (first + done) * block_size, n * block_size
            done += n


class _Checksum:
    """The running checksum partclone writes after every group of blocks."""

    def __init__(self, mode: int, reseed: bool) -> None:
        self.mode = mode
        self.reseed = reseed
        self._crc = CRC32_SEED
        self._xxh: xxhash.xxh64 | xxhash.xxh3_128 | None = None
        self._fresh()

    def _fresh(self) -> None:
        self._crc = CRC32_SEED
        if self.mode == CSM_XXH64:
            self._xxh = xxhash.xxh64(seed=0)
        elif self.mode == CSM_XXH128:
            self._xxh = xxhash.xxh3_128(seed=0)

    def update(self, data: bytes | memoryview) -> None:
        if self.mode == CSM_CRC32:
            self._crc = crc32_continue(self._crc, data)
        elif self._xxh is not None:
            self._xxh.update(data)

    def digest(self) -> bytes:
        """The stored form: little-endian, as partclone's memcpy of the C value."""
        if self.mode == CSM_CRC32:
            value = self._crc.to_bytes(4, "little")
        elif self.mode == CSM_XXH64 and self._xxh is not None:
            value = self._xxh.intdigest().to_bytes(8, "little")
        elif self._xxh is not None:
            # XXH128_hash_t is {low64, high64}: the 128-bit value little-endian.
            value = self._xxh.intdigest().to_bytes(16, "little")
        else:
            value = b""
        if self.reseed:
            self._fresh()
        return value


class PartcloneReader:
    """One partclone image stream: header and bitmap read at once, blocks on demand.

    ``partition`` and ``base_offset`` (the partition's first byte on the disk) only
    shape error reports, so a checksum failure names the partition, the block
    and the disk offset.
    """

    def __init__(
        self,
        stream: ImageStream,
        *,
        name: str,
        partition: int | None = None,
        base_offset: int = 0,
    ) -> None:
        self.stream = stream
        self.name = name
        self.partition = partition
        self.base_offset = base_offset
        head = stream.read_exact(HEADER_V2.size, "the partclone header")
        if head[30:34] == b"0001" and head.startswith(MAGIC):
            head += stream.read_exact(HEADER_V1_SIZE - HEADER_V2.size, "the partclone header")
        self.header = parse_header(head, name)
        #: the header as stored (after decompression): part of an image's identity
        self.header_bytes = bytes(head)
        self.bitmap = self._read_bitmap()
        self.used_blocks = count_used(self.bitmap, self.header.total_blocks)
        self._started = False

    # -- structure -------------------------------------------------------------------

    def _read_bitmap(self) -> bytes:
        h = self.header
        total = h.total_blocks
        if h.bitmap_mode == BM_NONE:
            ones = b"\xff" * (total // 8)
            if total % 8:
                ones += bytes([(1 << (total % 8)) - 1])
            return ones
        if h.bitmap_mode == BM_BIT:
            bitmap = self.stream.read_exact((total + 7) // 8, "the used-block bitmap")
        else:
            bitmap = bytemap_to_bitmap(self.stream.read_exact(total, "the used-block map"))
        if h.image_version == 1:
            if self.stream.read_exact(8, "the bitmap's end mark") != BITMAP_MAGIC_V1:
                raise PartcloneError(
                    f"{self.name}: the used-block map does not end with partclone's mark: "
                    "the image is damaged"
                )
        else:
            stored = int.from_bytes(self.stream.read_exact(4, "the bitmap's checksum"), "little")
            if crc32_continue(CRC32_SEED, bitmap) != stored:
                raise PartcloneError(
                    f"{self.name}: the used-block bitmap's checksum does not match: the "
                    "image is damaged, so restore-tui cannot tell which blocks it holds"
                )
        return bitmap

    def runs(self) -> Iterator[tuple[int, int]]:
        """Used blocks as (first block, count), ascending, merged."""
        return bitmap_runs(self.bitmap, self.header.total_blocks)

    def chunk_ranges(self, max_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, int]]:
        """(partition byte offset, length) of every piece :meth:`chunks` yields."""
        return chunk_ranges(self.runs(), self.header.block_size, max_bytes)

    @property
    def used_bytes(self) -> int:
        return self.used_blocks * self.header.block_size

    @property
    def checks_data(self) -> bool:
        """False when the image has nothing that proves its data sound."""
        return self.header.image_version == 2 and self.header.checksum_mode != CSM_NONE

    def block_of(self, ordinal: int) -> int:
        """The filesystem block number of the ``ordinal``-th stored block."""
        seen = 0
        for first, count in self.runs():
            if ordinal < seen + count:
                return first + ordinal - seen
            seen += count
        return self.header.total_blocks

    # -- data ------------------------------------------------------------------------

    def _damage(self, first_ordinal: int, count: int) -> CorruptData:
        h = self.header
        bs = h.block_size
        first = self.block_of(first_ordinal)
        last = self.block_of(first_ordinal + count - 1)
        who = f"partition {self.partition} ({self.name})" if self.partition else self.name
        return CorruptData(
            f"{who}: partclone's {h.checksum_name} checksum does not match for blocks "
            f"{first}-{last} (bytes {first * bs}-{(last + 1) * bs - 1} of the partition): "
            "the image is damaged there",
            partition=self.partition,
            offset=self.base_offset + first * bs,
        )

    def _checked_groups(self) -> Iterator[tuple[int, bytes, bool]]:
        """(first stored-block ordinal, data, checksum matched) for every group, in order."""
        if self._started:
            raise ArchiveError(f"{self.name}: the image stream was already read")
        self._started = True
        if self.header.image_version == 1:
            yield from self._groups_v1()
            return
        h = self.header
        bs = h.block_size
        total = self.used_blocks
        checked = h.checksum_mode != CSM_NONE
        per_group = h.blocks_per_checksum if checked else max(1, _PLAIN_GROUP_BYTES // bs)
        checksum = _Checksum(h.checksum_mode, h.reseed)
        done = 0
        while done < total:
            n = min(per_group, total - done)
            data = self.stream.read_exact(n * bs, f"used blocks {done}-{done + n - 1}")
            ok = True
            if checked:
                stored = self.stream.read_exact(h.checksum_size, "a block checksum")
                checksum.update(data)
                ok = checksum.digest() == stored
            yield done, data, ok
            done += n

    def _groups_v1(self) -> Iterator[tuple[int, bytes, bool]]:
        # Every block is followed by 4 checksum bytes (8 in images from an old
        # 64-bit partclone with a known bug). Those checksums come from a routine
        # that only looked at each block's first byte, so they prove nothing about
        # the data and are never used to accept or refuse it; their value is only
        # used to tell the 4-byte layout from the 8-byte one.
        bs = self.header.block_size
        total = self.used_blocks
        stride = 4
        pending = b""
        if total >= 2:
            pending = self.stream.read_exact(2 * bs + 8, "the first blocks")
            pending += self.stream.read(4)
            crc0 = _crc32_0001(CRC32_SEED, pending[0], bs)
            narrow = _crc32_0001(crc0, pending[bs + 4], bs).to_bytes(4, "little")
            wide = _crc32_0001(crc0, pending[bs + 8], bs).to_bytes(4, "little")
            if (
                pending[bs : bs + 4] == crc0.to_bytes(4, "little")
                and pending[2 * bs + 4 : 2 * bs + 8] != narrow
                and pending[2 * bs + 8 : 2 * bs + 12] == wide
            ):
                stride = 8
        per_batch = max(1, _PLAIN_GROUP_BYTES // bs)
        done = 0
        while done < total:
            n = min(per_batch, total - done)
            need = n * (bs + stride) - len(pending)
            raw = pending + (self.stream.read_exact(need, "used blocks") if need > 0 else b"")
            pending = raw[n * (bs + stride) :]
            view = memoryview(raw)
            step = bs + stride
            yield done, b"".join(view[i * step : i * step + bs] for i in range(n)), True
            done += n

    def groups(self) -> Iterator[bytes]:
        """The stored blocks in order, a checksum group at a time, each checked first.

        A format 0002 group whose checksum does not match raises
        :class:`CorruptData` before any of its bytes are yielded. Format 0001
        data cannot be checked (see :meth:`_groups_v1`). Call once per reader.
        """
        for first, data, ok in self._checked_groups():
            if not ok:
                raise self._damage(first, len(data) // self.header.block_size)
            yield data

    def chunks(self, start: int = 0, max_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
        """Checked data as (partition byte offset, bytes), one item per chunk range.

        Chunks that end at or before ``start`` (a partition byte offset) are read
        and checked but neither copied nor yielded, so a resume skips them cheaply.
        """
        groups = self.groups()
        buffer = bytearray()
        position = 0  # bytes of ``buffer`` already handed out or skipped
        skip = 0  # stream bytes still to pass over before the next chunk we keep
        for offset, length in self.chunk_ranges(max_bytes):
            if offset + length <= start:
                skip += length
                continue
            # Pass over skipped bytes without copying: whole groups are dropped.
            while skip:
                available = len(buffer) - position
                if available >= skip:
                    position += skip
                    skip = 0
                    break
                skip -= available
                buffer.clear()
                position = 0
                group = next(groups, None)
                if group is None:
                    raise self._short()
                if len(group) <= skip:
                    skip -= len(group)
                else:
                    buffer += group
            while len(buffer) - position < length:
                group = next(groups, None)
                if group is None:
                    raise self._short()
                if position:
                    del buffer[:position]
                    position = 0
                buffer += group
            yield offset, bytes(buffer[position : position + length])
            position += length
        # Drain the rest so every checksum is still checked (a resume that starts
        # past the last chunk still proves the image's end sound).
        for _ in groups:
            pass

    def _short(self) -> TruncatedArchive:
        return TruncatedArchive(f"{self.name} holds fewer blocks than its bitmap says")

    def verify(self, progress: Callable[[int], None] | None = None) -> list[CorruptData]:
        """Read every block; the checksum failures found, in order (never raises for them).

        With reseeded checksums each group stands alone, so reading goes on past
        a bad group; without reseeding every later checksum fails too, so only the
        first failure is reported.
        """
        damage: list[CorruptData] = []
        for first, data, ok in self._checked_groups():
            if not ok:
                damage.append(self._damage(first, len(data) // self.header.block_size))
                if not self.header.reseed:
                    break
            if progress is not None:
                progress(len(data))
        return damage


def _crc32_0001(seed: int, first_byte: int, size: int) -> int:
    """Format 0001's buggy CRC: the block's first byte, ``size`` times over."""
    return crc32_continue(seed, bytes([first_byte]) * size)


def open_reader(
    base: Path, *, name: str | None = None, partition: int | None = None, base_offset: int = 0
) -> PartcloneReader:
    """Open the partclone image ``base`` (split and compressed as Clonezilla saves them)."""
    stream = ImageStream(image_files(base))
    try:
        return PartcloneReader(
            stream, name=name or base.name, partition=partition, base_offset=base_offset
        )
    except BaseException:
        stream.close()
        raise


def image_chunks(reader: PartcloneReader, base_offset: int) -> tuple[Chunk, ...]:
    """The manifest chunks of one image: its used-block runs, on the disk, at most 4 MiB each."""
    return tuple(
        Chunk(offset=base_offset + offset, length=length, kind="data")
        for offset, length in reader.chunk_ranges()
    )


def image_pieces(
    reader: PartcloneReader, base_offset: int, start: int
) -> Generator[Piece, None, None]:
    """Checked pieces of one image on the disk, skipping those that end at or before ``start``."""
    try:
        for offset, data in reader.chunks(max(0, start - base_offset)):
            yield Piece(base_offset + offset, len(data), data)
    finally:
        reader.stream.close()


# -- the NTFS backup boot sector ---------------------------------------------------------
# partclone's NTFS images leave out the volume's last sector, the backup boot sector,
# so a restore onto a blank disk would leave old bytes there, and ntfsfix and Windows'
# chkdsk find the volume damaged. It is a copy of the boot sector, which the image
# holds: readers of partclone images add it to what is restored.

NTFS_OEM_ID = b"NTFS    "


def ntfs_backup_chunk(
    chunks: tuple[Chunk, ...], stop: int, sector_size: int
) -> tuple[tuple[Chunk, ...], int | None]:
    """``chunks`` plus the partition's last sector (ending at disk byte ``stop``), and that
    sector's offset; the offset is None when the image already stores it."""
    last = stop - sector_size
    if chunks and chunks[-1].stop > last:
        return chunks, None
    return (*chunks, Chunk(offset=last, length=sector_size, kind="data")), last


def _not_ntfs(number: int | None, base: int) -> CorruptData:
    return CorruptData(
        f"partition {number}'s image does not start with an NTFS boot sector, so its "
        "backup boot sector cannot be rebuilt; the image is damaged or not NTFS",
        partition=number,
        offset=base,
    )


def ntfs_boot_sector(reader: PartcloneReader, base: int, sector_size: int) -> bytes:
    """The NTFS boot sector, read (checked) from the image's first block; closes ``reader``."""
    pieces = image_pieces(reader, base, 0)
    try:
        first = next(pieces, None)
    finally:
        pieces.close()  # closes the image file; only the first block is needed
    if first is None or first.offset != base or first.data is None:
        raise _not_ntfs(reader.partition, base)
    boot = bytes(first.data[:sector_size])
    if boot[3:11] != NTFS_OEM_ID:
        raise _not_ntfs(reader.partition, base)
    return boot


def append_ntfs_backup(
    pieces: Iterator[Piece],
    *,
    number: int,
    base: int,
    backup_offset: int,
    start: int,
    sector_size: int,
    boot_sector: Callable[[], bytes],
) -> Generator[Piece, None, None]:
    """``pieces`` of an NTFS partition, then its backup boot sector: a copy of the boot
    sector seen on the way, or ``boot_sector()`` when resumed past it."""
    boot: bytes | None = None
    try:
        for piece in pieces:
            if boot is None and piece.offset == base and piece.data is not None:
                boot = bytes(piece.data[:sector_size])
            yield piece
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
    if backup_offset + sector_size <= start:
        return
    if boot is None:
        boot = boot_sector()
    elif boot[3:11] != NTFS_OEM_ID:
        raise _not_ntfs(number, base)
    yield Piece(backup_offset, sector_size, boot)


# A lone partclone image has no disk around it: present it as a disk holding one
# partition at the usual 1 MiB, so planning a one-partition restore works as for
# any archive.
SINGLE_START_LBA = 2048
SECTOR = 512
_MBR_TYPES = {"ntfs": 0x07, "exfat": 0x07, "vfat": 0x0C}


class PartcloneImageArchive(Archive):
    """A single partclone image file (``partclone.<fs> -c``), whole or split, any compression."""

    format_name = "partclone image"

    def __init__(self, path: Path) -> None:
        self.path = path
        reader = open_reader(path, partition=1, base_offset=SINGLE_START_LBA * SECTOR)
        try:
            self.header = reader.header
            self._header_bytes = reader.header_bytes
            self._checks_data = reader.checks_data
            h = reader.header
            length_lba = max(1, -(-h.device_size // SECTOR))
            fs = h.blkid_type
            partition = Partition(
                number=1,
                start_lba=SINGLE_START_LBA,
                length_lba=length_lba,
                mbr_type=_MBR_TYPES.get(fs or "", 0x83),
                filesystem=fs,
            )
            table = PartitionTable(
                scheme="msdos",
                sector_size=SECTOR,
                disk_size_lba=SINGLE_START_LBA + length_lba,
                partitions=(partition,),
            )
            role, evidence = infer_role(partition, table)
            chunks = image_chunks(reader, SINGLE_START_LBA * SECTOR)
            self.ntfs_backup: int | None = None
            if fs == "ntfs":
                stop = (SINGLE_START_LBA + length_lba) * SECTOR
                chunks, self.ntfs_backup = ntfs_backup_chunk(chunks, stop, SECTOR)
            image = PartitionImage(
                number=1,
                role=role,
                role_evidence=evidence,
                used_bytes=reader.used_bytes,
                capture="used-blocks",
                capture_note=(
                    f"partclone {h.partclone_version} image of a {h.filesystem} filesystem, "
                    f"checksums: {h.checksum_name}"
                ),
                chunks=chunks,
            )
        finally:
            reader.stream.close()
        # A partclone image records no date: its modification time is all there is
        # (a copy changes it; identity() leaves it out).
        created = datetime.fromtimestamp(path_mtime(path), tz=UTC)
        self.manifest = ArchiveManifest(
            created=created,
            creator=f"partclone {h.partclone_version}",
            source=SourceDisk(
                identity=DiskIdentity(size_bytes=table.disk_size_lba * SECTOR, bus="image"),
                device=str(path),
            ),
            table=table,
            boot=BootArea(
                boot_code="00" * 440, sector0="00" * SECTOR, track0=(), track0_stop=SECTOR
            ),
            partitions=(image,),
        )

    def _content_identity(self) -> str:
        """The manifest without ``created`` and the path, the files' names and sizes, the header.

        Split parts count each by name and size; the header is partclone's own
        (110 bytes, or 4160 for format 0001), already read on opening.
        """
        content = manifest_content(self.manifest)
        content["source"].pop("device", None)  # the path this image was opened from
        files = [[part.name, part.stat().st_size] for part in split_parts(self.path)]
        return sha256_hex(
            canonical_json(
                {
                    "format": "partclone image",
                    "manifest": content,
                    "files": files,
                    "header": hashlib.sha256(self._header_bytes).hexdigest(),
                }
            )
        )

    def unchecked(self) -> tuple[Unchecked, ...]:
        """The partition's data, when the image carries no usable checksums.

        A lone image has no boot code or track 0 of its own (restore-tui presents it
        as a disk with one partition and restores only that partition).
        """
        if self._checks_data:
            return ()
        return (Unchecked(area="partition", partition=1, reason="image-has-no-checksums"),)

    def pieces(self, area: Area, start: int = 0) -> Iterator[Piece]:
        if area == TRACK0:
            return iter(())
        if area != 1:
            raise KeyError(f"partition {area} is not in this backup (a partclone image holds one)")
        base = SINGLE_START_LBA * SECTOR
        pieces = image_pieces(open_reader(self.path, partition=1, base_offset=base), base, start)
        if self.ntfs_backup is None:
            return pieces
        return append_ntfs_backup(
            pieces,
            number=1,
            base=base,
            backup_offset=self.ntfs_backup,
            start=start,
            sector_size=SECTOR,
            boot_sector=self._ntfs_boot_sector,
        )

    def _ntfs_boot_sector(self) -> bytes:
        base = SINGLE_START_LBA * SECTOR
        return ntfs_boot_sector(open_reader(self.path, partition=1, base_offset=base), base, SECTOR)

    def verify(self, progress: ProgressCallback | None = None) -> VerifyReport:
        report = VerifyReport()
        total = self.manifest.stored_bytes()
        base = SINGLE_START_LBA * SECTOR
        try:
            reader = open_reader(self.path, partition=1, base_offset=base)
        except ArchiveError as exc:
            report.damage.append(Damage(None, 0, str(exc)))
            return report
        try:
            damage = verify_reader(reader, report, progress, total)
            report.damage.extend(damage)
        finally:
            reader.stream.close()
        if self.ntfs_backup is not None and not damage:
            # The rebuilt backup boot sector: a copy of the (now verified) boot sector.
            try:
                self._ntfs_boot_sector()
                report.checked_bytes += SECTOR
                report.checked_chunks += 1
            except ArchiveError as exc:
                report.damage.append(Damage(1, self.ntfs_backup, str(exc)))
            if progress is not None:
                progress(report.checked_bytes, total)
        return report


def verify_reader(
    reader: PartcloneReader,
    report: VerifyReport,
    progress: ProgressCallback | None,
    total: int,
    done_before: int = 0,
) -> list[Damage]:
    """Check every group of ``reader``, counting into ``report``; damage as :class:`Damage`."""

    def step(n: int) -> None:
        report.checked_bytes += n
        report.checked_chunks += 1
        if progress is not None:
            progress(done_before + report.checked_bytes, total)

    found: list[Damage] = []
    start = report.checked_bytes
    try:
        for exc in reader.verify(step):
            found.append(Damage(exc.partition, exc.offset, str(exc)))
    except CorruptData as exc:  # the compressed stream itself is damaged
        found.append(Damage(reader.partition, reader.base_offset, str(exc)))
    except ArchiveError as exc:  # truncated: name the disk offset reached
        reached = reader.base_offset + (report.checked_bytes - start)
        found.append(Damage(reader.partition, reached, str(exc)))
    return found


def path_mtime(path: Path) -> float:
    """Modification time of an image (its first split part when split)."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return split_parts(path)[0].stat().st_mtime


def open_partclone_image(path: Path | str) -> PartcloneImageArchive:
    """Open one partclone image file (``open_archive`` calls this for such files)."""
    return PartcloneImageArchive(Path(path))


def looks_like_partclone(head: bytes) -> bool:
    """True when decompressed bytes start like a partclone image (for ``open_archive``)."""
    return head.startswith(MAGIC) and head[30:34] in (b"0001", b"0002")

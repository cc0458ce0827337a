"""Random-access, read-only bytes of one backed-up partition, as if it were a disk.

``open_view(archive, number).read(offset, length)`` serves any byte range of the
partition: a binary search finds the chunks it needs, only those are decompressed
(each checked against its SHA-256 first), a small LRU cache keeps the last few, and
blocks the backup did not store read as zeros. A native archive's chunks are
independent zstd frames, so this is cheap; a raw disk image is read in place.
Clonezilla and partclone images are one compressed stream each and cannot be
read this way: :class:`NeedsConversion` says so.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections import OrderedDict
from typing import Protocol

from archive.base import Archive
from archive.errors import ArchiveError
from archive.manifest import Chunk
from archive.native import NativeArchive
from archive.raw import RawDiskImage

#: decompressed bytes kept; 8 of our 4 MiB chunks. A directory walk or a file read
#: touches the same chunk many times in a row, so a few are enough to make it cheap,
#: and memory stays bounded however large the backup is.
CACHE_BYTES = 32 * 1024 * 1024


class NeedsConversion(ArchiveError):
    """The backup's partitions are compressed streams: no random access without converting."""


class PartitionBytes(Protocol):
    """What a mount needs of a partition: its size and any byte range of it."""

    number: int
    size: int

    def read(self, offset: int, length: int) -> bytes: ...


class PartitionView:
    """One partition of a native archive, readable at any offset.

    ``decompressed`` counts chunks decompressed so far (cache misses), so tests
    and benchmarks can see that a read near the end did not touch the start.
    Thread-safe: one lock around the cache.
    """

    def __init__(
        self, archive: NativeArchive, number: int, *, cache_bytes: int = CACHE_BYTES
    ) -> None:
        manifest = archive.manifest
        try:
            entry = manifest.table.partition(number)
            image = manifest.image(number)
        except KeyError:
            raise ArchiveError(f"partition {number} is not in this backup") from None
        ss = manifest.table.sector_size
        self.archive = archive
        self.number = number
        self.base = entry.start_lba * ss  # where the partition starts on the source disk
        self.size = entry.length_lba * ss
        self._chunks: tuple[Chunk, ...] = image.chunks
        self._starts = [c.offset for c in image.chunks]  # sorted: the manifest checks it
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cached_bytes = 0
        self._cache_limit = cache_bytes
        self._lock = threading.Lock()
        self.decompressed = 0
        self.data_chunks = sum(1 for c in image.chunks if c.kind == "data")

    def read(self, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)`` of the partition, short only at its end.

        Raises :class:`archive.errors.CorruptData` (naming partition and offset)
        when a chunk the range needs does not match its checksum: never wrong bytes.
        """
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        stop = min(self.size, offset + length)
        if offset >= stop:
            return b""
        lo, hi = self.base + offset, self.base + stop
        out = bytearray(hi - lo)  # zeros: what the backup did not store
        with self._lock:
            # The last chunk starting at or before `lo`, then forward while they overlap.
            i = max(0, bisect.bisect_right(self._starts, lo) - 1)
            while i < len(self._chunks) and self._chunks[i].offset < hi:
                chunk = self._chunks[i]
                i += 1
                if chunk.stop <= lo or chunk.kind == "zero":
                    continue
                data = self._chunk(chunk)
                a, b = max(chunk.offset, lo), min(chunk.stop, hi)
                out[a - lo : b - lo] = data[a - chunk.offset : b - chunk.offset]
        return bytes(out)

    def _chunk(self, chunk: Chunk) -> bytes:
        cached = self._cache.get(chunk.offset)
        if cached is not None:
            self._cache.move_to_end(chunk.offset)
            return cached
        data = self.archive.chunk_data(self.number, chunk)  # checked before use
        self.decompressed += 1
        self._cache[chunk.offset] = data
        self._cached_bytes += len(data)
        while self._cached_bytes > self._cache_limit and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= len(dropped)
        return data

    @property
    def cached_chunks(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        """Drop the cache (the archive stays open: its owner closes it)."""
        with self._lock:
            self._cache.clear()
            self._cached_bytes = 0


class RawPartitionView:
    """One partition of a raw disk image, read in place (nothing to decompress or check)."""

    def __init__(self, archive: RawDiskImage, number: int) -> None:
        manifest = archive.manifest
        try:
            entry = manifest.table.partition(number)
        except KeyError:
            raise ArchiveError(f"partition {number} is not in this backup") from None
        ss = manifest.table.sector_size
        self.number = number
        self.base = entry.start_lba * ss
        self.size = entry.length_lba * ss
        self._fd = os.open(archive.path, os.O_RDONLY | os.O_CLOEXEC)
        self.decompressed = 0
        self.data_chunks = 0

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        stop = min(self.size, offset + length)
        if offset >= stop:
            return b""
        data = os.pread(self._fd, stop - offset, self.base + offset)
        # A file cut short reads as zeros past its end, like blocks never stored.
        return data + bytes(stop - offset - len(data))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def readable_partitions(archive: Archive) -> list[int]:
    """Numbers of the partitions a view can show: stored ones, not extended containers."""
    table = archive.manifest.table
    numbers = []
    for image in archive.manifest.partitions:
        if image.capture == "none" or table.partition(image.number).kind == "extended":
            continue
        numbers.append(image.number)
    return numbers


def open_view(archive: Archive, number: int) -> PartitionView | RawPartitionView:
    """The random-access view of partition ``number``; NeedsConversion for stream formats."""
    if isinstance(archive, NativeArchive):
        return PartitionView(archive, number)
    if isinstance(archive, RawDiskImage):
        return RawPartitionView(archive, number)
    raise NeedsConversion(
        f"{archive.path} is a {archive.format_name}: each partition in it is one compressed "
        "stream, which cannot be read at random offsets"
    )

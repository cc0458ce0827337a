"""The native restore-tui archive: one file of independent zstd frames and a manifest.

Layout: a 64-byte header, the data frames, the zstd-compressed manifest JSON, and a
64-byte footer that locates the manifest, so the manifest is read without the data.

Header (little-endian): magic ``RTUI-ARC``, format version (u32), header size (u32),
total file length (u64, patched in when the backup finishes; 0 means it never did),
36 reserved zero bytes, CRC-32 of the previous 60 bytes.

Footer: manifest offset (u64), manifest length (u64), SHA-256 of the stored
(compressed) manifest bytes, format version (u32), CRC-32 of the previous 52 bytes,
magic ``RTUI-END``.

Each data chunk is one zstd frame of at most 4 MiB raw bytes with its content size
written, so a reader allocates exactly what the manifest promises; the digest of the
raw bytes (BLAKE3; SHA-256 in manifests of schema version 1, ``archive.digest``) is in
the manifest and is checked before any byte is handed out. Frames are read by direct
I/O (``layout.blockio.DirectReader``): each is read once, so the page cache would only
cost a copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import zstandard
from pydantic import ValidationError

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
from archive.digest import CURRENT, chunk_matches, digest_hex, readback_digest
from archive.errors import (
    ArchiveError,
    CorruptData,
    ManifestInvalid,
    NotAnArchive,
    TruncatedArchive,
    UnsupportedVersion,
)
from archive.manifest import MAX_CHUNK_BYTES, SCHEMA_VERSION, ArchiveManifest, Chunk
from layout.blockio import DirectReader
from layout.blocks import Block, BlockPool, block_bytes

MAGIC = b"RTUI-ARC"
FOOTER_MAGIC = b"RTUI-END"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sIIQ36sI")
FOOTER = struct.Struct("<QQ32sII8s")
assert HEADER.size == 64 and FOOTER.size == 64

#: raw bytes per data frame; small enough to verify and resume chunk by chunk
CHUNK_BYTES = 4 * 1024 * 1024
#: zero detection works on 4 KiB pages; a zero run inside a block becomes its own
#: zero chunk only from this length on, so the manifest stays small
PAGE = 4096
MIN_ZERO_RUN = 64 * 1024
#: a manifest for a multi-terabyte disk is tens of MiB of JSON; anything beyond
#: this bound is hostile and is refused before it is decompressed in full
MAX_MANIFEST_RAW = 512 * 1024 * 1024
ZSTD_LEVEL = 3
#: bytes decompressed ahead of a restore's writes: when the target pauses (a flush, a
#: moment of contention with the read-back) decompression goes on, and the writes then
#: find their data ready instead of waiting for it. A budget of bytes, not a number of
#: chunks, so a restore holds as much whatever its chunks' sizes (a zero chunk holds
#: none, a chunk of a nearly empty filesystem little) and its memory is the same on
#: every disk; 12 whole chunks, as many as the count of chunks that bounded it before.
RESTORE_AHEAD_BYTES = 12 * CHUNK_BYTES
#: and at most this many chunks (zero chunks, which hold no bytes, among them)
RESTORE_AHEAD_CHUNKS = 64
#: idle decoding blocks kept for reuse (``layout.blocks``): as many as are lent out at
#: once in a restore — the bytes decoded ahead, the target writer's requests in flight
#: and the one it gathers (``restore_tui.writer``), the chunks being decoded
KEEP_BLOCKS_BYTES = RESTORE_AHEAD_BYTES + 16 * CHUNK_BYTES

_ZERO_PAGE = bytes(PAGE)
_ZERO_BLOCK = bytes(CHUNK_BYTES)

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int,
    in_flight: int,
    name: str = "rtui-chunk",
    cost: Callable[[T], int] | None = None,
    budget: int = 0,
) -> Generator[R, None, None]:
    """``map(fn, items)`` on a thread pool, in input order, with few items in flight.

    zstd and hashlib release the GIL, so a small pool really runs in parallel;
    the bound keeps memory flat (each item is up to a 4 MiB chunk). With ``cost``, the
    items in flight (started, or done and not yet taken) also cost at most ``budget``
    together, or are one item alone. Closing the iterator early cancels what has not
    started. ``name`` prefixes the threads' names (what they do, for a profiler:
    ``bench/where.py``).
    """
    pending: deque[tuple[Future[R], int]] = deque()
    held = 0

    def no_room_for(weight: int) -> bool:
        return len(pending) >= in_flight or (cost is not None and held + weight > budget)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
    try:
        for item in items:
            weight = cost(item) if cost is not None else 0
            # Room is made before the item starts, so what is in flight never exceeds it.
            while pending and no_room_for(weight):
                future, taken = pending.popleft()
                held -= taken
                yield future.result()
            pending.append((pool.submit(fn, item), weight))
            held += weight
        while pending:
            yield pending.popleft()[0].result()
    finally:
        for future, _weight in pending:
            future.cancel()
        pool.shutdown(wait=True)


# ----------------------------------------------------------------------------- writing


def zero_segments(data: bytes, min_run: int = MIN_ZERO_RUN) -> list[tuple[int, int, bool]]:
    """Split a block into ``(start, stop, is_zero)`` runs.

    A whole zero block is one zero run; inside a block only zero runs of whole
    4 KiB pages at least ``min_run`` long are split out (shorter ones compress to
    nearly nothing anyway and would only grow the manifest).
    """
    n = len(data)
    if n == 0:
        return []
    # Comparing with a preallocated zero block is a memcmp: cheap for the common case.
    if data == (_ZERO_BLOCK if n == CHUNK_BYTES else _ZERO_BLOCK[:n]):
        return [(0, n, True)]
    segments: list[tuple[int, int, bool]] = []
    min_pages = max(1, min_run // PAGE)
    run_start = -1  # page index where the current zero run began
    data_start = 0
    page_count = n // PAGE
    for i in range(page_count + 1):
        zero = i < page_count and data[i * PAGE : (i + 1) * PAGE] == _ZERO_PAGE
        if zero:
            if run_start < 0:
                run_start = i
            continue
        if run_start >= 0 and i - run_start >= min_pages:
            if run_start * PAGE > data_start:
                segments.append((data_start, run_start * PAGE, False))
            segments.append((run_start * PAGE, i * PAGE, True))
            data_start = i * PAGE
        run_start = -1
    if data_start < n:
        segments.append((data_start, n, False))
    return segments


_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    # ZstdCompressor objects are not thread-safe: one per worker thread.
    cctx = getattr(_local, "cctx", None)
    if cctx is None:
        cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
        _local.cctx = cctx
    return cctx


def _decompressor() -> zstandard.ZstdDecompressor:
    dctx = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = zstandard.ZstdDecompressor()
        _local.dctx = dctx
    return dctx


def _inflate_into(frame: memoryview, block: Block, length: int) -> bool:
    """Decompress ``frame`` into the first ``length`` bytes of ``block``; False if it
    holds more or fewer bytes than that. Nothing refers to ``frame`` or ``block`` once
    this has returned or raised (the frame's buffer is reused next)."""
    out = block.writable()
    reader = _decompressor().stream_reader(frame, read_across_frames=False)
    try:
        got = 0
        while got < length:
            n = reader.readinto(out[got:length])
            if n == 0:
                break
            got += n
        # One more byte asked for: the frame must end here (and its own checksum, when it
        # has one, is checked on the way).
        return got == length and reader.readinto(bytearray(1)) == 0
    finally:
        reader.close()
        del reader
        out.release()


# (source offset, length, compressed frame or None for zeros, digest hex or None)
_Segment = tuple[int, int, bytes | None, str | None]


def _encode_block(item: tuple[int, bytes]) -> list[_Segment]:
    offset, data = item
    out: list[_Segment] = []
    view = memoryview(data)
    for start, stop, is_zero in zero_segments(data):
        if is_zero:
            out.append((offset + start, stop - start, None, None))
        else:
            raw = view[start:stop]
            out.append(
                (
                    offset + start,
                    stop - start,
                    _compressor().compress(raw),
                    digest_hex(CURRENT, raw),
                )
            )
    return out


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


class NativeWriter:
    """Writes an archive to ``OUT.partial`` and renames it to ``OUT`` only when complete.

    Use as a context manager: any exception (KeyboardInterrupt included) removes
    the partial file, so an interrupted backup never leaves a file that looks whole.
    """

    def __init__(self, path: str | os.PathLike[str], *, workers: int | None = None) -> None:
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.workers = workers or default_workers()
        self._file = open(self.partial, "wb")  # noqa: SIM115 - closed in finish/abort
        self._pos = 0
        self._frames: list[tuple[int, int]] = []
        self._finished = False
        try:
            self._write(self._header(0))
        except BaseException:
            self.abort()
            raise

    @staticmethod
    def _header(file_length: int) -> bytes:
        body = HEADER.pack(MAGIC, FORMAT_VERSION, HEADER.size, file_length, bytes(36), 0)
        return body[:-4] + struct.pack("<I", zlib.crc32(body[:-4]))

    def _write(self, data: bytes) -> int:
        offset = self._pos
        self._file.write(data)
        self._pos += len(data)
        return offset

    def store(
        self,
        read: Callable[[int, int], bytes],
        ranges: Iterable[tuple[int, int]],
        on_bytes: Callable[[int], None] | None = None,
    ) -> tuple[Chunk, ...]:
        """Store source bytes ``[start, stop)`` of each range; return their chunks.

        ``read(offset, length)`` reads the source disk; ``on_bytes(n)`` is told
        how many source bytes were just stored (for progress).
        """

        def blocks() -> Iterator[tuple[int, bytes]]:
            for start, stop in ranges:
                offset = start
                while offset < stop:
                    length = min(CHUNK_BYTES, stop - offset)
                    data = read(offset, length)
                    if len(data) != length:
                        raise OSError(
                            f"the source ended early: wanted {length} bytes at byte {offset}, "
                            f"got {len(data)}"
                        )
                    yield offset, data
                    offset += length

        chunks: list[Chunk] = []
        for segments in ordered_map(
            _encode_block, blocks(), workers=self.workers, in_flight=self.workers + 2
        ):
            for offset, length, frame, digest in segments:
                if frame is None:
                    last = chunks[-1] if chunks else None
                    # Adjacent zero runs merge into one extent, up to the chunk bound.
                    if (
                        last is not None
                        and last.kind == "zero"
                        and last.stop == offset
                        and last.length + length <= MAX_CHUNK_BYTES
                    ):
                        chunks[-1] = Chunk(
                            offset=last.offset, length=last.length + length, kind="zero"
                        )
                    else:
                        chunks.append(Chunk(offset=offset, length=length, kind="zero"))
                else:
                    frame_offset = self._write(frame)
                    chunks.append(
                        Chunk(
                            offset=offset,
                            length=length,
                            kind="data",
                            blake3=digest,  # archive.digest.CURRENT
                            frame_offset=frame_offset,
                            frame_length=len(frame),
                        )
                    )
                if on_bytes is not None:
                    on_bytes(length)
        return tuple(chunks)

    def finish(
        self, manifest: ArchiveManifest, check: Callable[[Path], None] | None = None
    ) -> Path:
        """Write manifest and footer, flush to the medium, rename into place.

        ``check(partial_path)`` runs on the finished file before the rename (a
        conversion reads it back there); whatever it raises removes the file.
        """
        try:
            raw = manifest.model_dump_json().encode()
            stored = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(
                raw
            )
            manifest_offset = self._write(stored)
            body = FOOTER.pack(
                manifest_offset,
                len(stored),
                hashlib.sha256(stored).digest(),
                FORMAT_VERSION,
                0,
                FOOTER_MAGIC,
            )
            crc = zlib.crc32(body[:52])
            self._write(body[:52] + struct.pack("<I", crc) + FOOTER_MAGIC)
            self._file.seek(0)
            self._file.write(self._header(self._pos))
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            if check is not None:
                check(self.partial)
            os.replace(self.partial, self.path)
            _fsync_dir(self.path.parent)
            self._finished = True
            return self.path
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Close and remove the partial file (safe to call more than once)."""
        if not self._file.closed:
            self._file.close()
        if not self._finished:
            with contextlib.suppress(FileNotFoundError):
                self.partial.unlink()

    def __enter__(self) -> NativeWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None or not self._finished:
            self.abort()


# ----------------------------------------------------------------------------- reading


def _plain_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(x) for x in err.get("loc", ())) or "manifest"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = exc.error_count() - len(parts)
    if more > 0:
        parts.append(f"and {more} more problem(s)")
    return "; ".join(parts)


def parse_manifest(raw: bytes, *, data_stop: int | None = None) -> ArchiveManifest:
    """Validate manifest JSON; every impossible or hostile value is a clear error.

    ``data_stop`` is the file offset where the data frames end (the manifest's
    own offset): every frame must lie between the header and it, without overlap.
    """
    try:
        obj: Any = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ManifestInvalid(
            f"the archive's manifest is not readable JSON ({exc.__class__.__name__}); "
            "the archive is damaged — use another copy of the backup"
        ) from None
    if not isinstance(obj, dict):
        raise ManifestInvalid("the archive's manifest is not a JSON object; the archive is damaged")
    version = obj.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise UnsupportedVersion(
            f"this backup was made by a newer restore-tui (manifest version {version}; this "
            f"restore-tui reads version {SCHEMA_VERSION}); update restore-tui"
        )
    try:
        manifest = ArchiveManifest.model_validate(obj)
    except ValidationError as exc:
        raise ManifestInvalid(
            "the archive's manifest describes something impossible: "
            f"{_plain_validation_error(exc)}. The archive is damaged or was not made by "
            "restore-tui"
        ) from None
    except (ValueError, RecursionError) as exc:  # hostile nesting, huge numbers
        raise ManifestInvalid(f"the archive's manifest cannot be read: {exc}") from None
    _check_manifest_extents(manifest, data_stop)
    return manifest


def _check_manifest_extents(manifest: ArchiveManifest, data_stop: int | None) -> None:
    """What the pydantic model cannot know: disk bounds and where frames sit in the file."""
    ss = manifest.table.sector_size
    disk_bytes = manifest.source.identity.size_bytes
    # Byte offsets are 64-bit everywhere (file systems, block devices, our footer).
    if disk_bytes >= 2**63:
        raise ManifestInvalid(
            f"the manifest says the source disk holds {disk_bytes} bytes, more than any disk can"
        )
    if manifest.boot.track0_stop > disk_bytes:
        raise ManifestInvalid(
            f"the manifest's track 0 ends at byte {manifest.boot.track0_stop}, past the end of "
            f"the {disk_bytes}-byte source disk"
        )
    if len(manifest.boot.sector0) // 2 != ss:
        raise ManifestInvalid(
            f"the manifest's sector 0 is {len(manifest.boot.sector0) // 2} bytes, but the "
            f"disk's sectors are {ss} bytes"
        )
    if manifest.boot.sector0[:880] != manifest.boot.boot_code:
        raise ManifestInvalid("the manifest's boot code differs from its copy of sector 0")
    for ebr in manifest.boot.ebrs:
        if len(ebr.data) // 2 != ss or (ebr.lba + 1) * ss > disk_bytes:
            raise ManifestInvalid(
                f"the manifest's extended boot record at sector {ebr.lba} is not one sector "
                "inside the disk"
            )
    frames: list[tuple[int, int, str]] = []
    areas: list[tuple[str, tuple[Chunk, ...]]] = [("track 0", manifest.boot.track0)]
    areas += [(f"partition {p.number}", p.chunks) for p in manifest.partitions]
    for what, chunks in areas:
        for c in chunks:
            if c.kind != "data":
                continue
            if c.digest is None or c.frame_offset is None or c.frame_length is None:
                raise ManifestInvalid(
                    f"{what}: the data chunk at byte {c.offset} has no checksum or no location "
                    "in the archive file"
                )
            frames.append((c.frame_offset, c.frame_length, f"{what}, byte {c.offset}"))
    if data_stop is None:
        return
    frames.sort()
    previous = HEADER.size
    for frame_offset, frame_length, what in frames:
        if frame_offset < previous or frame_offset + frame_length > data_stop:
            raise ManifestInvalid(
                f"the manifest places the data of {what} at file bytes {frame_offset}-"
                f"{frame_offset + frame_length}, outside the data area or over other data"
            )
        previous = frame_offset + frame_length


def _decompress_bounded(stored: bytes, limit: int) -> bytes:
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(stored)
        raw = reader.read(limit + 1)
    except zstandard.ZstdError as exc:
        raise ManifestInvalid(
            f"the archive's manifest cannot be decompressed ({exc}); the archive is damaged"
        ) from None
    if len(raw) > limit:
        raise ManifestInvalid("the archive's manifest is impossibly large; the archive is damaged")
    return raw


class NativeArchive(Archive):
    """Reader of the native format: validates everything before trusting it."""

    format_name = "restore-tui archive"

    def __init__(self, path: str | os.PathLike[str], *, workers: int | None = None) -> None:
        self.path = Path(path)
        self.workers = workers or default_workers()
        # Threads that read and decode frames: at least two, even on one core, since
        # direct reads get no read-ahead by the kernel; one reads while the other decodes.
        self.read_threads = max(2, self.workers)
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotAnArchive(
                f"{self.path} does not exist; check the path to the backup"
            ) from None
        except OSError as exc:
            raise NotAnArchive(f"cannot open {self.path}: {exc.strerror}") from None
        try:
            if not stat.S_ISREG(os.fstat(self._fd).st_mode):
                raise NotAnArchive(
                    f"{self.path} is a folder or device, not a restore-tui archive file"
                )
            self.manifest, self.file_length = self._load()
            # The data frames are read once each, in order: direct reads skip the copy
            # through the page cache (as much CPU as decompressing them, on two cores).
            self._frames = DirectReader(self.path, self.file_length)
            # A restore's chunks are decoded into page-aligned blocks that the target
            # writer sends to the disk as they are: no copy between the two.
            self._blocks = BlockPool(KEEP_BLOCKS_BYTES)
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise

    def _read(self, length: int, offset: int) -> bytes:
        # One pread almost always returns everything: hand that out without copying
        # (frames are megabytes, and every copy costs as much as hashing them).
        first = os.pread(self._fd, length, offset)
        if len(first) == length or not first:
            return first
        out = bytearray(first)
        while len(out) < length:
            piece = os.pread(self._fd, length - len(out), offset + len(out))
            if not piece:
                break
            out += piece
        return bytes(out)

    def _load(self) -> tuple[ArchiveManifest, int]:
        name = self.path.name
        size = os.fstat(self._fd).st_size
        if size == 0:
            raise NotAnArchive(
                f"{name} is empty (0 bytes): it is not a backup. An interrupted copy leaves "
                "empty files; copy the backup again"
            )
        head = self._read(HEADER.size, 0)
        if head[: len(MAGIC)] != MAGIC:
            raise NotAnArchive(
                f"{name} is not a restore-tui archive (it does not start with the archive "
                "marker). Choose a file made by `restore-tui backup`, or a Clonezilla image folder"
            )
        if len(head) < HEADER.size:
            raise TruncatedArchive(
                f"{name} is cut off: it ends after {size} bytes, inside the archive's header. "
                "It was not copied completely; copy it again from the original"
            )
        _magic, version, header_size, file_length, _reserved, crc = HEADER.unpack(head)
        if zlib.crc32(head[:60]) != crc:
            raise ManifestInvalid(
                f"{name}: the archive's header is damaged (its checksum does not match). "
                "Use another copy of the backup"
            )
        if version > FORMAT_VERSION:
            raise UnsupportedVersion(
                f"{name} was made by a newer restore-tui (archive format {version}; this "
                f"restore-tui reads format {FORMAT_VERSION}); update restore-tui"
            )
        if header_size != HEADER.size:
            raise ManifestInvalid(f"{name}: the archive's header has an impossible size")
        if file_length == 0:
            raise TruncatedArchive(
                f"{name} is an unfinished backup: the backup that wrote it was interrupted "
                "before the end, so it holds no list of contents. Make the backup again"
            )
        if size < file_length:
            raise TruncatedArchive(
                f"{name} is cut off: it has {size} bytes but the archive is {file_length} "
                "bytes long. It was probably not copied completely; copy it again from the "
                "original"
            )
        if file_length < HEADER.size + FOOTER.size:
            raise ManifestInvalid(f"{name}: the archive's header gives an impossible length")
        # Bytes after file_length are ignored: the header says where the archive ends.
        tail = self._read(FOOTER.size, file_length - FOOTER.size)
        m_offset, m_length, m_sha, f_version, f_crc, f_magic = FOOTER.unpack(tail)
        if f_magic != FOOTER_MAGIC or zlib.crc32(tail[:52]) != f_crc:
            raise ManifestInvalid(
                f"{name}: the archive's footer (which says where the list of contents is) is "
                "damaged. Use another copy of the backup"
            )
        if f_version != version:
            raise ManifestInvalid(f"{name}: the archive's header and footer disagree")
        if m_offset < HEADER.size or m_offset + m_length != file_length - FOOTER.size:
            raise ManifestInvalid(
                f"{name}: the archive's footer places the list of contents outside the file"
            )
        stored = self._read(m_length, m_offset)
        if hashlib.sha256(stored).digest() != m_sha:
            raise ManifestInvalid(
                f"{name}: the archive's list of contents (manifest) is damaged: its checksum "
                "does not match. Use another copy of the backup"
            )
        raw = _decompress_bounded(stored, MAX_MANIFEST_RAW)
        return parse_manifest(raw, data_stop=m_offset), file_length

    # -- what it is

    def _content_identity(self) -> str:
        """SHA-256 of the manifest's canonical JSON: content only.

        It holds every chunk's SHA-256 and the creation time stored inside the
        file, never the file's name or modification time, so a copy or a renamed
        file is the same backup. (The same value plans recorded before identities
        existed, so their journals still match.)
        """
        return sha256_hex(canonical_json(self.manifest.model_dump(mode="json")))

    def unchecked(self) -> tuple[Unchecked, ...]:
        """Nothing: every part of a restore-tui archive is under a checksum.

        Track 0 and every partition are chunks with their digest in the manifest;
        boot code, sector 0 and extended boot records are stored in the manifest
        itself, which the footer's SHA-256 protects and which is checked on opening.
        """
        return ()

    # -- data

    def _area_chunks(self, area: Area) -> tuple[int | None, tuple[Chunk, ...]]:
        if area == TRACK0:
            return None, self.manifest.boot.track0
        assert isinstance(area, int)
        try:
            return area, self.manifest.image(area).chunks
        except KeyError:
            raise ArchiveError(f"partition {area} is not in this backup") from None

    def _load_chunk(self, partition: int | None, chunk: Chunk, *, readback: bool = False) -> Piece:
        """Read, decompress and check one chunk; CorruptData if anything is wrong.

        ``readback``: for a restore: decode into a pooled block (up to CHUNK_BYTES),
        and take the piece's read-back digest.
        """
        if chunk.kind == "zero":
            return Piece(chunk.offset, chunk.length, None)
        assert chunk.frame_offset is not None and chunk.frame_length is not None
        where = "track 0" if partition is None else f"partition {partition}"

        def bad(what: str) -> CorruptData:
            return CorruptData(
                f"{where}, byte offset {chunk.offset}: {what}",
                partition=partition,
                offset=chunk.offset,
            )

        try:
            # Only the read can fail with OSError; the frame is decoded before the block
            # ends because the buffer is reused afterwards.
            with self._frames.view(chunk.frame_offset, chunk.frame_length) as frame:
                if readback and chunk.length <= CHUNK_BYTES:
                    block = self._blocks.take(chunk.length)
                    data: bytes | memoryview = self._decode_into(chunk, frame, bad, block)
                else:
                    block, data = None, self._decode(chunk, frame, bad)
        except OSError as exc:
            # A failing USB disk: report the place like any other damage.
            raise bad(f"the archive file could not be read here ({exc.strerror})") from None
        return Piece(
            chunk.offset,
            chunk.length,
            data,
            readback_digest(data) if readback else None,
            block=block,
        )

    @staticmethod
    def _decode_into(
        chunk: Chunk, frame: memoryview, bad: Callable[[str], CorruptData], block: Block
    ) -> memoryview:
        """:meth:`_decode` into ``block``; its first ``chunk.length`` bytes, read-only."""
        NativeArchive._check_frame(chunk, frame, bad)
        try:
            whole = _inflate_into(frame, block, chunk.length)
        except zstandard.ZstdError:
            raise bad("the stored data is damaged and cannot be decompressed") from None
        if not whole:
            raise bad("the stored data is damaged (it holds the wrong number of bytes)")
        data = block.view(0, chunk.length)
        if not chunk_matches(chunk, data):
            raise bad("data does not match its checksum")
        return data

    @staticmethod
    def _decode(chunk: Chunk, frame: memoryview, bad: Callable[[str], CorruptData]) -> bytes:
        """A chunk's raw bytes from its stored frame, checked; CorruptData if damaged."""
        NativeArchive._check_frame(chunk, frame, bad)
        try:
            data = _decompressor().decompress(frame, max_output_size=chunk.length)
        except zstandard.ZstdError:
            raise bad("the stored data is damaged and cannot be decompressed") from None
        if not chunk_matches(chunk, data):
            raise bad("data does not match its checksum")
        return data

    @staticmethod
    def _check_frame(chunk: Chunk, frame: memoryview, bad: Callable[[str], CorruptData]) -> None:
        """The frame is whole and its header promises the chunk's size."""
        if len(frame) != chunk.frame_length:
            raise bad("the archive file ends before this data")
        try:
            params = zstandard.get_frame_parameters(frame)
        except zstandard.ZstdError:
            raise bad("the stored data is damaged (not a valid compressed frame)") from None
        # The frame header's content size decides the allocation: check it first,
        # so a damaged header cannot make us allocate gigabytes.
        if params.content_size != chunk.length:
            raise bad("the stored data is damaged (wrong size in its frame header)")

    def chunk_data(self, partition: int | None, chunk: Chunk) -> bytes:
        """One chunk's raw bytes, checked against its digest (zeros for a zero chunk).

        For random access (``archive.view``); :class:`CorruptData` names the
        partition and offset when the stored data is damaged.
        """
        data = self._load_chunk(partition, chunk).data
        if data is None:
            return bytes(chunk.length)
        return data if isinstance(data, bytes) else bytes(data)

    def pieces(self, area: Area, start: int = 0) -> Iterator[Piece]:
        partition, chunks = self._area_chunks(area)
        wanted = [c for c in chunks if c.stop > start]
        yield from ordered_map(
            lambda c: self._load_chunk(partition, c, readback=True),
            wanted,
            workers=self.read_threads,
            in_flight=RESTORE_AHEAD_CHUNKS,
            cost=lambda c: block_bytes(c.length) if c.kind == "data" else 0,
            budget=RESTORE_AHEAD_BYTES,
        )

    def verify(self, progress: ProgressCallback | None = None) -> VerifyReport:
        report = VerifyReport()
        total = self.manifest.stored_bytes()
        work: list[tuple[int | None, Chunk]] = [(None, c) for c in self.manifest.boot.track0]
        work += [(p.number, c) for p in self.manifest.partitions for c in p.chunks]

        def check(item: tuple[int | None, Chunk]) -> tuple[int | None, Chunk, CorruptData | None]:
            partition, chunk = item
            try:
                self._load_chunk(partition, chunk)
            except CorruptData as exc:
                return partition, chunk, exc
            return partition, chunk, None

        done = 0
        for partition, chunk, error in ordered_map(
            check, work, workers=self.read_threads, in_flight=self.read_threads + 2
        ):
            done += chunk.length
            report.checked_bytes += chunk.length
            report.checked_chunks += 1
            if error is not None:
                message = str(error).split(": ", 1)[-1]
                report.damage.append(Damage(partition, chunk.offset, message))
            if progress is not None:
                progress(done, total)
        return report

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._frames.close()

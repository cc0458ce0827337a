"""Reading block devices and disk image files the same way: size, sector sizes, bytes.

Everything is addressed by byte offset on the whole disk, so nothing depends on
the kernel having partition nodes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import queue
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

BLKGETSIZE64 = 0x80081272
BLKSSZGET = 0x1268
BLKPBSZGET = 0x127B
BLKROGET = 0x125E
BLKRRPART = 0x125F


@dataclass(frozen=True)
class Geometry:
    size_bytes: int
    logical_sector_size: int
    physical_sector_size: int
    is_block_device: bool
    read_only: bool


def is_block_device(path: str | os.PathLike[str]) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def geometry_of_fd(fd: int) -> Geometry:
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
        size = struct.unpack("Q", buf)[0]
        logical = struct.unpack("i", fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4))[0]
        physical = struct.unpack("I", fcntl.ioctl(fd, BLKPBSZGET, b"\0" * 4))[0]
        ro = struct.unpack("i", fcntl.ioctl(fd, BLKROGET, b"\0" * 4))[0] != 0
        return Geometry(size, logical, physical, True, ro)
    if stat.S_ISREG(st.st_mode):
        # Image files are taken as 512-byte-sector disks; a 4Kn image is named by
        # the probe that knows better (recorded machines carry their sector size).
        return Geometry(st.st_size, 512, 512, False, not os.access(fd_path(fd), os.W_OK))
    raise OSError(f"not a disk or disk image file (mode {stat.filemode(st.st_mode)})")


def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def geometry(path: str | os.PathLike[str]) -> Geometry:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return geometry_of_fd(fd)
    finally:
        os.close(fd)


def read_at(fd: int, offset: int, length: int) -> bytes:
    """Exactly ``length`` bytes at ``offset``; shorter only at the end of the disk."""
    chunks: list[bytes] = []
    done = 0
    while done < length:
        piece = os.pread(fd, length - done, offset + done)
        if not piece:
            break
        chunks.append(piece)
        done += len(piece)
    return b"".join(chunks)


class DiskReader:
    """A read-only handle on a whole disk or image file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.geometry = geometry_of_fd(self.fd)
        except Exception:
            os.close(self.fd)
            raise

    def read(self, offset: int, length: int) -> bytes:
        return read_at(self.fd, offset, length)

    @property
    def size(self) -> int:
        return self.geometry.size_bytes

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> DiskReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def evict_cached(fd: int, offset: int, length: int) -> None:
    """Forget the clean cached pages of a range (length 0: to the end), so the next
    read of it comes from the medium. Only makes a read-back stricter: failing to is
    not an error."""
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


ByteBuffer = bytes | bytearray | memoryview

# Compared with, never written: the pages stay unallocated until read.
_ZEROS = bytes(4 * 1024 * 1024)


def same_bytes(a: ByteBuffer, b: ByteBuffer) -> bool:
    """``a == b`` for any two byte buffers, at memcmp speed.

    Why not ``==``: Python 3.11 compares a memoryview element by element (about
    200 MiB/s here, against tens of GiB/s), and the read-back compares views.
    ``bytes.startswith`` takes any buffer and is a memcmp.
    """
    a_len, b_len = memoryview(a).nbytes, memoryview(b).nbytes
    if a_len != b_len:
        return False
    if not isinstance(b, bytes | bytearray):
        a, b = b, a
    if not isinstance(b, bytes | bytearray):
        b = bytes(b)
    return b.startswith(a)


def all_zeros(data: ByteBuffer) -> bool:
    """Is every byte of ``data`` zero? (At memcmp speed, as :func:`same_bytes`.)"""
    view = memoryview(data).cast("B")
    step = len(_ZEROS)
    return all(_ZEROS.startswith(view[i : i + step]) for i in range(0, len(view), step))


# O_DIRECT reads start and end on this boundary (it covers 512- and 4096-byte sectors).
DIRECT_ALIGN = 4096
# Buffers kept for reuse; more readers at once get a buffer of their own for the read.
_KEPT_BUFFERS = 4
# Every buffer holds at least this much, so ranges of a few MiB of varying sizes (a
# chunk, a compressed frame) reuse the kept buffers instead of replacing them. Only the
# pages a read fills become resident.
_BUFFER_MIN = 8 * 1024 * 1024


class DirectReader:
    """Reads ranges of a disk or file by direct I/O into reused page-aligned buffers.

    A descriptor opened ``O_DIRECT`` reads straight into the buffer (the range is widened
    to whole 4 KiB blocks and cut back): no copy through the page cache, which on two
    cores costs as much CPU as decompressing what is read, and no cache filled with bytes
    that are read once. The kernel writes back dirty cached pages of the range first, so
    buffered writes are seen too. Where a file cannot be read direct (tmpfs, some FUSE
    filesystems; refused when opening or at the first read) or a range cannot be widened
    inside a disk, it is read normally.

    Safe to use from several threads at once; each :meth:`view` holds its own buffer.
    """

    def __init__(self, path: str | os.PathLike[str], size: int) -> None:
        self.path = Path(path)
        self.size = size
        self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        # A direct read past the end of a file comes back short, as it should; a disk's
        # last bytes, when it is not whole 4 KiB blocks, are read without direct I/O.
        self._short_at_end = stat.S_ISREG(os.fstat(self.fd).st_mode)
        try:
            self._direct: int | None = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
        except OSError:
            self._direct = None
        # Set when direct reads fail after all; the descriptor stays open until close(),
        # as another thread may be reading through it.
        self._gave_up_direct = False
        self._buffers: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()

    @property
    def direct(self) -> bool:
        """Whether reads bypass the page cache (for a MediumReader: no flush needed first)."""
        return self._direct is not None and not self._gave_up_direct

    @contextlib.contextmanager
    def view(self, offset: int, length: int) -> Iterator[memoryview]:
        """The bytes at [offset, offset + length); shorter only at the end of the file.
        Valid inside the ``with`` block only."""
        start = offset - offset % DIRECT_ALIGN
        stop = -(-(offset + length) // DIRECT_ALIGN) * DIRECT_ALIGN
        if self.direct and (stop <= self.size or self._short_at_end):
            buffer = self._take(stop - start)
            try:
                got = self._read_direct(buffer, start, stop - start)
                if got is not None:
                    whole = memoryview(buffer)
                    lo = offset - start
                    end = min(got, lo + length, self.size - start)
                    part = whole[lo : max(lo, end)]
                    try:
                        yield part
                    finally:
                        # A view kept past the block would pin (and see the reuse of) the
                        # buffer.
                        part.release()
                        whole.release()
                    return
            finally:
                self._give_back(buffer)
        yield memoryview(self._read_plain(offset, length))

    def _read_plain(self, offset: int, length: int) -> bytes:
        """A range read without direct I/O."""
        return read_at(self.fd, offset, length)

    def _gave_up(self) -> None:
        """Direct reads were just refused after opening; plain reads from now on."""

    def _read_direct(self, buffer: mmap.mmap, offset: int, length: int) -> int | None:
        """Bytes read directly into ``buffer``; None when the file turns out not to take
        direct reads after all (EINVAL from some FUSE filesystems): plain from then on."""
        assert self._direct is not None
        try:
            return _pread_into(self._direct, buffer, offset, length)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
        self._gave_up_direct = True
        self._gave_up()
        return None

    def _take(self, size: int) -> mmap.mmap:
        try:
            buffer = self._buffers.get_nowait()
        except queue.Empty:
            return mmap.mmap(-1, max(size, _BUFFER_MIN))
        if len(buffer) >= size:
            return buffer
        buffer.close()
        return mmap.mmap(-1, max(size, _BUFFER_MIN))

    def _give_back(self, buffer: mmap.mmap) -> None:
        if self._buffers.qsize() < _KEPT_BUFFERS:
            self._buffers.put(buffer)
        else:
            buffer.close()

    def close(self) -> None:
        for fd in (self._direct, self.fd):
            if fd is not None and fd >= 0:
                os.close(fd)
        self._direct, self.fd = None, -1
        while not self._buffers.empty():
            self._buffers.get_nowait().close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MediumReader(DirectReader):
    """Reads a disk or image file from the medium itself, never from the page cache.

    The read-back check of a restore must see what the disk stores, not the copy the
    kernel kept of what was written. Direct reads do that on their own; where the target
    cannot do them, or for the last bytes of a disk that is not whole 4 KiB blocks, the
    range is flushed and evicted from the cache first, then read normally.
    """

    def settle(self, offset: int, length: int) -> None:
        """Make [offset, offset + length) readable from the medium: with direct reads
        nothing is needed; otherwise written pages are flushed and dropped from the cache."""
        if not self.direct:
            os.fdatasync(self.fd)
            evict_cached(self.fd, offset, length)

    def _read_plain(self, offset: int, length: int) -> bytes:
        if self.direct:
            # The last bytes of a block device whose size is not whole 4 KiB blocks: the
            # caller did not flush them (settle() need not, with direct reads).
            os.fdatasync(self.fd)
        evict_cached(self.fd, offset, length)
        return read_at(self.fd, offset, length)

    def _gave_up(self) -> None:
        os.fdatasync(self.fd)  # what the caller did not flush, since direct reads need not


def _pread_into(fd: int, buffer: mmap.mmap, offset: int, length: int) -> int:
    """Fill ``buffer[:length]`` from ``offset``; the number of bytes read (less at the end)."""
    view = memoryview(buffer)
    done = 0
    try:
        while done < length:
            n = os.preadv(fd, [view[done:length]], offset + done)
            if n <= 0:
                break
            done += n
    finally:
        view.release()
    return done

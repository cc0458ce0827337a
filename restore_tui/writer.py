"""The only way restore-tui writes to a target disk: a writer fenced to the plan's extents.

Every write and zero is checked against the byte ranges the plan allows *before*
anything reaches the disk; a request outside them raises :class:`OutsidePlan`.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
import stat
import struct
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from layout.blockio import evict_cached, read_at

BLKZEROOUT = 0x127F  # _IO(0x12, 127): zero a range of a block device in the device itself
BLKGETSIZE64 = 0x80081272
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

# Zeros are written in bounded blocks so a large zero run never needs large memory.
ZERO_BLOCK = 1024 * 1024
_ZEROS = bytes(ZERO_BLOCK)
# BLKZEROOUT drops the page cache of the range it zeroes; keeping it to whole pages
# means no half-written page of an earlier buffered write can be affected.
PAGE = 4096
# Writes whose place and length are whole multiples of this go to the medium directly
# (O_DIRECT) through a page-aligned buffer: no copy in the page cache to write back later,
# which on a loop device or a USB disk is what limits a buffered restore. (4096 covers
# disks with 512- and 4096-byte sectors.) Other writes — boot-sector fields, table
# entries — stay buffered; the kernel keeps the two kinds coherent.
DIRECT_ALIGN = 4096
# Direct writes that continue one another go to the disk as one request of up to this
# many bytes (the engine hands over 1 MiB at a time, for its progress and checkpoints).
# Replaying a checked restore's writes and read-back on this project's machine (direct
# I/O, two requests of each kind in flight; medians): 1 MiB writes 1.39 s on a direct-I/O
# loop device and 1.37 s on an image file; 16 MiB requests 0.94 s and 0.93 s; 32 MiB no
# better than 16 (docs/benchmarks.md).
DIRECT_BUFFER = 16 * 1024 * 1024
# Direct writes in flight at once. With one, a disk idles between a write's completion
# and the next one's arrival; with a second queued behind it, it does not. Measured on a
# loop device doing direct I/O to its file (a stand-in for a disk): a --no-verify
# restore's median 3.42 -> 2.89 s; no change on a buffered loop device or an image file,
# whose writes wait on one kernel worker or one inode lock either way.
DIRECT_IN_FLIGHT = 2


class OutsidePlan(RuntimeError):
    """A write was asked for outside the plan's extents; nothing was written."""


class TargetOpenError(OSError):
    """The target could not be opened for writing (missing, busy, read-only)."""


def merge_extents(extents: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged, non-empty [start, stop) ranges."""
    merged: list[tuple[int, int]] = []
    for start, stop in sorted((int(a), int(b)) for a, b in extents):
        if start < 0 or stop < start:
            raise ValueError(f"impossible extent [{start}, {stop})")
        if stop == start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


class ExtentFence:
    """Answers one question fast: does [offset, offset + length) lie inside the allowed ranges?"""

    def __init__(self, extents: Iterable[tuple[int, int]]) -> None:
        self.extents = merge_extents(extents)
        self._starts = [start for start, _stop in self.extents]

    def allows(self, offset: int, length: int) -> bool:
        if offset < 0 or length < 0:
            return False
        if length == 0:
            return True
        i = bisect.bisect_right(self._starts, offset) - 1
        if i < 0:
            return False
        start, stop = self.extents[i]
        # Extents are merged, so a range crossing a gap is never inside one extent.
        return start <= offset and offset + length <= stop

    def check(self, offset: int, length: int) -> None:
        if not self.allows(offset, length):
            raise OutsidePlan(
                f"refused to write bytes {offset}-{offset + length - 1}: that is outside what the "
                "plan allows. Nothing was written there. This is a bug in restore-tui; please "
                "report it with the plan file."
            )


def _libc_fallocate() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    # The C library the interpreter itself is linked with (dlopen of the program), not
    # ``ctypes.util.find_library``, which runs ``ldconfig -p`` in a child process at every
    # start-up for a name it does not need to look up.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.fallocate
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    func.restype = ctypes.c_int
    return func


_FALLOCATE = _libc_fallocate()


class _DirectWrites:
    """Direct writes through page-aligned copies: gathered, then up to DIRECT_IN_FLIGHT
    at once.

    Each write's bytes are copied into an aligned buffer before :meth:`write` returns, so
    the caller may reuse its data at once. Writes that continue one another are gathered
    in one buffer and go to the disk as one request of up to DIRECT_BUFFER bytes, when
    the buffer is full, the next write is elsewhere, or :meth:`wait` is called. Two
    queued requests never cover the same bytes (the later one waits), so the order of
    writes to any byte is kept. A failed request raises its OSError at a later
    :meth:`write` or at :meth:`wait`.
    """

    def __init__(self, fd: int, write_through: Callable[[int, int, memoryview], None]) -> None:
        self._fd, self._write_through = fd, write_through
        # One buffer gathering while the others are written.
        self._free = [mmap.mmap(-1, DIRECT_BUFFER) for _ in range(DIRECT_IN_FLIGHT + 1)]
        self._queued: deque[tuple[Future[None], mmap.mmap, int, int]] = deque()
        self._pool = ThreadPoolExecutor(DIRECT_IN_FLIGHT, thread_name_prefix="target-write")
        # The buffer being gathered: where its bytes go, and how many it holds.
        self._gathering: mmap.mmap | None = None
        self._at = self._filled = 0

    def write(self, offset: int, view: memoryview) -> None:
        done = 0
        while done < len(view):
            pos = offset + done
            if self._gathering is not None and pos != self._at + self._filled:
                self._submit()
            if self._gathering is None:
                self._gathering, self._at, self._filled = self._take_free(), pos, 0
            n = min(DIRECT_BUFFER - self._filled, len(view) - done)
            target = memoryview(self._gathering)
            try:
                target[self._filled : self._filled + n] = view[done : done + n]
            finally:
                target.release()
            self._filled += n
            done += n
            if self._filled == DIRECT_BUFFER:
                self._submit()

    def _take_free(self) -> mmap.mmap:
        if not self._free:
            self._finish_oldest()
        return self._free.pop()

    def _submit(self) -> None:
        """Queue the gathered buffer's request (after any queued one over the same bytes)."""
        buffer, lo, length = self._gathering, self._at, self._filled
        assert buffer is not None
        self._gathering = None
        hi = lo + length
        try:
            if any(a < hi and lo < b for _f, _buf, a, b in self._queued):
                self._wait_queued()
            future = self._pool.submit(self._write_one, buffer, lo, length)
        except BaseException:
            self._free.append(buffer)  # an earlier request failed: this one never goes
            raise
        self._queued.append((future, buffer, lo, hi))

    def _write_one(self, buffer: mmap.mmap, offset: int, length: int) -> None:
        whole = memoryview(buffer)
        part = whole[:length]
        try:
            self._write_through(self._fd, offset, part)
        finally:
            part.release()
            whole.release()

    def _finish_oldest(self) -> None:
        future, buffer, _lo, _hi = self._queued.popleft()
        try:
            future.result()
        finally:
            self._free.append(buffer)

    def _wait_queued(self) -> None:
        while self._queued:
            self._finish_oldest()

    def _send_gathered(self) -> None:
        if self._gathering is not None:
            self._submit()

    def wait(self) -> None:
        """Every write handed over so far done; the first that failed raises its error."""
        self._send_gathered()
        self._wait_queued()

    def under_way(self) -> list[Future[None]]:
        """Every write handed over so far, sent to the disk (the gathered bytes too) and
        not waited for: each future is done when its request has returned."""
        self._send_gathered()
        return [future for future, _buf, _lo, _hi in self._queued]

    def close(self) -> None:
        """Write what was handed over, wait for it, then free the buffers. Failures are not
        raised here: only a flush vouches for written bytes, and it would have raised them."""
        with contextlib.suppress(OSError):
            self._send_gathered()
        while self._queued:
            with contextlib.suppress(OSError):
                self._finish_oldest()
        self._pool.shutdown(wait=True)
        for buffer in self._free:
            # A failed write's traceback may still view its buffer: then the garbage
            # collector frees it, with the traceback.
            with contextlib.suppress(BufferError):
                buffer.close()
        self._free.clear()


class CheckedWriter:
    """Read-write handle on a whole disk or image file that writes only inside ``allowed_extents``.

    The file must exist (an image is never created or truncated here). Block
    devices are opened ``O_EXCL``: the kernel then refuses while any partition of
    the disk is mounted or otherwise claimed, a last line of defence behind the
    checks made before a restore starts.
    """

    def __init__(self, path: str | os.PathLike[str], allowed_extents: Iterable[tuple[int, int]]):
        self.path = Path(path)
        self.fence = ExtentFence(allowed_extents)
        self.bytes_written = 0
        try:
            st = os.stat(self.path)
        except FileNotFoundError as exc:
            raise TargetOpenError(
                errno.ENOENT, f"the target {self.path} does not exist (it is never created here)"
            ) from exc
        self.is_block_device = stat.S_ISBLK(st.st_mode)
        if not self.is_block_device and not stat.S_ISREG(st.st_mode):
            raise TargetOpenError(errno.EINVAL, f"{self.path} is not a disk or a disk image file")
        flags = os.O_RDWR | os.O_CLOEXEC
        if self.is_block_device:
            flags |= os.O_EXCL
        try:
            self.fd = os.open(self.path, flags)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise TargetOpenError(
                    exc.errno,
                    f"{self.path} is in use (a partition on it is mounted, used as swap, or "
                    "part of RAID/LVM). Unmount it or stop what uses it, then try again.",
                ) from exc
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise TargetOpenError(
                    exc.errno,
                    f"{self.path} cannot be written (read-only, or restore-tui is not running "
                    "as root). Run it as root, or pick a disk that is not write-protected.",
                ) from exc
            raise TargetOpenError(exc.errno, f"cannot open {self.path}: {exc.strerror}") from exc
        self.size = self._size()
        self._direct = self._open_direct(flags & ~os.O_EXCL)
        self._queue = (
            _DirectWrites(self._direct, self._write_through) if self._direct is not None else None
        )
        if self.fence.extents and self.fence.extents[-1][1] > self.size:
            last = self.fence.extents[-1][1]
            self.close()
            raise OutsidePlan(
                f"the plan writes up to byte {last}, but {self.path} is only {self.size} bytes "
                "long. Make a new plan for this disk."
            )

    def _open_direct(self, flags: int) -> int | None:
        """A second descriptor for direct writes; None where the filesystem cannot."""
        try:
            return os.open(self.path, flags | os.O_DIRECT)
        except OSError:
            return None  # tmpfs and some FUSE filesystems: buffered writes only

    def _size(self) -> int:
        if self.is_block_device:
            buf = fcntl.ioctl(self.fd, BLKGETSIZE64, b"\0" * 8)
            return int(struct.unpack("Q", buf)[0])
        return os.fstat(self.fd).st_size

    # -- writing -------------------------------------------------------------------------

    def write(self, offset: int, data: bytes | memoryview) -> None:
        """Write ``data`` at ``offset``; refused before any byte moves when outside the plan."""
        self.fence.check(offset, len(data))
        self._pwrite_all(offset, memoryview(data))

    def zero(self, offset: int, length: int) -> None:
        """Make [offset, offset + length) read as zeros, as cheaply as the target allows."""
        self.fence.check(offset, length)
        if length == 0:
            return
        self.wait_writes()
        if self.is_block_device:
            self._zero_block_device(offset, length)
        elif not self._punch_hole(offset, length):
            self._write_zeros(offset, length)

    def _pwrite_all(self, offset: int, view: memoryview) -> None:
        aligned = offset % DIRECT_ALIGN == 0 and len(view) % DIRECT_ALIGN == 0
        if aligned and self._queue is not None and len(view):
            self._queue.write(offset, view)
        else:
            self.wait_writes()
            self._write_through(self.fd, offset, view)
        self.bytes_written += len(view)

    def wait_writes(self) -> None:
        """Wait until every direct write queued so far has returned from the disk (written,
        not yet flushed: :meth:`sync` does that); raises the first that failed. Everything
        but another direct write waits for this first, so reads, zeroing, flushes and
        buffered writes see the bytes."""
        if self._queue is not None:
            self._queue.wait()

    def writes_under_way(self) -> list[Future[None]]:
        """The direct writes handed over so far, sent on and not waited for (see
        :meth:`wait_writes`): a reader of their bytes waits for these first, without
        holding up the writes that come after them."""
        return self._queue.under_way() if self._queue is not None else []

    def _write_through(self, fd: int, offset: int, view: memoryview) -> None:
        done = 0
        while done < len(view):
            n = os.pwrite(fd, view[done:], offset + done)
            if n <= 0:
                raise OSError(errno.EIO, f"short write to {self.path} at byte {offset + done}")
            done += n

    def _write_zeros(self, offset: int, length: int) -> None:
        pos, stop = offset, offset + length
        while pos < stop:
            n = min(ZERO_BLOCK, stop - pos)
            self._pwrite_all(pos, memoryview(_ZEROS)[:n])
            pos += n

    def _zero_block_device(self, offset: int, length: int) -> None:
        # Whole pages go to BLKZEROOUT; the unaligned head and tail are written.
        inner_start = -(-offset // PAGE) * PAGE
        inner_stop = (offset + length) // PAGE * PAGE
        if inner_stop - inner_start < ZERO_BLOCK:
            self._write_zeros(offset, length)
            return
        try:
            fcntl.ioctl(
                self.fd, BLKZEROOUT, struct.pack("QQ", inner_start, inner_stop - inner_start)
            )
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTTY, errno.EIO):
                raise
            self._write_zeros(offset, length)  # the device cannot: plain zeros do the same
            return
        self.bytes_written += inner_stop - inner_start
        if inner_start > offset:
            self._write_zeros(offset, inner_start - offset)
        if offset + length > inner_stop:
            self._write_zeros(inner_stop, offset + length - inner_stop)

    def _punch_hole(self, offset: int, length: int) -> bool:
        # A hole in an image file reads as zeros and costs no space.
        if _FALLOCATE is None or offset + length > self.size:
            return False
        rc = _FALLOCATE(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)
        if rc != 0:
            return False
        self.bytes_written += length
        return True

    # -- reading, flushing ---------------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        """Bytes as they are now (reading is allowed anywhere)."""
        self.wait_writes()
        return read_at(self.fd, offset, length)

    def sync(self) -> None:
        """Flush written data to the medium (fdatasync) before a checkpoint claims it:
        buffered writes out of the page cache, direct ones out of the disk's own cache."""
        self.wait_writes()
        os.fdatasync(self.fd)
        if self._direct is not None:
            os.fdatasync(self._direct)

    def drop_cache(self, offset: int, length: int) -> None:
        """Forget cached pages of a flushed range, so a read-back comes from the medium."""
        self.wait_writes()
        evict_cached(self.fd, offset, length)

    def close(self) -> None:
        # The queued writes first: none may run on a descriptor closed (and reused) under it.
        if getattr(self, "_queue", None) is not None:
            self._queue.close()  # type: ignore[union-attr]
            self._queue = None
        if getattr(self, "_direct", None) is not None:
            os.close(self._direct)  # type: ignore[arg-type]
            self._direct = None
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> CheckedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

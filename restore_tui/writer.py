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
import os
import stat
import struct
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from layout.blockio import evict_cached, read_at
from layout.blocks import Block, BlockPool

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
# Pieces of memory in one request at most: the kernel takes up to IOV_MAX (1024 on Linux)
# in one pwritev, and small chunks decoded into blocks of their own could be more.
MAX_PARTS = 256


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
    """Direct writes, gathered, then up to DIRECT_IN_FLIGHT at once.

    Writes that continue one another are gathered and go to the disk as one request of
    up to DIRECT_BUFFER bytes (``pwritev`` of the pieces of memory they come from), when
    enough is gathered, the next write is elsewhere, or :meth:`wait` is called. Bytes
    come either from a caller's :class:`~layout.blocks.Block` (:meth:`write_block`: no
    copy; the request keeps the block, so its buffer is not reused before the write has
    returned), or are copied into page-aligned scratch blocks before :meth:`write`
    returns, so that caller may reuse its data at once. Two queued requests never cover
    the same bytes (the later one waits), so the order of writes to any byte is kept. A
    failed request raises its OSError at a later write or at :meth:`wait`.
    """

    def __init__(
        self, fd: int, write_through: Callable[[int, int, list[memoryview]], None]
    ) -> None:
        self._fd, self._write_through = fd, write_through
        self._scratch_pool = BlockPool(keep_bytes=(DIRECT_IN_FLIGHT + 1) * DIRECT_BUFFER)
        self._scratch: Block | None = None  # copies go here, from _scratch_used on
        self._scratch_used = 0
        self._queued: deque[_Request] = deque()
        self._pool = ThreadPoolExecutor(DIRECT_IN_FLIGHT, thread_name_prefix="target-write")
        # What is being gathered: where its bytes go, how many, and from which memory.
        self._at = self._filled = 0
        self._parts: list[tuple[Block, int, int]] = []

    def write(self, offset: int, view: memoryview) -> None:
        """Copy ``view`` into scratch blocks and gather it for ``offset``."""
        done = 0
        while done < len(view):
            if self._scratch is None or self._scratch_used == DIRECT_BUFFER:
                self._scratch, self._scratch_used = self._scratch_pool.take(DIRECT_BUFFER), 0
            lo = self._scratch_used
            n = min(DIRECT_BUFFER - lo, len(view) - done, self._room(offset + done))
            target = self._scratch.writable()
            try:
                target[lo : lo + n] = view[done : done + n]
            finally:
                target.release()
            self._scratch_used += n
            self._gather(offset + done, self._scratch, lo, lo + n)
            done += n

    def write_block(self, offset: int, block: Block, start: int, stop: int) -> None:
        """Gather bytes [start, stop) of ``block`` for ``offset``, without a copy."""
        while start < stop:
            n = min(stop - start, self._room(offset))
            self._gather(offset, block, start, start + n)
            offset, start = offset + n, start + n

    def _room(self, pos: int) -> int:
        """How many bytes from ``pos`` on the request being gathered can still take
        (after sending it on, if ``pos`` does not continue it)."""
        if self._parts and pos != self._at + self._filled:
            self._submit()
        return DIRECT_BUFFER - self._filled

    def _gather(self, pos: int, block: Block, start: int, stop: int) -> None:
        if not self._parts:
            self._at = pos
        last = self._parts[-1] if self._parts else None
        if last is not None and last[0] is block and last[2] == start:
            self._parts[-1] = (block, last[1], stop)  # the same memory, continued
        else:
            self._parts.append((block, start, stop))
        self._filled += stop - start
        if self._filled == DIRECT_BUFFER or len(self._parts) == MAX_PARTS:
            self._submit()

    def _submit(self) -> None:
        """Queue the gathered request (after any queued one over the same bytes, and with
        no more than DIRECT_IN_FLIGHT others queued before it)."""
        parts, lo, length = self._parts, self._at, self._filled
        self._parts, self._filled = [], 0
        hi = lo + length
        if any(r.lo < hi and lo < r.hi for r in self._queued):
            self._wait_queued()
        while len(self._queued) > DIRECT_IN_FLIGHT:
            self._finish_oldest()
        views = [memoryview(block.writable())[a:b] for block, a, b in parts]
        future = self._pool.submit(self._write_through, self._fd, lo, views)
        self._queued.append(_Request(future, views, [block for block, _a, _b in parts], lo, hi))

    def _finish_oldest(self) -> None:
        request = self._queued.popleft()
        try:
            request.future.result()
        finally:
            # The views first: a block's buffer is reused only once nothing views it.
            for view in request.views:
                view.release()
            request.views.clear()
            request.blocks.clear()

    def _wait_queued(self) -> None:
        while self._queued:
            self._finish_oldest()

    def _send_gathered(self) -> None:
        if self._parts:
            self._submit()

    def wait(self) -> None:
        """Every write handed over so far done; the first that failed raises its error."""
        self._send_gathered()
        self._wait_queued()

    def under_way(self) -> list[Future[None]]:
        """Every write handed over so far, sent to the disk (the gathered bytes too) and
        not waited for: each future is done when its request has returned."""
        self._send_gathered()
        return [request.future for request in self._queued]

    def close(self) -> None:
        """Write what was handed over, wait for it, then let the buffers go. Failures are
        not raised here: only a flush vouches for written bytes, and it would have raised
        them."""
        with contextlib.suppress(OSError):
            self._send_gathered()
        while self._queued:
            with contextlib.suppress(OSError):
                self._finish_oldest()
        self._pool.shutdown(wait=True)
        self._scratch = None


@dataclass
class _Request:
    """One queued direct write: its memory, the blocks that memory belongs to (kept until
    it has returned), and the bytes [lo, hi) of the target it covers."""

    future: Future[None]
    views: list[memoryview]
    blocks: list[Block]
    lo: int
    hi: int


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
            _DirectWrites(self._direct, self._writev_through) if self._direct is not None else None
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
        """Write ``data`` at ``offset``; refused before any byte moves when outside the plan.
        ``data`` may be reused as soon as this returns."""
        self.fence.check(offset, len(data))
        self._pwrite_all(offset, memoryview(data))

    def write_block(self, offset: int, block: Block, start: int, stop: int) -> None:
        """Write bytes [start, stop) of ``block`` at ``offset``, from the block's own memory
        where they can go to the disk directly (the block is kept, and its buffer not
        reused, until that write has returned); refused like :meth:`write`. Nobody may
        change those bytes of the block meanwhile."""
        self.fence.check(offset, stop - start)
        self._pwrite_all(offset, block.view(start, stop), (block, start))

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

    @staticmethod
    def _goes_direct(offset: int, length: int) -> bool:
        return length > 0 and offset % DIRECT_ALIGN == 0 and length % DIRECT_ALIGN == 0

    def _pwrite_all(
        self, offset: int, view: memoryview, lent: tuple[Block, int] | None = None
    ) -> None:
        """Every byte a restore writes passes here (``lent``: ``view`` is that block's
        memory from that place on, and may go to the disk as it is)."""
        if self._queue is not None and self._goes_direct(offset, len(view)):
            if lent is not None and lent[1] % DIRECT_ALIGN == 0:
                block, start = lent
                self._queue.write_block(offset, block, start, start + len(view))
            else:
                self._queue.write(offset, view)
        else:
            self.wait_writes()
            self._writev_through(self.fd, offset, [view])
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

    def _writev_through(self, fd: int, offset: int, views: list[memoryview]) -> None:
        """Write ``views`` one after another from ``offset``, in as few calls as they go."""
        left = [view for view in views if len(view)]
        pos = offset
        while left:
            n = os.pwritev(fd, left, pos)
            if n <= 0:
                raise OSError(errno.EIO, f"short write to {self.path} at byte {pos}")
            pos += n
            while left and n >= len(left[0]):
                n -= len(left.pop(0))
            if n:
                left[0] = left[0][n:]

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

"""Page-aligned buffers that a restore decodes into and writes from without a copy.

A :class:`Block` is lent by a :class:`BlockPool`. Whoever fills it (a decoding thread)
hands it on inside a piece; the target writer keeps it until the direct write that reads
it has returned. Nobody gives a block back by hand: when the last reference to a
:class:`Block` goes, its buffer goes back to the pool, and the pool lends a buffer again
only if, at that moment, nothing else refers to it (no memoryview of it, not even a
slice: its reference count says so). So a buffer is never filled again while a write, a
digest or a comparison may still read it, whatever order its holders let go in; one that
is still viewed waits in the pool, or is let go, and its views keep the memory alive.

Buffers are anonymous ``mmap``s: page-aligned, as direct I/O wants its memory, and
their pages stay mapped while a buffer goes round, so a restore does not pay the kernel
for fresh zeroed pages at every chunk.
"""

from __future__ import annotations

import mmap
import sys
import threading
from collections import deque

PAGE = 4096
#: the smallest block: shorter data goes in one of these
MIN_BLOCK = 64 * 1024
# sys.getrefcount of a buffer that nothing but the pool's check refers to: the name in
# BlockPool._reusable, the parameter of _unviewed, and getrefcount's own argument. A memoryview
# of the buffer (or any slice of one) adds one; tests/test_blocks.py checks both
# directions, so a change in how Python counts cannot make a viewed buffer reusable
# unnoticed.
_UNREFERENCED = 3


def _unviewed(buffer: mmap.mmap) -> bool:
    return sys.getrefcount(buffer) <= _UNREFERENCED


def block_bytes(length: int) -> int:
    """The size of the block that holds ``length`` bytes: the next power of two from
    MIN_BLOCK on, so a pool needs few sizes and wastes at most half of a block."""
    size = MIN_BLOCK
    while size < length:
        size *= 2
    return size


class Block:
    """One page-aligned buffer of ``size`` bytes, lent by a :class:`BlockPool`."""

    __slots__ = ("_buffer", "_pool")

    def __init__(self, pool: BlockPool, buffer: mmap.mmap) -> None:
        self._pool: BlockPool | None = pool
        self._buffer: mmap.mmap | None = buffer

    @property
    def size(self) -> int:
        assert self._buffer is not None
        return len(self._buffer)

    def writable(self) -> memoryview:
        """The whole buffer, to fill (by the one holder that took it from the pool)."""
        assert self._buffer is not None
        return memoryview(self._buffer)

    def view(self, start: int, stop: int) -> memoryview:
        """Bytes [start, stop) of the buffer, read-only."""
        assert self._buffer is not None and 0 <= start <= stop <= len(self._buffer)
        return memoryview(self._buffer)[start:stop].toreadonly()

    def __del__(self) -> None:
        pool, buffer = self._pool, self._buffer
        self._pool = self._buffer = None
        if pool is not None and buffer is not None:
            pool._returned(buffer)


class BlockPool:
    """Lends :class:`Block`\\ s, and their buffers again once nothing refers to them.

    At most ``keep_bytes`` of returned buffers are kept for reuse; more are let go. Safe
    to use from several threads. A buffer comes back from ``Block.__del__``, which the
    garbage collector may run in any thread — also one inside :meth:`take` — so coming
    back takes no lock: it is one append to a deque (atomic). Lending takes a lock, and
    checks each candidate's reference count at that moment.
    """

    def __init__(self, keep_bytes: int) -> None:
        self.keep_bytes = keep_bytes
        # Returned buffers by size, oldest first.
        self._returned_buffers: dict[int, deque[mmap.mmap]] = {}
        self._idle = 0  # bytes returned and not lent again (approximate under races)
        self._lending = threading.Lock()
        self.made = 0  # buffers allocated, for tests and the benchmarks

    def take(self, length: int) -> Block:
        """A block of ``block_bytes(length)`` bytes; its contents are whatever it held."""
        size = block_bytes(length)
        with self._lending:
            buffer = self._reusable(size)
        if buffer is None:
            buffer = mmap.mmap(-1, size)
            self.made += 1
        return Block(self, buffer)

    def _reusable(self, size: int) -> mmap.mmap | None:
        """The oldest returned buffer of ``size`` bytes that nothing refers to, taken out
        of the pool (one still viewed goes to the back: the oldest is nearly always free)."""
        returned = self._returned_buffers.get(size)
        if not returned:
            return None
        for _ in range(len(returned)):
            try:
                buffer = returned.popleft()
            except IndexError:  # a dying block's buffer may arrive meanwhile, not leave
                return None
            if _unviewed(buffer):
                self._idle -= size
                return buffer
            returned.append(buffer)
            del buffer
        return None

    def _returned(self, buffer: mmap.mmap) -> None:
        size = len(buffer)
        if self._idle + size > self.keep_bytes:
            return  # enough kept: this one is unmapped once its last view goes
        self._returned_buffers.setdefault(size, deque()).append(buffer)
        self._idle += size

    @property
    def idle_bytes(self) -> int:
        return self._idle

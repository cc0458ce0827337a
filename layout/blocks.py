"""Page-aligned buffers that a restore decodes into and writes from without a copy.

A :class:`Block` is lent by a :class:`BlockPool`. Whoever fills it (a decoding thread)
hands it on inside a piece; the target writer keeps it until the direct write that reads
it has returned. Nobody gives a block back by hand: when the last reference to a
:class:`Block` goes, its buffer returns to the pool — and only if nothing else refers
to that buffer any more (no memoryview of it, not even a slice), so a buffer is never
filled again while a write, a digest or a comparison may still read it. A block whose
buffer is still viewed is simply not reused; the views keep the memory alive and free
it when they go.

Buffers are anonymous ``mmap``s: page-aligned, as direct I/O wants its memory, and
their pages stay mapped while a buffer goes round, so a restore does not pay the kernel
for fresh zeroed pages at every chunk.
"""

from __future__ import annotations

import mmap
import sys
from collections import deque

PAGE = 4096
#: the smallest block: shorter data goes in one of these
MIN_BLOCK = 64 * 1024
# sys.getrefcount of a buffer that only the block handing it back refers to: the name in
# Block.__del__, the parameter of BlockPool._returned, and getrefcount's own argument.
# A memoryview of the buffer (or any slice of one) adds one; tests/test_blocks.py checks
# both directions, so a change in how Python counts cannot make a viewed buffer reusable
# unnoticed.
_UNREFERENCED = 3


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
    """Lends :class:`Block`\\ s and takes their buffers back when nothing refers to them.

    At most ``keep_bytes`` of idle buffers are kept for reuse; more are let go. Safe to use
    from several threads: the free lists are deques (whose appends and pops are atomic),
    not guarded by a lock, because a block's buffer comes back from ``__del__``, which the
    garbage collector may run in a thread that is inside :meth:`take`.
    """

    def __init__(self, keep_bytes: int) -> None:
        self.keep_bytes = keep_bytes
        self._free: dict[int, deque[mmap.mmap]] = {}
        self._idle = 0  # bytes in the free lists (approximate under races; only a bound)
        self.made = 0  # buffers allocated, for tests and the benchmarks

    def take(self, length: int) -> Block:
        """A block of ``block_bytes(length)`` bytes; its contents are whatever it held."""
        size = block_bytes(length)
        free = self._free.get(size)
        buffer = None
        if free:
            try:
                buffer = free.pop()
                self._idle -= size
            except IndexError:  # another thread took the last one meanwhile
                buffer = None
        if buffer is None:
            buffer = mmap.mmap(-1, size)
            self.made += 1
        return Block(self, buffer)

    def _returned(self, buffer: mmap.mmap) -> None:
        if sys.getrefcount(buffer) > _UNREFERENCED:
            return  # still viewed somewhere: never reused, freed with its last view
        size = len(buffer)
        if self._idle + size > self.keep_bytes:
            return  # enough idle memory kept: this one is unmapped when it goes
        self._free.setdefault(size, deque()).append(buffer)
        self._idle += size

    @property
    def idle_bytes(self) -> int:
        return self._idle

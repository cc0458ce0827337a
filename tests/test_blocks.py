"""Pooled page-aligned blocks: reused once nothing refers to them, never while viewed."""

from __future__ import annotations

import ctypes
import gc
import mmap
import threading

import pytest

import layout.blocks as blocks_module
from layout.blocks import MIN_BLOCK, PAGE, BlockPool, block_bytes


def address(view: memoryview) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def test_a_block_no_one_refers_to_is_lent_again() -> None:
    pool = BlockPool(keep_bytes=1 << 30)
    block = pool.take(4 << 20)
    where = address(block.writable())
    del block
    again = pool.take(4 << 20)
    assert address(again.writable()) == where
    assert pool.made == 1


def test_a_block_whose_bytes_are_still_viewed_is_never_lent_again() -> None:
    pool = BlockPool(keep_bytes=1 << 30)
    block = pool.take(MIN_BLOCK)
    block.writable()[:4] = b"keep"
    held = block.view(0, 8)[2:6]  # a slice of a slice still holds the buffer
    del block
    gc.collect()
    other = pool.take(MIN_BLOCK)
    other.writable()[:8] = b"\xff" * 8
    assert bytes(held) == b"ep\0\0"
    assert pool.made == 2
    del held, other
    assert pool.take(MIN_BLOCK) is not None and pool.made == 2  # the second came back


def test_blocks_are_page_aligned_and_sized_in_few_steps() -> None:
    pool = BlockPool(keep_bytes=0)
    for length in (1, PAGE, MIN_BLOCK + 1, 3 << 20, 4 << 20):
        block = pool.take(length)
        assert block.size == block_bytes(length) >= length
        assert address(block.writable()) % PAGE == 0
    assert block_bytes(MIN_BLOCK + 1) == 2 * MIN_BLOCK
    assert block_bytes(3 << 20) == 4 << 20


def test_idle_memory_kept_is_bounded() -> None:
    pool = BlockPool(keep_bytes=2 * MIN_BLOCK)
    blocks = [pool.take(MIN_BLOCK) for _ in range(5)]
    del blocks
    assert pool.idle_bytes == 2 * MIN_BLOCK
    fresh = [pool.take(MIN_BLOCK) for _ in range(5)]
    assert pool.made == 8 and len(fresh) == 5


def test_a_view_taken_read_only_cannot_change_the_block() -> None:
    pool = BlockPool(keep_bytes=0)
    block = pool.take(PAGE)
    view = block.view(0, PAGE)
    assert view.readonly


def test_blocks_dropped_in_other_threads_come_back_whole() -> None:
    pool = BlockPool(keep_bytes=1 << 30)
    lent = [pool.take(MIN_BLOCK) for _ in range(64)]
    start = threading.Barrier(4)

    def drop(mine: list[object]) -> None:
        start.wait()
        mine.clear()

    shares = [lent[i::4] for i in range(4)]
    del lent
    threads = [threading.Thread(target=drop, args=(share,)) for share in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pool.idle_bytes == 64 * MIN_BLOCK
    again = [pool.take(MIN_BLOCK) for _ in range(64)]
    assert len({address(b.writable()) for b in again}) == 64 and pool.made == 64


def test_lending_checks_buffers_of_the_size_asked_for_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A restore of many small chunks keeps hundreds of small buffers: lending a large
    one must not check each of them (it runs once per chunk, on the restore's path)."""
    pool = BlockPool(keep_bytes=1 << 30)
    small = [pool.take(MIN_BLOCK) for _ in range(500)]
    large = pool.take(4 << 20)
    del small, large
    checked: list[int] = []
    real = blocks_module._unviewed

    def counted(buffer: mmap.mmap) -> bool:
        checked.append(len(buffer))
        return bool(real(buffer))

    monkeypatch.setattr(blocks_module, "_unviewed", counted)
    # counted() holds the buffer once more than the pool's own check does
    monkeypatch.setattr(blocks_module, "_UNREFERENCED", blocks_module._UNREFERENCED + 1)
    assert pool.take(4 << 20) is not None and pool.made == 501
    assert checked == [4 << 20]


def test_a_buffer_still_viewed_does_not_hold_up_the_next_one() -> None:
    pool = BlockPool(keep_bytes=1 << 30)
    first, second = pool.take(MIN_BLOCK), pool.take(MIN_BLOCK)
    held = first.view(0, 16)
    del first, second
    again = pool.take(MIN_BLOCK)  # the first is still viewed: the second comes back
    assert pool.made == 2
    del held, again

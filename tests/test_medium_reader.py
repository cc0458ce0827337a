"""layout.blockio.MediumReader: read-back bytes come from the medium, not the page cache.

On a file: exact bytes for unaligned ranges, at the end of the disk, with or without
direct I/O. On a loop device: a copy of the disk's bytes cached by the kernel is not
what the reader returns once the medium (the backing file) holds something else.
"""

from __future__ import annotations

import errno
import os
import random
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import needs_loop, no_direct_io

from layout import blockio
from layout.blockio import MediumReader

MIB = 1024 * 1024


def make_file(path: Path, size: int) -> bytes:
    data = random.Random(3).randbytes(size)
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered-fallback"])
def test_views_hold_the_exact_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    size = 3 * MIB + 1000  # not a whole number of 4 KiB blocks: the end needs care
    path = tmp_path / "disk.img"
    data = make_file(path, size)
    if not direct:
        no_direct_io(monkeypatch)
    with MediumReader(path, size) as reader:
        if direct and not reader.direct:
            pytest.skip(f"{tmp_path} does not do direct I/O")
        assert reader.direct is direct
        for offset, length in [(0, MIB), (1000, 5000), (4095, 2), (MIB - 7, 2 * MIB + 14)]:
            with reader.view(offset, length) as got:
                assert bytes(got) == data[offset : offset + length]
        with reader.view(size - 500, 500) as tail:
            assert bytes(tail) == data[-500:]
        with reader.view(size - 100, 4096) as short:  # past the end: shorter
            assert bytes(short) == data[-100:]


def test_a_view_is_not_usable_after_its_block(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    make_file(path, MIB)
    with MediumReader(path, MIB) as reader:
        with reader.view(0, 4096) as got:
            kept = got
        with pytest.raises(ValueError):
            bytes(kept)  # the buffer is reused by the next read


def test_concurrent_views_do_not_share_a_buffer(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    data = make_file(path, 2 * MIB)
    reader = MediumReader(path, 2 * MIB)
    with reader, reader.view(0, MIB) as first, reader.view(MIB, MIB) as second:
        assert bytes(first) == data[:MIB]
        assert bytes(second) == data[MIB:]


def test_on_a_loop_device_the_medium_wins_over_the_cache(
    tmp_path: Path, loop_device: Callable[..., str]
) -> None:
    image = tmp_path / "disk.img"
    make_file(image, 4 * MIB)
    device = loop_device(image)
    old = b"A" * 8192
    fd = os.open(device, os.O_RDWR)
    try:
        os.pwrite(fd, old, MIB)
        os.fsync(fd)
        assert os.pread(fd, 8192, MIB) == old  # now in the loop device's page cache
        # The medium changes underneath (as a disk that does not keep what it was given).
        with open(image, "r+b") as backing:
            backing.seek(MIB)
            backing.write(b"B" * 8192)
            backing.flush()
            os.fsync(backing.fileno())
        assert os.pread(fd, 8192, MIB) == old  # a plain read still sees the cached copy
        with MediumReader(device, 4 * MIB) as reader:
            assert reader.direct
            with reader.view(MIB, 8192) as got:
                assert bytes(got) == b"B" * 8192
    finally:
        os.close(fd)


def test_direct_reads_refused_later_fall_back_to_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some FUSE filesystems open with O_DIRECT and then refuse the reads (EINVAL)."""
    path = tmp_path / "disk.img"
    data = make_file(path, 2 * MIB)
    with MediumReader(path, 2 * MIB) as reader:
        if not reader.direct:
            pytest.skip(f"{tmp_path} does not do direct I/O")

        def refused(*args: object) -> int:
            raise OSError(errno.EINVAL, "Invalid argument")

        monkeypatch.setattr(blockio, "_pread_into", refused)
        with reader.view(4096, MIB) as got:
            assert bytes(got) == data[4096 : 4096 + MIB]
        assert not reader.direct
        with reader.view(0, 100) as again:
            assert bytes(again) == data[:100]


@needs_loop
def test_unaligned_ranges_on_a_disk_with_4096_byte_sectors(tmp_path: Path) -> None:
    """Direct reads must be whole logical sectors: 4 KiB on such a disk."""
    image = tmp_path / "4kn.img"
    data = make_file(image, 4 * MIB)
    device = subprocess.run(
        ["losetup", "-f", "--show", "--sector-size", "4096", str(image)],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    try:
        with MediumReader(device, 4 * MIB) as reader:
            assert reader.direct
            for offset, length in [(512, 1000), (4096 * 3 - 1, 2), (MIB + 100, MIB)]:
                with reader.view(offset, length) as got:
                    assert bytes(got) == data[offset : offset + length]
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True)


def test_same_bytes_and_all_zeros_compare_views_exactly() -> None:
    """The read-back's comparisons (memcmp speed, any buffer): every byte counts,
    lengths count, and views of mmaps compare like bytes."""
    import mmap

    rng = random.Random(3)
    size = 9 * 1024 * 1024 + 5  # more than the zero block, not a multiple of anything
    block = mmap.mmap(-1, size)
    view = memoryview(block)
    assert blockio.all_zeros(view) and blockio.all_zeros(b"") and blockio.all_zeros(view[:7])
    for where in (0, 4096, 4 * 1024 * 1024, 8 * 1024 * 1024 + 1, size - 1):
        block[where] = 1
        assert not blockio.all_zeros(view)
        assert blockio.all_zeros(view[where + 1 :])
        block[where] = 0
    data = rng.randbytes(1 << 20)
    block[: len(data)] = data
    same = view[: len(data)]
    assert blockio.same_bytes(same, data) and blockio.same_bytes(data, same)
    assert blockio.same_bytes(same, memoryview(bytearray(data)))
    assert not blockio.same_bytes(same, data[:-1]) and not blockio.same_bytes(view[:10], b"")
    for where in (0, 777, len(data) - 1):
        changed = bytearray(data)
        changed[where] ^= 0x40
        assert not blockio.same_bytes(same, memoryview(changed))
        assert not blockio.same_bytes(bytes(changed), same)

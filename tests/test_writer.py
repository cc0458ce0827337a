"""CheckedWriter never writes outside the plan: direct requests and whole engine runs.

Writes are instrumented at the lowest level (pwrite and hole punching) over many
random plans; every byte that reaches the target must lie inside the plan's extents.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engine_helpers import (
    SECTOR,
    MemoryArchive,
    expected_bytes,
    full_disk_plan,
    make_plan,
    sample_source,
)

from layout.blocks import BlockPool
from layout.models import Partition, PartitionTable
from layout.plan import RestoreArea, Stage, WriteBytes, ZeroRange
from restore_tui import writer as writer_module
from restore_tui.engine import RestoreEngine
from restore_tui.writer import CheckedWriter, ExtentFence, OutsidePlan, TargetOpenError

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64 * 1024
PATTERN = 0x5A

extents_st = st.lists(
    st.tuples(st.integers(0, SIZE - 1), st.integers(1, 4096)).map(
        lambda t: (t[0], min(SIZE, t[0] + t[1]))
    ),
    max_size=6,
)
requests_st = st.lists(
    st.tuples(st.sampled_from(["write", "zero"]), st.integers(0, SIZE - 1), st.integers(0, 5000)),
    min_size=1,
    max_size=25,
)


def mask_of(extents: list[tuple[int, int]], size: int) -> bytearray:
    """Reference answer, computed the simple way: one flag per byte of the disk."""
    mask = bytearray(size + 5000)
    for a, z in extents:
        mask[a:z] = b"\x01" * (z - a)
    return mask


def record_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Instrument the writer's two ways of changing bytes; returns the list it fills."""
    seen: list[tuple[int, int]] = []
    real_pwrite = writer_module.CheckedWriter._pwrite_all
    real_punch = writer_module.CheckedWriter._punch_hole

    def pwrite(self: CheckedWriter, offset: int, view: memoryview, *lent: Any) -> None:
        seen.append((offset, offset + len(view)))
        real_pwrite(self, offset, view, *lent)

    def punch(self: CheckedWriter, offset: int, length: int) -> bool:
        seen.append((offset, offset + length))
        return real_punch(self, offset, length)

    monkeypatch.setattr(writer_module.CheckedWriter, "_pwrite_all", pwrite)
    monkeypatch.setattr(writer_module.CheckedWriter, "_punch_hole", punch)
    return seen


@settings(max_examples=150, deadline=None)
@given(extents=extents_st, requests=requests_st)
def test_every_request_outside_the_extents_is_refused(
    extents: list[tuple[int, int]], requests: list[tuple[str, int, int]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "disk.img"
        path.write_bytes(bytes([PATTERN]) * SIZE)
        model = bytearray(path.read_bytes())
        mask = mask_of(extents, SIZE)
        with CheckedWriter(path, extents) as w:
            for kind, offset, length in requests:
                allowed = all(mask[offset : offset + length]) and offset + length <= SIZE
                try:
                    if kind == "write":
                        w.write(offset, bytes([offset % 251]) * length)
                    else:
                        w.zero(offset, length)
                except OutsidePlan:
                    assert not allowed
                    continue
                assert allowed
                fill = bytes([offset % 251]) * length if kind == "write" else bytes(length)
                model[offset : offset + length] = fill
        data = path.read_bytes()
    assert data == bytes(model)
    assert all(b == PATTERN for b, m in zip(data, mask, strict=False) if not m)


def test_fence_edges() -> None:
    fence = ExtentFence([(100, 200), (200, 300), (400, 500)])
    assert fence.extents == [(100, 300), (400, 500)]  # touching extents merge
    assert fence.allows(100, 200)
    assert not fence.allows(99, 1)
    assert not fence.allows(299, 2)
    assert not fence.allows(250, 200)  # crosses the gap 300-400
    assert fence.allows(499, 1)
    assert not fence.allows(500, 1)
    assert not fence.allows(-1, 1)


def test_missing_image_is_never_created(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.img"
    with pytest.raises(TargetOpenError, match="does not exist"):
        CheckedWriter(missing, [(0, 512)])
    assert not missing.exists()


def test_plan_longer_than_the_target_is_refused_at_open(tmp_path: Path) -> None:
    img = tmp_path / "d.img"
    img.write_bytes(bytes(4096))
    with pytest.raises(OutsidePlan, match="only 4096 bytes long"):
        CheckedWriter(img, [(0, 8192)])


def test_zero_on_an_image_reads_back_as_zeros_and_keeps_the_size(tmp_path: Path) -> None:
    img = tmp_path / "d.img"
    img.write_bytes(b"\xff" * (4 * 1024 * 1024))
    with CheckedWriter(img, [(1000, 1000 + 3 * 1024 * 1024 + 7)]) as w:
        w.zero(1000, 3 * 1024 * 1024 + 7)
        w.sync()
    data = img.read_bytes()
    assert len(data) == 4 * 1024 * 1024
    assert data[1000 : 1000 + 3 * 1024 * 1024 + 7] == bytes(3 * 1024 * 1024 + 7)
    assert data[:1000] == b"\xff" * 1000
    assert data[1000 + 3 * 1024 * 1024 + 7 :] == b"\xff" * (len(data) - 3 * 1024 * 1024 - 1007)


def test_loading_the_writer_starts_no_process_and_still_punches_holes(tmp_path: Path) -> None:
    # Looking up the C library with ctypes.util.find_library ran `ldconfig -p` at every
    # start-up of every command (tens of ms before a restore's first byte).
    probe = (
        "import sys\n"
        "spawned = []\n"
        "sys.addaudithook(lambda e, a: spawned.append(a[0]) if e == 'subprocess.Popen' else None)\n"
        "import restore_tui.writer as w\n"
        "print(spawned, w._FALLOCATE is not None)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.split() == ["[]", "True"]
    img = tmp_path / "d.img"
    img.write_bytes(b"\xff" * (4 * 1024 * 1024))
    with CheckedWriter(img, [(0, 4 * 1024 * 1024)]) as w:
        w.zero(1024 * 1024, 2 * 1024 * 1024)
        w.sync()
    assert os.stat(img).st_blocks * 512 <= 2 * 1024 * 1024 + 64 * 1024  # a hole, not zeros


@pytest.mark.usefixtures("loop_device")
def test_block_device_zeroout_and_exclusive_open(
    tmp_path: Path, loop_device: Callable[..., str]
) -> None:
    img = tmp_path / "d.img"
    img.write_bytes(b"\xee" * (8 * 1024 * 1024))
    dev = loop_device(img)
    lo, hi = 4096 + 100, 6 * 1024 * 1024 + 333  # unaligned edges around whole pages
    with CheckedWriter(dev, [(lo, hi)]) as w:
        assert w.is_block_device and w.size == 8 * 1024 * 1024
        w.zero(lo, hi - lo)
        w.sync()
        assert w.read(lo - 1, hi - lo + 2) == b"\xee" + bytes(hi - lo) + b"\xee"
    data = img.read_bytes()
    assert data[lo:hi] == bytes(hi - lo) and data[:lo] == b"\xee" * lo
    assert data[hi:] == b"\xee" * (len(data) - hi)
    # Someone else holds the disk exclusively (as a mount does): refused, in plain words.
    holder = os.open(dev, os.O_RDONLY | os.O_EXCL)
    try:
        with pytest.raises(TargetOpenError) as info:
            CheckedWriter(dev, [(0, 512)])
        assert "in use" in str(info.value.strerror)
    finally:
        os.close(holder)


# -- whole engine runs over random plans --------------------------------------------------

DISK = 256 * 1024
PART_START, PART_STOP = 16 * 1024, DISK - 4 * 1024


@st.composite
def random_plans(draw: st.DrawFn) -> tuple[int, list[list[tuple[str, int, int, int]]]]:
    seed = draw(st.integers(0, 2**16))
    stages = draw(
        st.lists(
            st.lists(
                st.tuples(
                    st.sampled_from(["write-bytes", "zero", "restore-area"]),
                    st.integers(0, DISK - 1),  # target offset
                    st.integers(1, 40_000),  # length
                    st.integers(PART_START, PART_STOP - 1),  # source offset for copies
                ),
                min_size=1,
                max_size=4,
            ),
            min_size=1,
            max_size=4,
        )
    )
    return seed, stages


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=random_plans())
def test_engine_writes_only_inside_random_plans(
    spec: tuple[int, list[list[tuple[str, int, int, int]]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import random

    seed, stage_specs = spec
    rng = random.Random(seed)
    table = PartitionTable(
        scheme="msdos",
        disk_size_lba=DISK // SECTOR,
        mbr_signature="00C0FFEE",
        partitions=(
            Partition(
                number=1,
                start_lba=PART_START // SECTOR,
                length_lba=(PART_STOP - PART_START) // SECTOR,
                mbr_type=0x83,
            ),
        ),
    )
    source = bytearray(rng.randbytes(DISK))
    source[PART_START + 70_000 : PART_START + 140_000] = bytes(70_000)
    # Only some of the partition is stored, like used blocks.
    stored = [(PART_START, PART_START + 60_000), (PART_START + 65_536, PART_STOP - 10_000)]
    archive = MemoryArchive(bytes(source), table, stored={1: stored})
    stages = []
    for i, actions in enumerate(stage_specs):
        built = []
        for kind, offset, length, src in actions:
            length = min(length, DISK - offset)
            if kind == "write-bytes":
                built.append(
                    WriteBytes(
                        offset=offset,
                        length=length,
                        description="bytes",
                        data=rng.randbytes(length).hex(),
                    )
                )
            elif kind == "zero":
                built.append(ZeroRange(offset=offset, length=length, description="zeros"))
            else:
                length = min(length, PART_STOP - src)
                built.append(
                    RestoreArea(
                        offset=offset,
                        length=length,
                        description="copy",
                        area=1,
                        source_offset=src,
                    )
                )
        stages.append(
            Stage(name=f"partition-{i + 1}", title=f"Stage {i + 1}", actions=tuple(built))
        )
    seen = record_writes(monkeypatch)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "t.img"
        target.write_bytes(bytes([PATTERN]) * DISK)
        plan = make_plan(archive, target, DISK, table, stages)
        fence = ExtentFence(plan.write_extents())
        before = target.read_bytes()
        RestoreEngine(
            plan,
            archive,
            str(target),
            journal_location=Path(tmp) / "j.json",
            checkpoint_seconds=0.0,
        ).run()
        after = target.read_bytes()
    assert seen, "the engine wrote nothing"
    for lo, hi in seen:
        assert fence.allows(lo, hi - lo), f"write [{lo}, {hi}) outside {plan.write_extents()}"
    assert after == expected_bytes(plan, archive, before)
    mask = mask_of(plan.write_extents(), DISK)
    assert all(b == PATTERN for b, m in zip(after, mask, strict=False) if not m)


# -- direct writes queued two at a time ---------------------------------------------------

MIB = 1024 * 1024


def direct_writer(path: Path, size: int) -> CheckedWriter:
    path.write_bytes(b"\x00" * size)
    writer = CheckedWriter(path, [(0, size)])
    if writer._queue is None:
        writer.close()
        pytest.skip(f"{path.parent} takes no direct I/O (tmpfs?): nothing is queued there")
    return writer


def on_direct_writes(
    monkeypatch: pytest.MonkeyPatch,
    writer: CheckedWriter,
    before: Callable[[int, memoryview], None],
) -> None:
    """Call ``before(offset, data)`` ahead of every write through the writer's direct
    descriptor (``data``: the request's bytes, however many pieces of memory they are in)."""
    real, real_vector = os.pwrite, os.pwritev

    def pwrite(fd: int, data: memoryview, offset: int) -> int:
        if fd == writer._direct:
            before(offset, data)
        return real(fd, data, offset)

    def pwritev(fd: int, views: list[memoryview], offset: int) -> int:
        if fd == writer._direct:
            before(offset, memoryview(b"".join(views)))
        return real_vector(fd, views, offset)

    monkeypatch.setattr(writer_module.os, "pwrite", pwrite)
    monkeypatch.setattr(writer_module.os, "pwritev", pwritev)


def test_two_direct_writes_are_in_flight_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = writer_module.DIRECT_BUFFER
    writer = direct_writer(tmp_path / "t.img", 2 * size)
    both = threading.Barrier(2, timeout=10)
    on_direct_writes(monkeypatch, writer, lambda _offset, _data: both.wait())
    try:
        # Each request must meet the other one at the barrier: one at a time, they cannot.
        writer.write(0, b"\x11" * size)
        writer.write(size, b"\x22" * size)
        writer.sync()
    finally:
        writer.close()
    assert (tmp_path / "t.img").read_bytes() == b"\x11" * size + b"\x22" * size


def test_writes_that_continue_one_another_go_to_the_disk_as_one_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = writer_module.DIRECT_BUFFER
    writer = direct_writer(tmp_path / "t.img", 3 * size)
    requests: list[tuple[int, int]] = []
    on_direct_writes(monkeypatch, writer, lambda offset, data: requests.append((offset, len(data))))
    slices = [bytes([n]) * MIB for n in range(1, 2 * size // MIB + 3)]
    try:
        for i, piece in enumerate(slices[:-1]):  # two buffers' worth and a MiB, gap-free
            writer.write(i * MIB, piece)
        writer.write(3 * size - MIB, slices[-1])  # elsewhere: a request of its own
        writer.sync()
    finally:
        writer.close()
    # (Two requests are in flight at once: their order here is the threads'.)
    assert sorted(requests) == [(0, size), (size, size), (2 * size, MIB), (3 * size - MIB, MIB)]
    image = (tmp_path / "t.img").read_bytes()
    assert image[: 2 * size + MIB] == b"".join(slices[:-1])
    assert image[2 * size + MIB : 3 * size - MIB] == bytes(size - 2 * MIB)
    assert image[3 * size - MIB :] == slices[-1]


def test_a_queued_write_is_seen_by_reads_and_later_writes_of_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = direct_writer(tmp_path / "t.img", 8 * MIB)

    def before(offset: int, data: memoryview) -> None:
        if data[0] in (0x11, 0x22):
            time.sleep(0.3)  # still under way when the next call comes

    on_direct_writes(monkeypatch, writer, before)
    try:
        writer.write(0, b"\x11" * (4 * MIB))
        assert writer.read(4096, 4) == b"\x11" * 4  # a read waits for the write
        writer.write(0, b"\x22" * (4 * MIB))
        writer.write(0, b"\x33" * (4 * MIB))  # the same bytes again: in order, last wins
        writer.sync()
    finally:
        writer.close()
    assert (tmp_path / "t.img").read_bytes()[: 4 * MIB] == b"\x33" * (4 * MIB)


def test_a_failed_queued_write_is_raised_by_the_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = direct_writer(tmp_path / "t.img", 8 * MIB)

    def fail(offset: int, data: memoryview) -> None:
        raise OSError(errno.EIO, "Input/output error")

    on_direct_writes(monkeypatch, writer, fail)
    try:
        writer.write(0, b"\x11" * (4 * MIB))  # queued: its failure is not known yet
        with pytest.raises(OSError) as failed:
            writer.sync()
        assert failed.value.errno == errno.EIO
    finally:
        writer.close()  # waits, and does not raise again


def test_a_block_is_not_reused_before_its_write_has_returned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """write_block sends a block's own memory: until that write returns, its buffer is
    lent to no one else, even when nobody but the writer still holds the block."""
    writer = direct_writer(tmp_path / "t.img", 8 * MIB)
    pool = BlockPool(keep_bytes=64 * MIB)
    under_way, release = threading.Event(), threading.Event()

    def hold(_offset: int, _data: memoryview) -> None:
        under_way.set()
        assert release.wait(10)

    on_direct_writes(monkeypatch, writer, hold)
    try:
        block = pool.take(4 * MIB)
        block.writable()[:] = b"\x5a" * (4 * MIB)
        writer.write_block(0, block, 0, 4 * MIB)
        writer.writes_under_way()  # sent on: the write now waits in hold()
        assert under_way.wait(10)
        del block
        other = pool.take(4 * MIB)  # must not be the buffer being written
        other.writable()[:] = b"\xa5" * (4 * MIB)
        release.set()
        writer.sync()
        del other
        assert pool.made == 2
        assert pool.idle_bytes == 8 * MIB  # both back once their writes returned
    finally:
        release.set()
        writer.close()
    assert (tmp_path / "t.img").read_bytes()[: 4 * MIB] == b"\x5a" * (4 * MIB)


def test_a_block_sent_from_an_unaligned_place_is_copied_and_lands_right(tmp_path: Path) -> None:
    writer = direct_writer(tmp_path / "t.img", 8 * MIB)
    pool = BlockPool(keep_bytes=0)
    block = pool.take(4 * MIB)
    block.writable()[:] = bytes(range(256)) * (4 * MIB // 256)
    try:
        writer.write_block(4096, block, 512, 512 + 2 * MIB)  # memory not page-aligned
        writer.write_block(3 * MIB + 512, block, 0, 1024)  # a place not either
        writer.sync()
    finally:
        writer.close()
    image = (tmp_path / "t.img").read_bytes()
    expected = bytes(block.view(0, 4 * MIB))
    assert image[4096 : 4096 + 2 * MIB] == expected[512 : 512 + 2 * MIB]
    assert image[3 * MIB + 512 : 3 * MIB + 1536] == expected[:1024]


def test_many_small_blocks_in_a_row_are_written_in_requests_the_kernel_takes(
    tmp_path: Path,
) -> None:
    """Pages from 2048 blocks, one after another on the disk: more pieces of memory than
    one pwritev may carry (IOV_MAX), so they go in several requests, each byte right."""
    count = 2048
    writer = direct_writer(tmp_path / "t.img", count * 4096)
    pool = BlockPool(keep_bytes=0)
    blocks = [pool.take(4096) for _ in range(count)]
    for n, block in enumerate(blocks):
        block.writable()[:4096] = n.to_bytes(2, "little") * 2048
    try:
        for n, block in enumerate(blocks):
            writer.write_block(n * 4096, block, 0, 4096)
        writer.sync()
    finally:
        writer.close()
    image = (tmp_path / "t.img").read_bytes()
    assert image == b"".join(n.to_bytes(2, "little") * 2048 for n in range(count))


def test_read_back_waits_for_the_writes_still_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read-back of an area reads what the writer has finished writing, not bytes whose
    write is still queued (slow writes: each direct write waits 20 ms)."""
    disk, table = sample_source(seed=4)
    archive = MemoryArchive(disk, table)
    target = tmp_path / "target.img"
    target.write_bytes(b"\xa5" * len(disk))
    plan = full_disk_plan(archive, target, len(disk))
    real, real_vector = os.pwrite, os.pwritev
    direct: set[int] = set()
    real_open = writer_module.CheckedWriter._open_direct

    def open_direct(self: CheckedWriter, flags: int) -> int | None:
        fd = real_open(self, flags)
        if fd is None:
            pytest.skip(f"{tmp_path} takes no direct I/O (tmpfs?): nothing is queued there")
        direct.add(fd)
        return fd

    def slow(fd: int, data: memoryview, offset: int) -> int:
        if fd in direct:
            time.sleep(0.02)
        return real(fd, data, offset)

    def slow_vector(fd: int, views: list[memoryview], offset: int) -> int:
        if fd in direct:
            time.sleep(0.02)
        return real_vector(fd, views, offset)

    monkeypatch.setattr(writer_module.CheckedWriter, "_open_direct", open_direct)
    monkeypatch.setattr(writer_module.os, "pwrite", slow)
    monkeypatch.setattr(writer_module.os, "pwritev", slow_vector)
    RestoreEngine(plan, archive, str(target), journal_location=tmp_path / "j.json").run()
    assert target.read_bytes() == expected_bytes(plan, archive, b"\xa5" * len(disk))

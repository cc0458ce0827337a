"""The read-back check runs behind the writes (restore_tui.datapath.ReadBehind).

Unit tests on a plain file: batches are checked once flushed, a chunk stored wrong is
found while writing goes on, chunks cut by the start are left to the stage's end check.
On a real restore: a byte the medium stores wrong in the first megabytes of a partition
stops the restore long before the partition is written, and a clean restore reads back
every chunk behind its writes and nothing twice.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import pytest

import archive.digest as digest_module
import restore_tui.datapath as datapath_module
import restore_tui.engine as engine_module
import restore_tui.writer as writer_module
from archive import open_archive
from archive.base import Piece
from archive.digest import readback_digest
from archive.manifest import Chunk, PartitionImage
from layout.blockio import MediumReader
from restore_tui.cli import main
from restore_tui.datapath import ReadBackMismatch, ReadBehind

MIB = 1024 * 1024


def data_chunks(count: int, size: int = MIB, seed: int = 1) -> tuple[list[Chunk], list[bytes]]:
    rng = random.Random(seed)
    blobs = [rng.randbytes(size) for _ in range(count)]
    chunks = [
        Chunk(offset=i * size, length=size, kind="data", sha256=hashlib.sha256(b).hexdigest())
        for i, b in enumerate(blobs)
    ]
    return chunks, blobs


class SpyReader(MediumReader):
    """A MediumReader that records which ranges were settled for reading back."""

    def __init__(self, path: Path, size: int) -> None:
        super().__init__(path, size)
        self.settled: list[tuple[int, int]] = []

    def settle(self, offset: int, length: int) -> None:
        self.settled.append((offset, length))
        super().settle(offset, length)


class Target:
    """A target file written chunk by chunk, read back through a recording reader."""

    def __init__(self, path: Path, size: int) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(self.fd, size)
        self.reader = SpyReader(path, size)

    def behind(self, chunks: list[Chunk], delta: int, lo: int, hi: int) -> ReadBehind:
        return ReadBehind(self.reader, chunks, delta, lo, hi, batch=2 * MIB)

    def close(self) -> None:
        self.reader.close()
        os.close(self.fd)


def test_every_chunk_is_checked_behind_the_writes(tmp_path: Path) -> None:
    chunks, blobs = data_chunks(8)
    delta = 3 * MIB  # the area sits 3 MiB further on the target than on the source
    target = Target(tmp_path / "t.img", 12 * MIB)
    behind = target.behind(chunks, delta, 0, 8 * MIB)
    try:
        for c, b in zip(chunks, blobs, strict=True):
            os.pwrite(target.fd, b, c.offset + delta)
            behind.written_to(c.stop)
        # Checks were handed out while writing went on (a batch each 2 MiB), each range
        # made readable from the medium first.
        assert len(target.reader.settled) >= 3
        assert target.reader.settled[0] == (delta, 2 * MIB)
        behind.finish()
    finally:
        behind.close()
        target.close()
    assert behind.checked == [(delta, delta + 8 * MIB)]


def test_a_chunk_stored_wrong_is_found_while_writing_goes_on(tmp_path: Path) -> None:
    chunks, blobs = data_chunks(16)
    target = Target(tmp_path / "t.img", 16 * MIB)
    behind = target.behind(chunks, 0, 0, 16 * MIB)
    written = 0
    try:
        with pytest.raises(ReadBackMismatch) as found:
            for c, b in zip(chunks, blobs, strict=True):
                wrong = bytearray(b)
                if c.offset == 2 * MIB:
                    wrong[100] ^= 0xFF  # the medium keeps one byte wrong
                os.pwrite(target.fd, bytes(wrong), c.offset)
                written = c.stop
                behind.written_to(c.stop)
            behind.finish()
    finally:
        behind.close()
        target.close()
    assert found.value.chunk.offset == 2 * MIB
    # Found behind the writes, not after all of them: at most a few batches later.
    assert written <= 10 * MIB


def test_chunks_cut_by_the_start_are_left_to_the_end_check(tmp_path: Path) -> None:
    chunks, blobs = data_chunks(4)
    target = Target(tmp_path / "t.img", 4 * MIB)
    lo = MIB // 2  # a resume point inside the first chunk
    behind = target.behind(chunks, 0, lo, 4 * MIB)
    try:
        for c, b in zip(chunks, blobs, strict=True):
            os.pwrite(target.fd, b, c.offset)
            behind.written_to(c.stop)
        behind.finish()
    finally:
        behind.close()
        target.close()
    assert behind.checked == [(MIB, 4 * MIB)]


def mismatch_reported(
    tmp_path: Path, count: int, write: Callable[[Chunk, bytes], tuple[Piece, bytes]]
) -> int:
    """Write ``count`` chunks behind a ReadBehind, ``write(chunk, its bytes)`` giving the
    piece announced before the write and the bytes the medium then keeps; the source
    offset of the chunk the read-back reports."""
    chunks, blobs = data_chunks(count)
    target = Target(tmp_path / "t.img", count * MIB)
    behind = target.behind(chunks, 0, 0, count * MIB)
    try:
        with pytest.raises(ReadBackMismatch) as found:
            for c, b in zip(chunks, blobs, strict=True):
                piece, stored = write(c, b)
                behind.will_write(piece)
                os.pwrite(target.fd, stored, c.offset)
                behind.written_to(c.stop)
            behind.finish()
    finally:
        behind.close()
        target.close()
    return found.value.chunk.offset


def flipped(data: bytes, where: int, bits: int) -> bytes:
    changed = bytearray(data)
    changed[where] ^= bits
    return bytes(changed)


def test_read_back_compares_with_the_quick_digest_of_the_bytes_written(tmp_path: Path) -> None:
    """A piece's read-back digest (taken when its bytes matched the backup) is what the
    disk's bytes are compared with: a chunk whose written bytes were not the ones that
    passed the check is caught, though the disk holds bytes the manifest vouches for."""

    def write(c: Chunk, b: bytes) -> tuple[Piece, bytes]:
        # What the check saw differs from what was written, for the chunk at 1 MiB.
        taken = flipped(b, 7, 1) if c.offset == MIB else b
        return Piece(c.offset, c.length, b, readback_digest(taken)), b

    assert mismatch_reported(tmp_path, 6, write) == MIB


def test_pieces_without_a_quick_digest_are_read_back_against_the_manifest(
    tmp_path: Path,
) -> None:
    def write(c: Chunk, b: bytes) -> tuple[Piece, bytes]:
        stored = flipped(b, -1, 0x80) if c.offset == 2 * MIB else b
        return Piece(c.offset, c.length, b), stored  # a Clonezilla-style piece

    assert mismatch_reported(tmp_path, 4, write) == 2 * MIB


needs_sfdisk = pytest.mark.skipif(
    shutil.which("sfdisk") is None, reason="needs sfdisk to write a partition table"
)


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 64 MiB MBR disk whose one partition is full of incompressible data (no
    filesystem: the backup stores every byte of it), and its backup."""
    work = tmp_path_factory.mktemp("read-behind")
    source = work / "src.img"
    with open(source, "wb") as f:
        f.truncate(64 * MIB)
    subprocess.run(
        ["sfdisk", "-q", str(source)], input="label: dos\nstart=2048, type=83\n",
        text=True, check=True,
    )
    rng = random.Random(7)
    with open(source, "r+b") as f:
        f.seek(MIB)
        for _ in range(62):
            f.write(rng.randbytes(MIB))
    archive = work / "src.rtui"
    assert main(["backup", str(source), str(archive)]) == 0
    return source, archive


@needs_sfdisk
def test_a_clean_restore_reads_every_chunk_back_once(
    backed_up: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, archive = backed_up
    checked: list[int] = []
    real = datapath_module.first_bad_chunk

    def counting(reader, chunks, delta, **kw):  # type: ignore[no-untyped-def]
        checked.extend(c.offset for c in chunks if c.kind == "data")
        return real(reader, chunks, delta, **kw)

    monkeypatch.setattr(datapath_module, "first_bad_chunk", counting)
    monkeypatch.setattr(engine_module, "VERIFY_BATCH", 2 * MIB)
    target = tmp_path / "t.img"
    target.write_bytes(b"")
    os.truncate(target, source.stat().st_size)
    assert main(["restore", str(archive), "--target", str(target), "--yes"]) == 0
    with open_archive(archive) as arc:
        stored = [c.offset for p in arc.manifest.partitions for c in p.chunks if c.kind == "data"]
    # Every stored chunk read back (behind the writes or at the stage's end), none twice.
    assert sorted(checked) == sorted(stored)


@needs_sfdisk
def test_a_verified_restore_hashes_each_chunk_with_the_backups_digest_once(
    backed_up: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before writing, by the backup's BLAKE3; after reading back, by the quick digest
    taken then (archive.digest.readback_digest): BLAKE3 once per byte, not twice."""
    source, archive = backed_up
    hashed: list[int] = []
    real = digest_module._HASHERS["blake3"]

    def counting(data):  # type: ignore[no-untyped-def]
        hashed.append(len(data))
        return real(data)

    monkeypatch.setitem(digest_module._HASHERS, "blake3", counting)
    target = tmp_path / "t.img"
    target.write_bytes(b"")
    os.truncate(target, source.stat().st_size)
    assert main(["restore", str(archive), "--target", str(target), "--yes"]) == 0
    with open_archive(archive) as arc:
        stored = [c.length for p in arc.manifest.partitions for c in p.chunks if c.kind == "data"]
        stored += [c.length for c in arc.manifest.boot.track0 if c.kind == "data"]
    assert sum(hashed) == sum(stored) and len(hashed) == len(stored)
    assert target.read_bytes() == source.read_bytes()


@needs_sfdisk
def test_a_byte_stored_wrong_stops_the_restore_long_before_the_partition_ends(
    backed_up: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, archive = backed_up
    with open_archive(archive) as arc:
        biggest = max(arc.manifest.partitions, key=stored)
        first = next(c for c in biggest.chunks if c.kind == "data")
    flaw = first.offset + 100  # the disk is restored at the source's offsets
    original = writer_module.CheckedWriter._pwrite_all
    written_after: list[int] = []

    def flaky(self, offset: int, view: memoryview, *lent) -> None:  # type: ignore[no-untyped-def]
        if offset <= flaw < offset + len(view):
            data = bytearray(view)
            data[flaw - offset] ^= 0xFF  # the medium keeps one byte wrong
            original(self, offset, memoryview(bytes(data)))
            return
        if offset > flaw:
            written_after.append(len(view))
        original(self, offset, view, *lent)

    monkeypatch.setattr(writer_module.CheckedWriter, "_pwrite_all", flaky)
    # Small batches, so a small sample partition has several.
    monkeypatch.setattr(engine_module, "VERIFY_BATCH", 2 * MIB)
    target = tmp_path / "t.img"
    target.write_bytes(b"")
    os.truncate(target, source.stat().st_size)
    assert main(["restore", str(archive), "--target", str(target), "--yes"]) != 0
    assert f"byte {flaw} of {target} read back different" in capsys.readouterr().err
    # Stopped behind the writes, not after the whole partition was written.
    assert sum(written_after) < stored(biggest) // 2


def stored(image: PartitionImage) -> int:
    return sum(c.length for c in image.chunks if c.kind == "data")


@needs_sfdisk
def test_reading_back_does_not_flush_the_disk_for_every_batch(
    backed_up: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Direct reads see what the medium holds without a flush first: the disk is flushed
    for the checkpoints only (a flush per batch costs a USB disk dearly)."""
    source, archive = backed_up
    target = tmp_path / "t.img"
    target.write_bytes(b"")
    os.truncate(target, source.stat().st_size)
    with MediumReader(target, source.stat().st_size) as probe:
        if not probe.direct:
            pytest.skip(f"{tmp_path} does not do direct I/O: each batch is flushed there")
    flushes: list[int] = []
    saves: list[int] = []
    real_fdatasync, real_save = os.fdatasync, engine_module.RestoreEngine._save

    def fdatasync(fd: int) -> None:
        flushes.append(fd)
        real_fdatasync(fd)

    def save(self, **fields):  # type: ignore[no-untyped-def]
        saves.append(1)
        real_save(self, **fields)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(engine_module.RestoreEngine, "_save", save)
    monkeypatch.setattr(engine_module, "VERIFY_BATCH", 2 * MIB)  # 31 batches
    assert main(["restore", str(archive), "--target", str(target), "--yes"]) == 0
    # One flush of the target (its two descriptors) per saved record — checkpoints and
    # stage ends — and the table's; none per batch.
    assert len(flushes) <= 2 * (len(saves) + 1) < 31


def test_the_check_waits_for_the_writes_under_way_and_the_writer_does_not(
    tmp_path: Path,
) -> None:
    """A batch handed over while its last write is still under way is read only once that
    write has returned, on the check's own thread: the writer goes on meanwhile."""
    chunks, blobs = data_chunks(4)
    target = Target(tmp_path / "t.img", 4 * MIB)
    under_way: Future[None] = Future()
    behind = ReadBehind(
        target.reader, chunks, 0, 0, 4 * MIB, batch=4 * MIB, writes_under_way=lambda: [under_way]
    )
    try:
        for c, b in zip(chunks[:3], blobs[:3], strict=True):
            os.pwrite(target.fd, b, c.offset)
        # The last chunk's write has not returned: the writer must not wait for it here (if
        # it did, a timer lets it go on after 5 s, and the time says so).
        rescue = threading.Timer(5, lambda: under_way.done() or under_way.set_result(None))
        rescue.start()
        started = time.monotonic()
        behind.written_to(4 * MIB)
        waited = time.monotonic() - started
        rescue.cancel()
        os.pwrite(target.fd, blobs[3], chunks[3].offset)  # ... it returns now
        if not under_way.done():
            under_way.set_result(None)
        assert waited < 2
        behind.finish()
    finally:
        behind.close()
        target.close()
    assert behind.checked == [(0, 4 * MIB)]


def test_a_write_under_way_that_fails_stops_the_check_with_its_error(tmp_path: Path) -> None:
    chunks, blobs = data_chunks(2)
    target = Target(tmp_path / "t.img", 2 * MIB)
    failed: Future[None] = Future()
    failed.set_exception(OSError(errno.EIO, "Input/output error"))
    behind = ReadBehind(
        target.reader, chunks, 0, 0, 2 * MIB, batch=2 * MIB, writes_under_way=lambda: [failed]
    )
    try:
        os.pwrite(target.fd, blobs[0], 0)
        with pytest.raises(OSError) as error:
            behind.written_to(2 * MIB)
            behind.finish()
        assert error.value.errno == errno.EIO
    finally:
        behind.close()
        target.close()
    assert behind.checked == []


@needs_sfdisk
def test_decoded_chunks_go_to_the_disk_from_the_memory_they_were_decoded_into(
    backed_up: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A native backup's chunks are decompressed into page-aligned blocks that the writer
    sends as they are: of a partition's 62 MiB, only the table and boot code are copied
    on the way to the disk, and the disk holds the source's bytes."""
    source, archive = backed_up
    copied: list[int] = []
    sent: list[int] = []
    real_copy, real_send = (
        writer_module._DirectWrites.write,
        writer_module._DirectWrites.write_block,
    )

    def copy(self, offset: int, view: memoryview) -> None:  # type: ignore[no-untyped-def]
        copied.append(len(view))
        real_copy(self, offset, view)

    def send(self, offset, block, start, stop) -> None:  # type: ignore[no-untyped-def]
        sent.append(stop - start)
        real_send(self, offset, block, start, stop)

    monkeypatch.setattr(writer_module._DirectWrites, "write", copy)
    monkeypatch.setattr(writer_module._DirectWrites, "write_block", send)
    target = tmp_path / "t.img"
    target.write_bytes(b"")
    os.truncate(target, source.stat().st_size)
    try:
        os.close(os.open(target, os.O_RDONLY | os.O_DIRECT))
    except OSError:
        pytest.skip(f"{tmp_path} takes no direct I/O (tmpfs?): nothing is queued there")
    assert main(["restore", str(archive), "--target", str(target), "--yes"]) == 0
    assert sum(sent) == 62 * MIB
    assert sum(copied) < MIB
    assert target.read_bytes() == source.read_bytes()

"""restore_tui.datapath: digest read-back checks on real files, holes, damage and cut ranges."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

from archive.manifest import Chunk
from layout.blockio import MediumReader
from restore_tui.datapath import check_copy, first_bad_chunk, read_runs, split_for_digest

MIB = 1024 * 1024


def data_chunk(offset: int, data: bytes) -> Chunk:
    return Chunk(
        offset=offset, length=len(data), kind="data", sha256=hashlib.sha256(data).hexdigest()
    )


def make_target(tmp_path: Path, delta: int) -> tuple[Path, list[Chunk], dict[int, bytes]]:
    """A sparse target holding three data chunks and a zero run (a hole) at source + delta."""
    rng = random.Random(5)
    blobs = {0: rng.randbytes(MIB), MIB: rng.randbytes(300_000), 3 * MIB: rng.randbytes(MIB)}
    chunks = [data_chunk(0, blobs[0]), data_chunk(MIB, blobs[MIB])]
    chunks.append(Chunk(offset=2 * MIB, length=MIB, kind="zero"))
    chunks.append(data_chunk(3 * MIB, blobs[3 * MIB]))
    path = tmp_path / "target.img"
    with open(path, "wb") as f:
        f.truncate(delta + 8 * MIB)
        for offset, data in blobs.items():
            f.seek(offset + delta)
            f.write(data)
    return path, chunks, blobs


def test_split_keeps_whole_chunks_and_cuts_the_ends() -> None:
    chunks = [
        Chunk(offset=0, length=100, kind="data", sha256="a" * 64),
        Chunk(offset=100, length=100, kind="zero"),
        Chunk(offset=200, length=100, kind="data"),  # no digest (a Clonezilla image)
        Chunk(offset=400, length=100, kind="data", sha256="b" * 64),
    ]
    split = split_for_digest(chunks, 50, 450)
    assert [c.offset for c in split.chunks] == [100]
    # The cut first chunk and the digest-less one join; the gap 300-400 was never written.
    assert split.rest == ((50, 100), (200, 300), (400, 450))
    whole = split_for_digest(chunks, 0, 500)
    assert [c.offset for c in whole.chunks] == [0, 100, 400]
    assert whole.rest == ((200, 300),)


def test_intact_target_passes_including_a_hole(tmp_path: Path) -> None:
    delta = 5 * MIB
    path, chunks, _ = make_target(tmp_path, delta)
    with MediumReader(path, path.stat().st_size) as reader:
        seen: list[int] = []
        for sparse in (True, False):
            bad = first_bad_chunk(
                reader, chunks, delta, sparse_file=sparse, on_chunk=lambda c: seen.append(c.offset)
            )
            assert bad is None
        assert seen == [c.offset for c in chunks] * 2


def test_flipped_byte_and_dirty_zero_run_are_found(tmp_path: Path) -> None:
    delta = 512
    path, chunks, _ = make_target(tmp_path, delta)
    with open(path, "r+b") as f:
        f.seek(3 * MIB + delta + 777)
        old = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([old[0] ^ 0x40]))
        f.seek(2 * MIB + delta + 4096)
        f.write(b"\x01")  # garbage left in what should be zeros
    with MediumReader(path, path.stat().st_size) as reader:
        bad = first_bad_chunk(reader, chunks, delta, sparse_file=True)
        assert bad is not None and bad.offset == 2 * MIB  # the earlier of the two
        bad = first_bad_chunk(reader, chunks[3:], delta)
        assert bad is not None and bad.offset == 3 * MIB


def test_check_copy_reports_the_exact_byte(tmp_path: Path) -> None:
    delta = 4096
    path, chunks, blobs = make_target(tmp_path, delta)
    flip = MIB + 1234
    with open(path, "r+b") as f:
        f.seek(flip + delta)
        f.write(bytes([blobs[MIB][1234] ^ 1]))
    fd = os.open(path, os.O_RDONLY)
    calls: list[tuple[int, int]] = []

    def slow(lo: int, hi: int) -> int | None:
        """Byte comparison against the known source, like the engine's fallback."""
        calls.append((lo, hi))
        got = os.pread(fd, hi - lo, lo)
        for i, byte in enumerate(got):
            src = lo - delta + i
            base = max((o for o in blobs if o <= src), default=None)
            want = 0
            if base is not None and src - base < len(blobs[base]):
                want = blobs[base][src - base]
            if byte != want:
                return lo + i
        return None

    reader = MediumReader(path, path.stat().st_size)
    try:
        # Whole range: the bad chunk is found by digest, the byte by the slow check.
        assert check_copy(reader, chunks, delta, 0, 4 * MIB, slow) == flip + delta
        assert calls == [(MIB + delta, MIB + 300_000 + delta)]
        # A range that cuts the first chunk and stops before the damage: clean.
        calls.clear()
        assert check_copy(reader, chunks, delta, 1000, MIB, slow) is None
        assert calls == [(1000 + delta, MIB + delta)]
    finally:
        reader.close()
        os.close(fd)


def test_chunks_that_follow_one_another_are_read_back_in_one_request(tmp_path: Path) -> None:
    """Six 4 MiB data chunks, a zero run, two more: the read-back asks the disk for 16, 8,
    and 8 MiB (never across the zero run, never more than READ_BACK_SPAN), and a byte
    wrong in the middle of a joined read is still put on its own chunk."""
    rng = random.Random(8)
    blobs = [rng.randbytes(4 * MIB) for _ in range(8)]
    places = [i * 4 * MIB for i in range(6)] + [28 * MIB, 32 * MIB]
    chunks = [data_chunk(at, b) for at, b in zip(places, blobs, strict=True)]
    chunks.insert(6, Chunk(offset=24 * MIB, length=4 * MIB, kind="zero"))
    path = tmp_path / "target.img"
    with open(path, "wb") as f:
        f.truncate(36 * MIB)
        for at, b in zip(places, blobs, strict=True):
            f.seek(at)
            f.write(b)
    assert [[c.offset // MIB for c in run] for run in read_runs(chunks)] == [
        [0, 4, 8, 12], [16, 20], [24], [28, 32]
    ]  # fmt: skip
    with MediumReader(path, 36 * MIB) as reader:
        asked: list[int] = []
        real_view = reader.view

        def view(offset: int, length: int):  # type: ignore[no-untyped-def]
            asked.append(length)
            return real_view(offset, length)

        reader.view = view  # type: ignore[method-assign]
        assert first_bad_chunk(reader, chunks, 0, sparse_file=True) is None
        assert sorted(asked) == [8 * MIB, 8 * MIB, 16 * MIB]  # the hole is not read
        with open(path, "r+b") as f:
            f.seek(9 * MIB)
            f.write(bytes([blobs[2][MIB] ^ 1]))
        bad = first_bad_chunk(reader, chunks, 0, sparse_file=True)
        assert bad is not None and bad.offset == 8 * MIB

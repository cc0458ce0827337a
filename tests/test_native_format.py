"""The native archive format on real bytes: round trip, zero extents, atomic writes,
and every kind of damage (data, manifest, footer, header, truncation, wrong files)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
import subprocess
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
import zstandard
from conftest import no_direct_io

from archive import open_archive
from archive.base import TRACK0
from archive.errors import (
    CorruptData,
    ManifestInvalid,
    NotAnArchive,
    TruncatedArchive,
    UnsupportedVersion,
)
from archive.manifest import ArchiveManifest, BootArea, PartitionImage, Role, SourceDisk
from archive.native import (
    CHUNK_BYTES,
    FOOTER,
    HEADER,
    NativeArchive,
    NativeWriter,
    _inflate_into,
    partial_path,
    zero_segments,
)
from layout.blockio import evict_cached
from layout.blocks import BlockPool
from layout.models import DiskIdentity, Partition, PartitionTable

MiB = 1024 * 1024
DISK = 24 * MiB


def _disk_bytes(seed: int = 1) -> bytearray:
    """A 24 MiB disk: random garbage, with zero regions of several shapes in partition 1."""
    rng = random.Random(seed)
    disk = bytearray(rng.randbytes(DISK))
    p1 = 1 * MiB
    disk[p1 + 2 * MiB : p1 + 7 * MiB] = bytes(5 * MiB)  # spans a whole 4 MiB block
    disk[p1 + 8 * MiB + 12288 : p1 + 8 * MiB + 12288 + 256 * 1024] = bytes(256 * 1024)
    return disk


def _table() -> PartitionTable:
    return PartitionTable(
        scheme="msdos",
        disk_size_lba=DISK // 512,
        mbr_signature="1234ABCD",
        partitions=(
            Partition(number=1, start_lba=2048, length_lba=12 * 2048, mbr_type=0x83),
            Partition(number=2, start_lba=14 * 2048, length_lba=8 * 2048, mbr_type=0x07),
        ),
    )


# (partition, [ranges]) stored by the test archive: p1 whole, p2 two used islands
P1 = [(1 * MiB, 13 * MiB)]
P2 = [(14 * MiB, 14 * MiB + 300 * 1024), (20 * MiB, 21 * MiB + 5000)]
T0 = [(512, 1 * MiB)]


def write_archive(path: Path, disk: bytes | bytearray, **manifest_overrides: object) -> Path:
    def read(offset: int, length: int) -> bytes:
        return bytes(disk[offset : offset + length])

    with NativeWriter(path, workers=2) as writer:
        track0 = writer.store(read, T0)
        c1 = writer.store(read, P1)
        c2 = writer.store(read, P2)
        manifest = ArchiveManifest(
            created=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
            creator="restore-tui test",
            source=SourceDisk(
                identity=DiskIdentity(size_bytes=DISK, bus="image", model="Test disk"),
                device="test.img",
            ),
            table=_table(),
            boot=BootArea(
                boot_code=bytes(disk[:440]).hex(),
                sector0=bytes(disk[:512]).hex(),
                track0=track0,
                track0_stop=1 * MiB,
            ),
            partitions=(
                PartitionImage(number=1, role=Role.SYSTEM, chunks=c1, capture="all-sectors"),
                PartitionImage(
                    number=2,
                    role=Role.DATA,
                    chunks=c2,
                    capture="used-blocks",
                    used_bytes=300 * 1024 + MiB + 5000,
                ),
            ),
            **manifest_overrides,  # type: ignore[arg-type]
        )
        return writer.finish(manifest)


@pytest.fixture
def disk() -> bytearray:
    return _disk_bytes()


@pytest.fixture
def archive_path(tmp_path: Path, disk: bytearray) -> Path:
    return write_archive(tmp_path / "backup.rtui", disk)


def _covered(pieces_ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for a, b in pieces_ranges:
        if merged and merged[-1][1] == a:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged


def test_round_trip_gives_back_every_stored_byte(archive_path: Path, disk: bytearray) -> None:
    with open_archive(archive_path) as arc:
        assert isinstance(arc, NativeArchive)
        assert arc.manifest.boot_code == bytes(disk[:440])
        for area, ranges in ((TRACK0, T0), (1, P1), (2, P2)):
            got = list(arc.pieces(area))
            assert _covered([(p.offset, p.stop) for p in got]) == ranges
            for p in got:
                expected = bytes(disk[p.offset : p.stop])
                if p.data is None:
                    assert expected == bytes(p.length)
                else:
                    assert p.data == expected
                    assert p.length <= CHUNK_BYTES
        report = arc.verify()
    assert report.ok
    assert report.checked_bytes == sum(b - a for a, b in T0 + P1 + P2)
    assert not partial_path(archive_path).exists()


def test_zero_runs_are_extents_not_frames(archive_path: Path) -> None:
    with open_archive(archive_path) as arc:
        chunks = arc.manifest.image(1).chunks
    zeros = [(c.offset - MiB, c.length) for c in chunks if c.kind == "zero"]
    # the 5 MiB run (one extent, whole block + tail) and the 256 KiB run inside a block
    assert (2 * MiB, 5 * MiB) in zeros
    assert (8 * MiB + 12288, 256 * 1024) in zeros
    assert all(c.digest is None and c.frame_offset is None for c in chunks if c.kind == "zero")
    # nothing random was mistaken for zeros: exactly those two runs
    assert sum(n for _, n in zeros) == 5 * MiB + 256 * 1024


def test_zero_segments_granularity() -> None:
    block = bytearray(os.urandom(CHUNK_BYTES))
    block[4096 : 4096 + 64 * 1024] = bytes(64 * 1024)  # exactly the minimum run
    block[200_000 : 200_000 + 16 * 1024] = bytes(16 * 1024)  # too short to split out
    segs = zero_segments(bytes(block))
    assert [s for s in segs if s[2]] == [(4096, 4096 + 64 * 1024, True)]
    assert segs[0][0] == 0 and segs[-1][1] == CHUNK_BYTES
    assert zero_segments(bytes(1000)) == [(0, 1000, True)]
    assert zero_segments(b"") == []


def test_resume_start_skips_finished_pieces(archive_path: Path, disk: bytearray) -> None:
    with open_archive(archive_path) as arc:
        start = 5 * MiB + 17
        got = list(arc.pieces(1, start))
    assert got[0].offset <= start < got[0].stop
    assert got[-1].stop == 13 * MiB


def test_failed_backup_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "b.rtui"

    def read(offset: int, length: int) -> bytes:
        if offset >= 8 * MiB:
            raise KeyboardInterrupt
        return os.urandom(length)

    with pytest.raises(KeyboardInterrupt), NativeWriter(out) as writer:
        writer.store(read, [(0, 16 * MiB)])
    assert not out.exists() and not partial_path(out).exists()

    def short(offset: int, length: int) -> bytes:
        return b"x" * (length - 1)

    with pytest.raises(OSError, match="ended early"), NativeWriter(out) as writer:
        writer.store(short, [(0, MiB)])
    assert list(tmp_path.iterdir()) == []


def test_writer_never_finished_is_not_complete(tmp_path: Path) -> None:
    out = tmp_path / "b.rtui"
    writer = NativeWriter(out)
    writer.store(lambda o, n: os.urandom(n), [(0, MiB)])
    writer._file.flush()
    # what an interrupted backup that was killed (no cleanup) leaves behind
    with pytest.raises(TruncatedArchive, match="interrupted"):
        NativeArchive(partial_path(out))
    writer.abort()
    assert not partial_path(out).exists()


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


def _footer(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    m_offset, m_length, *_ = FOOTER.unpack(data[-FOOTER.size :])
    return m_offset, m_length


def test_flipped_data_byte_is_caught_before_it_is_handed_out(archive_path: Path) -> None:
    with open_archive(archive_path) as arc:
        victim = next(
            c for c in arc.manifest.image(1).chunks if c.kind == "data" and c.offset > 8 * MiB
        )
        other = next(c for c in arc.manifest.image(2).chunks if c.kind == "data")
    assert victim.frame_offset is not None and other.frame_offset is not None
    assert victim.frame_length is not None
    _flip(archive_path, victim.frame_offset + victim.frame_length // 2)
    _flip(archive_path, other.frame_offset + 20)
    with open_archive(archive_path) as arc:
        seen = []
        with pytest.raises(CorruptData) as err:
            for piece in arc.pieces(1):
                seen.append(piece.offset)
        assert err.value.partition == 1 and err.value.offset == victim.offset
        assert f"partition 1, byte offset {victim.offset}" in str(err.value)
        assert victim.offset not in seen and all(o < victim.offset for o in seen)
        report = arc.verify()
    assert not report.ok
    assert [(d.partition, d.offset) for d in report.damage] == [
        (1, victim.offset),
        (2, other.offset),
    ]
    assert all(d.message for d in report.damage)


def test_flipped_manifest_byte(archive_path: Path) -> None:
    m_offset, m_length = _footer(archive_path)
    _flip(archive_path, m_offset + m_length // 2)
    with pytest.raises(ManifestInvalid, match=r"list of contents.*damaged"):
        open_archive(archive_path)


@pytest.mark.parametrize("where", [0, 8, 40, 52, 60])
def test_flipped_footer_byte(archive_path: Path, where: int) -> None:
    size = archive_path.stat().st_size
    _flip(archive_path, size - FOOTER.size + where)
    with pytest.raises(ManifestInvalid, match="footer"):
        open_archive(archive_path)


def test_flipped_header_byte(archive_path: Path) -> None:
    _flip(archive_path, 20)
    with pytest.raises(ManifestInvalid, match="header is damaged"):
        open_archive(archive_path)


def test_truncated_at_several_points(archive_path: Path, tmp_path: Path) -> None:
    data = archive_path.read_bytes()
    m_offset, _ = _footer(archive_path)
    for cut in (9, 63, 64, 5000, len(data) // 2, m_offset, len(data) - 64, len(data) - 1):
        cut_path = tmp_path / f"cut{cut}.rtui"
        cut_path.write_bytes(data[:cut])
        with pytest.raises(TruncatedArchive, match="cut off"):
            open_archive(cut_path)


def test_empty_and_random_files_are_not_archives(tmp_path: Path) -> None:
    empty = tmp_path / "empty.rtui"
    empty.write_bytes(b"")
    with pytest.raises(NotAnArchive, match="empty"):
        open_archive(empty)
    rnd = tmp_path / "random.bin"
    rnd.write_bytes(os.urandom(100_000))
    with pytest.raises(NotAnArchive, match="not a restore-tui archive"):
        open_archive(rnd)
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"RTU")
    with pytest.raises(NotAnArchive):
        open_archive(tiny)
    with pytest.raises(NotAnArchive, match="does not exist"):
        open_archive(tmp_path / "missing.rtui")


def rewrite_manifest(path: Path, raw_json: bytes) -> None:
    """Replace the manifest of an archive with ``raw_json``, keeping it well-formed."""
    data = path.read_bytes()
    m_offset, _ = _footer(path)
    stored = zstandard.ZstdCompressor().compress(raw_json)
    body = FOOTER.pack(m_offset, len(stored), hashlib.sha256(stored).digest(), 1, 0, b"RTUI-END")
    footer = body[:52] + struct.pack("<I", zlib.crc32(body[:52])) + b"RTUI-END"
    total = m_offset + len(stored) + FOOTER.size
    head = HEADER.pack(b"RTUI-ARC", 1, 64, total, bytes(36), 0)
    head = head[:60] + struct.pack("<I", zlib.crc32(head[:60]))
    path.write_bytes(head + data[64:m_offset] + stored + footer)


def _manifest_json(path: Path) -> dict[str, object]:
    with open_archive(path) as arc:
        return json.loads(arc.manifest.model_dump_json())  # type: ignore[no-any-return]


def test_newer_schema_version(archive_path: Path) -> None:
    obj = _manifest_json(archive_path)
    obj["schema_version"] = 3
    obj["something_new"] = {"x": 1}
    rewrite_manifest(archive_path, json.dumps(obj).encode())
    with pytest.raises(UnsupportedVersion, match=r"newer restore-tui.*update restore-tui"):
        open_archive(archive_path)


def test_newer_format_version(archive_path: Path) -> None:
    data = bytearray(archive_path.read_bytes())
    data[8:12] = struct.pack("<I", 7)
    data[60:64] = struct.pack("<I", zlib.crc32(bytes(data[:60])))
    archive_path.write_bytes(bytes(data))
    with pytest.raises(UnsupportedVersion, match="update restore-tui"):
        open_archive(archive_path)


def test_rewritten_manifest_still_opens(archive_path: Path) -> None:
    # guards the helper above: an unchanged manifest rewritten must open and verify
    rewrite_manifest(archive_path, json.dumps(_manifest_json(archive_path)).encode())
    with open_archive(archive_path) as arc:
        assert arc.verify().ok


def test_manifest_pointing_frames_outside_the_data(archive_path: Path) -> None:
    obj = _manifest_json(archive_path)
    m_offset, _ = _footer(archive_path)
    chunk = obj["partitions"][0]["chunks"][0]  # type: ignore[index]
    chunk["frame_offset"] = m_offset - 10
    rewrite_manifest(archive_path, json.dumps(obj).encode())
    with pytest.raises(ManifestInvalid, match="outside the data area"):
        open_archive(archive_path)


def test_lying_frame_size_is_not_trusted(tmp_path: Path, archive_path: Path) -> None:
    # A manifest that says a chunk is smaller than its frame: caught as damage, no crash.
    obj = _manifest_json(archive_path)
    chunks = obj["partitions"][1]["chunks"]  # type: ignore[index]
    first = chunks[0]
    first["length"] = first["length"] - 4096
    rewrite_manifest(archive_path, json.dumps(obj).encode())
    with open_archive(archive_path) as arc:
        with pytest.raises(CorruptData, match="wrong size"):
            list(arc.pieces(2))
        report = arc.verify()
    assert [d.partition for d in report.damage] == [2]


def test_folder_is_not_a_native_archive(tmp_path: Path) -> None:
    with pytest.raises(NotAnArchive, match="folder"):
        NativeArchive(tmp_path)


def test_open_archive_dispatch(tmp_path: Path) -> None:
    # a folder goes to the Clonezilla reader, which refuses a folder that is not its image
    with pytest.raises(NotAnArchive, match="Clonezilla"):
        open_archive(tmp_path)
    with pytest.raises(NotAnArchive, match="device or special file"):
        open_archive("/dev/null")


def test_open_archive_takes_a_split_partclone_image_by_its_first_part(tmp_path: Path) -> None:
    from archive.partclone import PartcloneImageArchive

    raw = tmp_path / "fs.img"
    with raw.open("wb") as f:
        f.truncate(8 * 1024 * 1024)
    subprocess.run(["mkfs.vfat", str(raw)], check=True, capture_output=True)
    image = tmp_path / "sdb1.vfat-ptcl-img.gz"
    with image.open("wb") as out:
        clone = subprocess.Popen(
            ["partclone.fat", "-q", "-c", "-a", "1", "-s", str(raw), "-o", "-"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        subprocess.run(["gzip", "-c"], stdin=clone.stdout, stdout=out, check=True)
        assert clone.wait() == 0
    subprocess.run(["split", "-a", "2", "-b", "20000", str(image), f"{image}."], check=True)
    image.unlink()
    archive = open_archive(tmp_path / "sdb1.vfat-ptcl-img.gz.aa")
    assert isinstance(archive, PartcloneImageArchive)
    assert archive.verify().ok
    # A file that is neither is still refused as not a backup.
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x1f\x8b" + bytes(100))
    with pytest.raises(NotAnArchive):
        open_archive(junk)


def _cached_bytes(path: Path) -> int:
    """How many bytes of ``path`` the page cache holds (util-linux fincore)."""
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.split()[0])


def _drop_cached(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())
        evict_cached(f.fileno(), 0, 0)


def test_data_frames_are_read_without_filling_the_page_cache(archive_path: Path) -> None:
    """Frames are read once: direct reads skip the copy through the page cache (on two
    cores as costly as decompressing them) and leave the rescue system's memory alone."""
    if subprocess.run(["which", "fincore"], capture_output=True).returncode != 0:
        pytest.skip("fincore (util-linux) is not installed")
    _drop_cached(archive_path)
    if _cached_bytes(archive_path) != 0:
        pytest.skip(f"the page cache of {archive_path.parent} cannot be dropped here")
    with open_archive(archive_path) as arc:
        assert isinstance(arc, NativeArchive)
        if not arc._frames.direct:
            pytest.skip(f"{archive_path.parent} does not do direct I/O")
        assert arc.verify().ok
        stored = sum(c.frame_length or 0 for p in arc.manifest.partitions for c in p.chunks)
    # Only the header, the footer and the manifest went through the cache.
    assert stored > 4 * MiB
    assert _cached_bytes(archive_path) < stored // 10


def test_frames_read_the_same_without_direct_io(
    archive_path: Path, disk: bytearray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a filesystem that refuses O_DIRECT (tmpfs, some FUSE mounts of a backup disk)
    the frames are read normally, with the same checks."""
    no_direct_io(monkeypatch)
    with open_archive(archive_path) as arc:
        assert isinstance(arc, NativeArchive) and not arc._frames.direct
        for p in arc.pieces(1):
            assert p.data is None or p.data == bytes(disk[p.offset : p.stop])
        assert arc.verify().ok


def test_one_core_still_reads_on_two_threads(
    archive_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Direct reads get no read-ahead, so restoring and verifying both read on at
    least two threads (one reads while the other decodes), even with one worker."""
    import archive.native as native

    pools: list[int] = []
    real_map = native.ordered_map

    def recording_map(fn, items, *, workers, **bounds):  # type: ignore[no-untyped-def]
        pools.append(workers)
        return real_map(fn, items, workers=workers, **bounds)

    monkeypatch.setattr(native, "ordered_map", recording_map)
    with NativeArchive(archive_path, workers=1) as arc:
        list(arc.pieces(1))
        assert arc.verify().ok
    assert pools == [2, 2]


def test_what_is_decoded_ahead_is_bounded_by_its_bytes_not_its_count() -> None:
    """A restore keeps as many bytes ready whatever the chunks' sizes: many small chunks
    are decoded ahead as far as a few large ones, and no more is ever held."""
    import threading

    from archive.native import ordered_map

    sizes = [4 << 20, 64 << 10, 64 << 10, 0, 0, 1 << 20, 4 << 20, 4 << 20, 3 << 20] * 20
    budget = 10 << 20
    lock = threading.Lock()
    held = [0, 0]  # bytes started and not yet handed on, the most seen at once

    def decode(size: int) -> int:
        with lock:
            held[0] += size
            held[1] = max(held[1], held[0])
        return size

    got: list[int] = []
    for size in ordered_map(
        decode, sizes, workers=2, in_flight=64, cost=lambda n: n, budget=budget
    ):
        with lock:
            held[0] -= size
        got.append(size)
    assert got == sizes  # in order, every one
    assert held[1] <= budget
    # ... and the budget, not the count, is what bounded it: it was nearly all used.
    assert held[1] > budget - (4 << 20)

    # A chunk larger than the whole budget still goes, alone.
    assert list(ordered_map(lambda n: n, [20 << 20, 1], workers=2, in_flight=8,
                            cost=lambda n: n, budget=budget)) == [20 << 20, 1]  # fmt: skip


def test_a_chunk_is_decompressed_into_its_block_only_when_it_holds_exactly_its_length() -> None:
    pool = BlockPool(keep_bytes=0)
    raw = random.Random(5).randbytes(3 * 4096) + bytes(4096)
    frame = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(raw)
    block = pool.take(len(raw))
    assert _inflate_into(memoryview(frame), block, len(raw))
    assert bytes(block.view(0, len(raw))) == raw
    # A frame holding more than the chunk, or less: refused (the header check before
    # this catches most; the frame's own end is what counts).
    assert not _inflate_into(memoryview(frame), pool.take(len(raw)), len(raw) - 4096)
    assert not _inflate_into(memoryview(frame), pool.take(2 * len(raw)), len(raw) + 4096)
    # Nothing holds the frame afterwards: its buffer can be reused at once.
    view = memoryview(bytearray(frame))
    _inflate_into(view, pool.take(len(raw)), len(raw))
    view.release()


def test_a_restore_decodes_into_blocks_that_are_reused(archive_path: Path) -> None:
    with open_archive(archive_path) as arc:
        assert isinstance(arc, NativeArchive)
        areas = [p.number for p in arc.manifest.partitions]
        data = [c for n in areas for c in arc.manifest.image(n).chunks if c.kind == "data"]
        for round_ in range(3):
            count = 0
            for area in areas:
                for piece in arc.pieces(area):
                    if piece.data is not None:
                        assert piece.block is not None and piece.block.size >= piece.length
                        count += 1
                    del piece
            assert count == len(data)
            if round_ == 0:
                made = arc._blocks.made
        # The second and third time through, every chunk went into a buffer used before.
        assert arc._blocks.made == made <= len(data)

"""archive.view: random access to one partition of a backup, without root or FUSE.

A real sample disk (ext4 and FAT made by mkfs) is backed up; every byte the view
serves must equal the source where the backup stored it and be zero elsewhere;
only the chunks a read needs are decompressed; a damaged chunk is an error
naming partition and offset, never wrong bytes.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from clonezilla_fixtures import MISSING_TOOLS, FsSpec, build_disk_and_image

from archive import open_archive
from archive.errors import ArchiveError, CorruptData
from archive.native import NativeArchive
from archive.view import CACHE_BYTES, NeedsConversion, PartitionView, open_view
from restore_tui import sample
from restore_tui.cli import main

pytestmark = pytest.mark.skipif(
    not (sample.have_tool("mkfs.ext4") and sample.have_tool("mkfs.fat")),
    reason="needs mkfs.ext4 and mkfs.fat to build sample disks",
)


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory: pytest.TempPathFactory) -> tuple[sample.SampleDisk, Path]:
    work = tmp_path_factory.mktemp("view")
    disk = sample.build_gpt_linux(work / "disk.img", 64)
    archive = work / "disk.rtui"
    assert main(["backup", str(disk.path), str(archive)]) == 0
    return disk, archive


def expected(disk: sample.SampleDisk, archive: NativeArchive, number: int) -> bytes:
    """The partition as a restore would write it: stored chunks from the source, zeros between."""
    entry = archive.manifest.table.partition(number)
    base, size = entry.start_lba * 512, entry.length_lba * 512
    source = disk.path.read_bytes()
    out = bytearray(size)
    for c in archive.manifest.image(number).chunks:
        if c.kind == "data":
            out[c.offset - base : c.stop - base] = source[c.offset : c.stop]
    return bytes(out)


def test_random_reads_equal_the_stored_bytes_and_zeros_elsewhere(
    backed_up: tuple[sample.SampleDisk, Path],
) -> None:
    disk, path = backed_up
    rng = random.Random(7)
    with NativeArchive(path) as archive:
        for number in (1, 2, 3):
            want = expected(disk, archive, number)
            assert want.strip(b"\0"), f"partition {number} stored nothing"
            view = PartitionView(archive, number)
            assert view.size == len(want)
            for _ in range(200):
                offset = rng.randrange(view.size)
                length = rng.choice((1, 511, 4096, 130_000, 5_000_000))
                assert view.read(offset, length) == want[offset : offset + length]
            assert view.read(view.size - 10, 100) == want[-10:]  # short only at the end
            assert view.read(view.size, 10) == b""
            # Unstored blocks are zeros, though the source disk holds garbage there.
            base = archive.manifest.table.partition(number).start_lba * 512
            gap = disk.path.read_bytes()[base : base + view.size]
            assert gap != want


def test_a_read_decompresses_only_the_chunks_it_needs(
    backed_up: tuple[sample.SampleDisk, Path],
) -> None:
    _, path = backed_up
    with NativeArchive(path) as archive:
        view = PartitionView(archive, 3)
        chunks = [c for c in archive.manifest.image(3).chunks if c.kind == "data"]
        assert len(chunks) >= 2
        last = chunks[-1]
        view.read(last.offset - view.base + 1, 10)
        assert view.decompressed == 1  # not the chunks before it
        view.read(last.offset - view.base + 100, 10)
        assert view.decompressed == 1  # served from the cache
        # A read spanning two chunks decompresses exactly those two.
        a, b = chunks[0], chunks[1]
        view.read(a.stop - view.base - 5, 10 + (b.offset - a.stop))
        assert view.decompressed == 3


def test_the_cache_stays_within_its_bound(backed_up: tuple[sample.SampleDisk, Path]) -> None:
    _, path = backed_up
    with NativeArchive(path) as archive:
        view = PartitionView(archive, 2, cache_bytes=1)  # keeps only the last chunk
        data = [c for c in archive.manifest.image(2).chunks if c.kind == "data"]
        for c in data:
            view.read(c.offset - view.base, 1)
        assert view.cached_chunks == 1
        view.read(data[0].offset - view.base, 1)
        assert view.decompressed == len(data) + 1  # evicted, so decompressed again
        assert CACHE_BYTES <= 64 * 1024 * 1024


def test_a_damaged_chunk_is_an_error_naming_partition_and_offset(
    backed_up: tuple[sample.SampleDisk, Path], tmp_path: Path
) -> None:
    disk, path = backed_up
    damaged = tmp_path / "damaged.rtui"
    raw = bytearray(path.read_bytes())
    with NativeArchive(path) as archive:
        chunk = max(
            (c for c in archive.manifest.image(2).chunks if c.kind == "data"),
            key=lambda c: c.frame_length or 0,
        )
        want = expected(disk, archive, 2)
    assert chunk.frame_offset is not None and chunk.frame_length is not None
    raw[chunk.frame_offset + chunk.frame_length // 2] ^= 0x40
    damaged.write_bytes(bytes(raw))
    with NativeArchive(damaged) as archive:
        view = PartitionView(archive, 2)
        inside = chunk.offset - view.base
        with pytest.raises(CorruptData) as caught:
            view.read(inside + 17, 100)
        assert caught.value.partition == 2 and caught.value.offset == chunk.offset
        assert f"partition 2, byte offset {chunk.offset}" in str(caught.value)
        # Other places read fine, and the damaged one stays an error (nothing cached).
        other = next(c for c in archive.manifest.image(2).chunks if c.offset != chunk.offset)
        start = other.offset - view.base
        assert view.read(start, 64) == want[start : start + 64]
        with pytest.raises(CorruptData):
            view.read(inside, 1)


def test_a_partition_not_in_the_backup(backed_up: tuple[sample.SampleDisk, Path]) -> None:
    _, path = backed_up
    with NativeArchive(path) as archive, pytest.raises(ArchiveError, match="partition 9"):
        PartitionView(archive, 9)


def test_a_raw_disk_image_is_read_in_place(backed_up: tuple[sample.SampleDisk, Path]) -> None:
    disk, _ = backed_up
    with open_archive(disk.path) as archive:
        view = open_view(archive, 2)
        p = disk.partition(2)
        source = disk.path.read_bytes()
        assert view.read(1000, 5000) == source[p.offset + 1000 : p.offset + 6000]
        view.close()


@pytest.mark.skipif(bool(MISSING_TOOLS), reason=f"missing tools: {MISSING_TOOLS}")
def test_a_clonezilla_folder_needs_converting(tmp_path: Path) -> None:
    _, folder = build_disk_and_image(
        tmp_path, scheme="dos", disk_name="sda", specs=[FsSpec(1, "ext4", 8, "root")], seed=3
    )
    with open_archive(folder) as archive, pytest.raises(NeedsConversion, match="compressed"):
        open_view(archive, 1)

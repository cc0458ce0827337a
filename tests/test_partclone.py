"""partclone image reader and image streams: real partclone images and hand-built ones.

Real images come from partclone 0.3.x called as Clonezilla calls it (CRC32);
XXH64/XXH128, no-reseed, byte bitmaps and format 0001 are built here from the
format's published layout, since this partclone cannot write them.
"""

from __future__ import annotations

import itertools
import random
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
import xxhash
from clonezilla_fixtures import COMPRESS, MISSING_TOOLS, FsSpec, make_fs, partclone_image, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archive import open_archive
from archive.decompress import ImageStream, image_files, split_parts
from archive.errors import ArchiveError, CorruptData, NotAnArchive, TruncatedArchive
from archive.partclone import (
    HEADER_V2,
    PartcloneError,
    PartcloneImageArchive,
    bitmap_runs,
    bytemap_to_bitmap,
    count_used,
    looks_like_partclone,
    open_partclone_image,
    open_reader,
    parse_header,
)

needs_tools = pytest.mark.skipif(bool(MISSING_TOOLS), reason=f"missing tools: {MISSING_TOOLS}")


def crc(data: bytes, state: int = 0xFFFFFFFF) -> int:
    return zlib.crc32(data, state ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def build_v2(
    blocks: dict[int, bytes],
    total: int,
    block_size: int,
    *,
    mode: int = 0x20,
    per_cs: int = 4,
    reseed: bool = True,
    bitmap_mode: int = 1,
    device_size: int | None = None,
) -> bytes:
    """A format 0002 image written from the layout in the format notes, independently."""
    cs_size = {0: 0, 0x20: 4, 0x30: 8, 0x31: 16}[mode]
    used = sorted(blocks)
    head = struct.pack(
        "<16s14s4sH16sQQQQIIHHHHIBB",
        b"partclone-image\0",
        b"0.3.99",
        b"0002",
        0xC0DE,
        b"EXTFS",
        device_size if device_size is not None else total * block_size,
        total,
        len(used),
        len(used),
        block_size,
        18,
        2,
        64,
        mode,
        cs_size,
        per_cs,
        1 if reseed else 0,
        bitmap_mode,
    )
    out = bytearray(head + struct.pack("<I", crc(head)))
    bits = bytearray((total + 7) // 8)
    for b in used:
        bits[b // 8] |= 1 << (b % 8)
    if bitmap_mode == 1:
        out += bits
    elif bitmap_mode == 8:
        out += bytes(1 if b in blocks else 0 for b in range(total))
    if bitmap_mode:
        out += struct.pack("<I", crc(bytes(bits)))

    def fresh() -> object:
        return {0x30: lambda: xxhash.xxh64(seed=0), 0x31: lambda: xxhash.xxh3_128(seed=0)}.get(
            mode, lambda: None
        )()

    state: int = 0xFFFFFFFF
    hasher = fresh()
    in_group = 0
    for b in used:
        out += blocks[b]
        if mode == 0x20:
            state = crc(blocks[b], state)
        elif hasher is not None:
            hasher.update(blocks[b])  # type: ignore[attr-defined]
        in_group += 1
        if mode and (in_group == per_cs or b == used[-1]):
            if mode == 0x20:
                out += struct.pack("<I", state)
            elif mode == 0x30:
                out += hasher.intdigest().to_bytes(8, "little")  # type: ignore[attr-defined]
            else:
                out += hasher.intdigest().to_bytes(16, "little")  # type: ignore[attr-defined]
            in_group = 0
            if reseed:
                state, hasher = 0xFFFFFFFF, fresh()
    return bytes(out)


def build_v1(blocks: dict[int, bytes], total: int, block_size: int, wide: bool = False) -> bytes:
    """Format 0001: 4160-byte header, byte map + BiTmAgIc, each block + its buggy CRC."""
    head = bytearray(4160)
    head[0:15] = b"partclone-image"
    head[15:20] = b"EXTFS"
    head[30:34] = b"0001"
    struct.pack_into("<iQQQ", head, 36, block_size, total * block_size, total, len(blocks))
    out = bytearray(head)
    out += bytes(1 if b in blocks else 0 for b in range(total)) + b"BiTmAgIc"
    state = 0xFFFFFFFF
    for b in sorted(blocks):
        out += blocks[b]
        state = crc(bytes([blocks[b][0]]) * block_size, state)  # the old routine's bug
        out += struct.pack("<I", state) + (b"\0\0\0\0" if wide else b"")
    return bytes(out)


def read_all(path: Path) -> list[tuple[int, bytes]]:
    reader = open_reader(path)
    try:
        return list(reader.chunks())
    finally:
        reader.stream.close()


def sample_blocks(rng: random.Random, total: int, bs: int) -> dict[int, bytes]:
    chosen = [*sorted(rng.sample(range(total), total // 3)), 0, total - 1]
    return {b: rng.randbytes(bs) for b in sorted(set(chosen))}


@pytest.mark.parametrize(
    ("mode", "reseed", "bitmap_mode"),
    [
        (0x20, True, 1),
        (0x20, False, 1),
        (0x30, True, 1),
        (0x31, True, 1),
        (0x31, False, 8),
        (0x30, False, 8),
        (0, True, 1),
    ],
)
def test_built_images_read_back_exactly(
    tmp_path: Path, mode: int, reseed: bool, bitmap_mode: int
) -> None:
    rng = random.Random(mode * 7 + reseed)
    blocks = sample_blocks(rng, 300, 512)
    path = tmp_path / "x.uncomp"
    path.write_bytes(
        build_v2(blocks, 300, 512, mode=mode, per_cs=7, reseed=reseed, bitmap_mode=bitmap_mode)
    )
    chunks = read_all(path)
    got = {
        off // 512 + i: data[i * 512 : (i + 1) * 512]
        for off, data in chunks
        for i in range(len(data) // 512)
    }
    assert got == blocks
    # Runs are merged: no chunk ends where the next one starts.
    assert all(a[0] + len(a[1]) != b[0] for a, b in itertools.pairwise(chunks))


@pytest.mark.parametrize("mode", [0x20, 0x30, 0x31])
@pytest.mark.parametrize("reseed", [True, False])
def test_flipped_data_byte_is_caught_before_it_is_yielded(
    tmp_path: Path, mode: int, reseed: bool
) -> None:
    rng = random.Random(5)
    blocks = {b: rng.randbytes(1024) for b in range(0, 64)}
    image = bytearray(build_v2(blocks, 64, 1024, mode=mode, per_cs=4, reseed=reseed))
    data_start = HEADER_V2.size + 8 + 4
    cs = {0x20: 4, 0x30: 8, 0x31: 16}[mode]
    # Block 21 sits in group 5 (blocks 20-23), after 5 groups' checksums.
    image[data_start + 21 * 1024 + 5 * cs + 100] ^= 0x40
    path = tmp_path / "x.uncomp"
    path.write_bytes(bytes(image))
    reader = open_reader(path, name="sda5", partition=5, base_offset=1 << 20)
    seen: list[int] = []
    with pytest.raises(CorruptData) as err:
        for offset, data in reader.chunks(max_bytes=1024):
            seen.append(offset // 1024)
            assert data == blocks[offset // 1024]
    assert max(seen) < 20  # nothing from the damaged group came out
    assert err.value.partition == 5
    assert err.value.offset == (1 << 20) + 20 * 1024
    assert "blocks 20-23" in str(err.value) and "sda5" in str(err.value)
    reader.stream.close()
    damage = open_reader(path, partition=5).verify()
    # Reseeded checksums let verify go on; only the bad group is reported either way.
    assert [d.offset for d in damage] == [20 * 1024]


def test_resume_from_the_middle_yields_exactly_the_tail(tmp_path: Path) -> None:
    rng = random.Random(9)
    blocks = sample_blocks(rng, 2000, 512)
    path = tmp_path / "x.uncomp"
    path.write_bytes(build_v2(blocks, 2000, 512, per_cs=16))
    everything = read_all(path)
    for cut in (0, 1, everything[3][0], everything[3][0] + 1, everything[-1][0], 2000 * 512):
        reader = open_reader(path)
        tail = list(reader.chunks(start=cut, max_bytes=4096))
        reader.stream.close()
        full = [(o, d) for o, d in _split(everything, 4096) if o + len(d) > cut]
        assert tail == full


def _split(chunks: list[tuple[int, bytes]], size: int) -> list[tuple[int, bytes]]:
    # read_all used 4 MiB chunks; re-cut the same runs at `size` to compare.
    runs: list[tuple[int, bytearray]] = []
    for offset, data in chunks:
        if runs and runs[-1][0] + len(runs[-1][1]) == offset:
            runs[-1][1].extend(data)
        else:
            runs.append((offset, bytearray(data)))
    return [(o + i, bytes(d[i : i + size])) for o, d in runs for i in range(0, len(d), size)]


@pytest.mark.parametrize("wide", [False, True])
def test_format_0001_reads_with_both_checksum_widths(tmp_path: Path, wide: bool) -> None:
    rng = random.Random(3)
    blocks = sample_blocks(rng, 200, 512)
    path = tmp_path / "old.uncomp"
    path.write_bytes(build_v1(blocks, 200, 512, wide=wide))
    reader = open_reader(path)
    assert reader.header.image_version == 1 and not reader.checks_data
    got = {
        o // 512 + i: d[i * 512 : (i + 1) * 512]
        for o, d in reader.chunks()
        for i in range(len(d) // 512)
    }
    assert got == blocks


def test_truncated_image_and_damaged_structures(tmp_path: Path) -> None:
    blocks = {b: bytes([b]) * 512 for b in range(10)}
    image = build_v2(blocks, 16, 512)
    cases = {
        "cut-in-data": (image[: len(image) - 700], TruncatedArchive, "ends early"),
        "cut-in-header": (image[:50], TruncatedArchive, "ends early"),
        "bad-header-crc": (image[:60] + b"\x01" + image[61:], PartcloneError, "header"),
        "bad-bitmap": (image[:110] + b"\x00" + image[111:], PartcloneError, "bitmap"),
        "not-partclone": (b"hello" * 100, PartcloneError, "not a partclone image"),
        "empty": (b"", TruncatedArchive, "ends early"),
    }
    for name, (data, error, words) in cases.items():
        path = tmp_path / f"{name}.uncomp"
        path.write_bytes(data)
        with pytest.raises(error, match=words):
            read_all(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=200), st.integers(0, 109), st.booleans())
def test_fuzzed_headers_give_clear_errors(noise: bytes, at: int, fix_crc: bool) -> None:
    head = bytearray(build_v2({0: b"\1" * 512}, 8, 512)[: HEADER_V2.size])
    head[at : at + len(noise)] = noise[: HEADER_V2.size - at]
    head = head[: HEADER_V2.size]
    if fix_crc and len(head) == HEADER_V2.size:
        head[-4:] = struct.pack("<I", crc(bytes(head[:-4])))
    try:
        header = parse_header(bytes(head))
    except (PartcloneError, TruncatedArchive) as exc:
        assert str(exc)
    else:
        assert header.block_size > 0 and header.used_blocks <= header.total_blocks


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=64), st.integers(0, 600))
def test_bitmap_runs_match_a_naive_scan(bitmap: bytes, total: int) -> None:
    bits = [i for i in range(min(total, len(bitmap) * 8)) if bitmap[i // 8] >> (i % 8) & 1]
    runs = list(bitmap_runs(bitmap, total))
    assert [b for first, n in runs for b in range(first, first + n)] == bits
    assert all(a[0] + a[1] < b[0] for a, b in itertools.pairwise(runs))
    if len(bitmap) * 8 >= total:
        assert count_used(bitmap, total) == len(bits)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=0, max_size=300))
def test_bytemap_conversion(bytemap: bytes) -> None:
    bits = bytemap_to_bitmap(bytemap)
    assert [i for i in range(len(bytemap)) if bits[i // 8] >> (i % 8) & 1] == [
        i for i, v in enumerate(bytemap) if v == 1
    ]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(min_size=0, max_size=400), st.integers(0, 400))
def test_fuzzed_images_never_crash(tmp_path: Path, noise: bytes, at: int) -> None:
    image = bytearray(build_v2({b: bytes([b]) * 512 for b in (1, 2, 5)}, 9, 512))
    image[at : at + len(noise)] = noise
    path = tmp_path / "fuzz.uncomp"
    path.write_bytes(bytes(image))
    try:
        read_all(path)
    except ArchiveError as exc:
        assert str(exc)


# ---------------------------------------------------------------- image streams


def test_every_compression_and_split_reads_the_same(tmp_path: Path) -> None:
    payload = random.Random(1).randbytes(3_500_000)
    raw = tmp_path / "raw"
    raw.write_bytes(payload)
    for comp in ("uncomp", *COMPRESS):
        for split in (False, True):
            name = tmp_path / f"p{split:d}.ext4-ptcl-img.{comp}"
            if comp == "uncomp":
                shutil.copyfile(raw, name)
            else:
                with raw.open("rb") as s, name.open("wb") as d:
                    subprocess.run(COMPRESS[comp], stdin=s, stdout=d, check=True)
            if split:
                run("split", "-a", "2", "-b", "1MB", name, f"{name}.")
                name.unlink()
                assert len(split_parts(name)) >= 2 or comp != "uncomp"
            files = image_files(name)
            assert files.compression == {
                "uncomp": "none",
                "zst": "zstd",
                "gz": "gzip",
                "bz2": "bzip2",
            }.get(comp, comp)
            stream = ImageStream(files)
            assert b"".join(stream.iter_raw()) == payload
            stream.close()
    # Magic bytes win over a misleading name.
    misnamed = tmp_path / "q.ext4-ptcl-img.gz"
    shutil.copyfile(tmp_path / "p0.ext4-ptcl-img.zst", misnamed)
    assert image_files(misnamed).compression == "zstd"


def test_damaged_streams_give_clear_errors(tmp_path: Path) -> None:
    payload = random.Random(2).randbytes(2_500_000)
    base = tmp_path / "sda1.ext4-ptcl-img.gz"
    base.write_bytes(
        subprocess.run(["gzip", "-c"], input=payload, capture_output=True, check=True).stdout
    )
    run("split", "-a", "2", "-b", "1MB", base, f"{base}.")
    base.unlink()
    parts = sorted(tmp_path.glob("sda1.*.a?"))
    assert len(parts) == 3
    # A middle part cut short while copying.
    middle = parts[1].read_bytes()
    parts[1].write_bytes(middle[:500_000])
    with pytest.raises(TruncatedArchive, match=r"sda1\.ext4-ptcl-img\.gz\.ab"):
        image_files(base)
    parts[1].write_bytes(middle)
    # The last part cut short: the decoder finds the stream's end missing.
    last = parts[2].read_bytes()
    parts[2].write_bytes(last[: len(last) // 2])
    stream = ImageStream(image_files(base))
    with pytest.raises(TruncatedArchive, match="cut short"):
        b"".join(stream.iter_raw())
    parts[2].write_bytes(last)
    # A missing middle part.
    parts[1].unlink()
    with pytest.raises(TruncatedArchive, match=r"\.ab .*missing"):
        image_files(base)
    # Unsupported and unknown compressions.
    lzo = tmp_path / "sda2.ext4-ptcl-img.lzo"
    lzo.write_bytes(b"\x89LZO\x00\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(NotAnArchive, match="lzop -d"):
        image_files(lzo)
    fake = tmp_path / "sda3.ext4-ptcl-img.zst"
    fake.write_bytes(b"definitely not zstd" * 10)
    with pytest.raises(CorruptData, match="does not start like it"):
        image_files(fake)
    with pytest.raises(NotAnArchive, match="missing"):
        image_files(tmp_path / "sda9.ext4-ptcl-img.zst")


# ---------------------------------------------------------------- real partclone


@needs_tools
@pytest.mark.parametrize(("fs", "mib"), [("ext4", 24), ("vfat", 33), ("ntfs", 16)])
def test_real_images_match_partclone_restore(tmp_path: Path, fs: str, mib: int) -> None:
    """Our reader and partclone.restore write the same bytes, and only where partclone does."""
    rng = random.Random(mib)
    source = tmp_path / "fs.img"
    source.write_bytes(rng.randbytes(mib * 1024 * 1024))  # garbage in free space
    make_fs(source, FsSpec(1, fs, mib, "TEST"), rng)
    image = tmp_path / "fs.pcl"
    partclone_image(source, fs, image)
    zst = tmp_path / f"sda1.{fs}-ptcl-img.zst"
    run("zstd", "-q", "-3", image, "-o", zst)
    pattern = bytes([0xA5]) * (mib * 1024 * 1024)

    theirs = tmp_path / "theirs.img"
    theirs.write_bytes(pattern)
    tool = {"ext4": "partclone.extfs", "vfat": "partclone.fat", "ntfs": "partclone.ntfs"}[fs]
    run(tool, "-q", "-r", "-s", image, "-O", theirs)

    ours = bytearray(pattern)
    # open_archive recognises a compressed partclone image by its decompressed magic.
    archive = open_archive(zst)
    assert isinstance(archive, PartcloneImageArchive)
    base = 2048 * 512
    for piece in archive.pieces(1):
        assert piece.data is not None
        ours[piece.offset - base : piece.stop - base] = piece.data
    expected = bytearray(theirs.read_bytes()[: len(ours)])
    if fs == "ntfs":
        # partclone.restore leaves the backup boot sector (the last sector) as it was;
        # we write it as a copy of the boot sector, as the filesystem needs it.
        expected[-512:] = expected[:512]
    assert bytes(ours) == bytes(expected)
    # Every stored byte is the source's.
    src = source.read_bytes()
    for chunk in archive.manifest.partitions[0].chunks:
        assert (
            ours[chunk.offset - base : chunk.stop - base]
            == src[chunk.offset - base : chunk.stop - base]
        )
    report = archive.verify()
    assert report.ok and report.checked_bytes == archive.manifest.stored_bytes()
    assert looks_like_partclone(image.read_bytes()[:64])


@needs_tools
def test_real_image_flipped_byte_names_partition_and_block(tmp_path: Path) -> None:
    rng = random.Random(4)
    source = tmp_path / "fs.img"
    make_fs(source, FsSpec(1, "ext4", 24, "T"), rng)
    image = tmp_path / "sda1.ext4-ptcl-img.uncomp"
    partclone_image(source, "ext4", image)
    reader = open_reader(image)
    data_start = HEADER_V2.size + (reader.header.total_blocks + 7) // 8 + 4
    per_cs = reader.header.blocks_per_checksum
    reader.stream.close()
    raw = bytearray(image.read_bytes())
    raw[data_start + 4_000_000] ^= 1  # inside used block 3906, in the first 10 MiB group
    image.write_bytes(bytes(raw))
    archive = open_partclone_image(image)
    report = archive.verify()
    assert not report.ok and report.damage[0].partition == 1
    assert "blocks 0-" in report.damage[0].message
    with pytest.raises(CorruptData) as err:
        list(archive.pieces(1))
    assert err.value.partition == 1
    assert per_cs == 10240  # Clonezilla's -z 10485760 over 1 KiB blocks


# ---------------------------------------------------------------- identity and what is unchecked


@pytest.mark.parametrize(
    ("kind", "unchecked"),
    [("crc32", ()), ("none", (1,)), ("0001", (1,))],
)
def test_lone_image_unchecked_only_without_usable_checksums(
    tmp_path: Path, kind: str, unchecked: tuple[int, ...]
) -> None:
    blocks = sample_blocks(random.Random(5), 200, 512)
    if kind == "0001":
        data = build_v1(blocks, 200, 512)
    else:
        data = build_v2(blocks, 200, 512, mode=0x20 if kind == "crc32" else 0)
    path = tmp_path / "sdb1.ext4-ptcl-img.uncomp"
    path.write_bytes(data)
    archive = open_partclone_image(path)
    assert tuple(u.partition for u in archive.unchecked()) == unchecked
    assert all(
        u.area == "partition" and u.reason == "image-has-no-checksums" for u in archive.unchecked()
    )


def test_lone_image_identity_is_header_names_and_sizes_not_the_path(tmp_path: Path) -> None:
    blocks = sample_blocks(random.Random(6), 200, 512)
    data = build_v2(blocks, 200, 512)
    first = tmp_path / "a" / "sdb1.ext4-ptcl-img.uncomp"
    second = tmp_path / "b" / "sdb1.ext4-ptcl-img.uncomp"
    for path in (first, second):
        path.parent.mkdir()
        path.write_bytes(data)
    assert open_partclone_image(first).identity() == open_partclone_image(second).identity()
    # One more block stored (its header and chunk list change): another backup.
    other = dict(blocks)
    other[next(b for b in range(200) if b not in blocks)] = bytes(512)
    second.write_bytes(build_v2(other, 200, 512))
    assert open_partclone_image(first).identity() != open_partclone_image(second).identity()

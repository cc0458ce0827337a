"""The sample disk builder: tables as sfdisk reports them, clean filesystems, files, garbage.

Everything is checked on the real bytes of image files, read with the real tools.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from layout.blockio import DiskReader
from layout.table_io import read_table
from restore_tui import sample
from restore_tui.sample import MIB, SECTOR, SampleDisk, SamplePartition

Builder = Callable[..., SampleDisk]
BUILDERS: dict[str, Builder] = {
    "windows_mbr": sample.build_windows_mbr,
    "mbr_with_logicals": sample.build_mbr_with_logicals,
    "gpt_linux": sample.build_gpt_linux,
}
SIZE_MIB = 64


@pytest.fixture(scope="module")
def disks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SampleDisk]:
    """Each sample built once (64 MiB, garbage-filled); tests only read them."""
    folder = tmp_path_factory.mktemp("sample")
    return {name: build(folder / f"{name}.img", SIZE_MIB) for name, build in BUILDERS.items()}


@pytest.fixture(params=sorted(BUILDERS))
def disk(request: pytest.FixtureRequest, disks: dict[str, SampleDisk]) -> SampleDisk:
    return disks[request.param]


def _read(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def _blkid(path: Path, offset: int, size: int) -> dict[str, str]:
    out = subprocess.run(
        ["blkid", "-p", "-o", "export", "-O", str(offset), "-S", str(size), str(path)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    pairs = (line.split("=", 1) for line in out.splitlines() if "=" in line)
    # The export format escapes spaces and quotes with a backslash.
    return {key: re.sub(r"\\(.)", r"\1", value) for key, value in pairs}


# ------------------------------------------------------------------ the table


def test_table_is_exactly_as_intended(disk: SampleDisk) -> None:
    table = sample.sfdisk_json(disk.path)
    assert table["unit"] == "sectors"
    assert table["sectorsize"] == 512
    reported = table["partitions"]
    assert isinstance(reported, list)
    assert len(reported) == len(disk.partitions)
    by_number = {int(str(p["node"]).removeprefix(str(disk.path))): p for p in reported}
    assert sorted(by_number) == sorted(p.number for p in disk.partitions)
    for part in disk.partitions:
        got = by_number[part.number]
        assert (got["start"], got["size"]) == (part.start_lba, part.length_lba)
        if disk.scheme == "msdos":
            assert int(got["type"], 16) == part.mbr_type
            assert bool(got.get("bootable", False)) == part.bootable
        else:
            assert got["type"] == part.gpt_type
            assert got["uuid"] == part.guid
            assert got["name"] == part.name
    if disk.scheme == "msdos":
        assert table["label"] == "dos"
        assert table["id"] == f"0x{disk.signature}".lower()
    else:
        assert table["label"] == "gpt"
        assert table["id"] == disk.disk_guid
        assert table["firstlba"] == 34
        assert table["lastlba"] == disk.size_lba - 34


def test_partitions_are_mib_aligned_inside_the_disk_and_apart(disk: SampleDisk) -> None:
    data = sorted(disk.data_partitions, key=lambda p: p.start_lba)
    for p in disk.partitions:
        assert p.start_lba % sample.MIB_LBA == 0
        assert p.length_lba % sample.MIB_LBA == 0
        assert p.stop_lba <= disk.size_lba
    for a, b in itertools.pairwise(data):
        assert a.stop_lba <= b.start_lba


def test_windows_disk_has_the_forum_users_layout(tmp_path: Path) -> None:
    disk = sample.build_windows_mbr(tmp_path / "w.img", SIZE_MIB, garbage=False)
    table = sample.sfdisk_json(disk.path)
    assert table["id"] == "0x7490a9a7"
    first, second = table["partitions"]
    assert (first["start"], first["type"], first.get("bootable")) == (2048, "7", True)
    assert second["type"] == "7" and "bootable" not in second
    assert second["start"] == first["start"] + first["size"]
    labels = [_blkid(disk.path, p.offset, p.size).get("LABEL") for p in disk.partitions]
    assert labels == ["System Reserved", "Windows"]


def test_logicals_disk_has_an_extended_chain_and_free_room_inside_it(
    disks: dict[str, SampleDisk],
) -> None:
    disk = disks["mbr_with_logicals"]
    extended = disk.partition(2)
    assert extended.kind == "extended"
    logicals = [p for p in disk.partitions if p.kind == "logical"]
    assert [p.number for p in logicals] == [5, 6]
    # Each EBR sits before its logical partition, inside the extended partition.
    assert disk.ebr_lbas[0] == extended.start_lba
    for ebr, logical in zip(disk.ebr_lbas, logicals, strict=True):
        assert extended.start_lba <= ebr < logical.start_lba
        assert _read(disk.path, ebr * SECTOR + 510, 2) == b"\x55\xaa"
    inside = [(s, n) for s, n in disk.unallocated() if extended.start_lba <= s < extended.stop_lba]
    assert inside and inside[-1][0] >= logicals[-1].stop_lba
    assert inside[-1][0] + inside[-1][1] <= extended.stop_lba


def test_unallocated_spans_avoid_partitions_ebrs_and_gpt_areas(disk: SampleDisk) -> None:
    spans = disk.unallocated()
    assert spans, "every sample leaves some room for a one-partition restore"
    for start, length in spans:
        assert start % sample.MIB_LBA == 0 and length >= sample.MIB_LBA
        stop = start + length
        for p in disk.data_partitions:
            assert stop <= p.start_lba or start >= p.stop_lba
        for ebr in disk.ebr_lbas:
            assert not start <= ebr < stop
        if disk.scheme == "gpt":
            assert stop <= disk.size_lba - sample.GPT_AREA_SECTORS


def test_boot_code_is_written_before_the_table(disk: SampleDisk) -> None:
    sector0 = _read(disk.path, 0, SECTOR)
    assert len(disk.boot_code) == 440
    assert sector0[:440] == disk.boot_code
    assert sector0[510:] == b"\x55\xaa"


# ------------------------------------------------------------------ filesystems


def test_filesystems_check_clean(disk: SampleDisk) -> None:
    for p in disk.data_partitions:
        assert p.fs is not None
        clean, output = sample.fsck_clean(p.fs, disk.path, p.offset, p.size)
        assert clean, f"partition {p.number} ({p.fs}): {output}"


def test_filesystems_carry_their_labels_and_ids(disk: SampleDisk) -> None:
    for p in disk.data_partitions:
        found = _blkid(disk.path, p.offset, p.size)
        assert found.get("TYPE") == p.fs
        assert found.get("LABEL") == p.label
        assert found.get("UUID") == p.fs_uuid


def test_files_read_back_identical(disk: SampleDisk) -> None:
    for p in disk.data_partitions:
        assert p.fs is not None
        tool = {"vfat": "mcopy", "ntfs": "ntfscp", "ext4": "mke2fs"}[p.fs]
        if shutil.which(tool):
            assert p.files, f"partition {p.number} should hold files when {tool} exists"
        assert disk.files[p.number] == dict(p.files)
        assert sample.read_files(p.fs, disk.path, p.offset, p.size) == dict(p.files)


def test_fat_and_ntfs_keep_the_partition_start_as_hidden_sectors(disk: SampleDisk) -> None:
    for p in disk.data_partitions:
        if p.fs in ("vfat", "ntfs"):
            boot = _read(disk.path, p.offset, SECTOR)
            assert int.from_bytes(boot[0x1C:0x20], "little") == p.start_lba


@pytest.mark.parametrize(
    ("fs", "builder", "number", "damage_at"),
    [
        ("ext4", sample.build_gpt_linux, 2, 1024),  # the primary superblock
        ("vfat", sample.build_gpt_linux, 1, 0),  # the boot sector
        ("ntfs", sample.build_windows_mbr, 2, None),  # the first MFT record
    ],
)
def test_fsck_clean_reports_a_damaged_filesystem(
    tmp_path: Path, fs: str, builder: Builder, number: int, damage_at: int | None
) -> None:
    disk = builder(tmp_path / "d.img", SIZE_MIB, garbage=False)
    p = disk.partition(number)
    if damage_at is None:
        boot = _read(disk.path, p.offset, SECTOR)
        cluster = boot[0x0D] * int.from_bytes(boot[0x0B:0x0D], "little")
        damage_at = int.from_bytes(boot[0x30:0x38], "little") * cluster
    with open(disk.path, "r+b") as f:
        f.seek(p.offset + damage_at)
        f.write(b"\xff" * 1024)
    clean, output = sample.fsck_clean(fs, disk.path, p.offset, p.size)
    assert not clean
    assert output


# ------------------------------------------------------------------ garbage


def test_unused_areas_hold_the_seeded_garbage(disk: SampleDisk) -> None:
    fill = b"".join(sample.garbage_blocks(disk.seed, disk.size_bytes))
    image = disk.path.read_bytes()
    unused = disk.unused_extents()
    # Track 0 after sector 0, the EBR gaps and the free tail all stay as they were.
    assert sum(stop - start for start, stop in unused) >= 2 * MIB
    for start, stop in unused:
        assert image[start:stop] == fill[start:stop], f"bytes {start}-{stop} were overwritten"
    assert fill[MIB : 2 * MIB].count(0) < MIB // 100  # the fill really is not zeros


def test_without_garbage_unused_areas_are_zero(tmp_path: Path) -> None:
    disk = sample.build_mbr_with_logicals(tmp_path / "z.img", SIZE_MIB, garbage=False)
    image = disk.path.read_bytes()
    for start, stop in disk.unused_extents():
        assert image[start:stop] == bytes(stop - start)
    for p in disk.data_partitions:
        assert p.fs is not None
        assert sample.fsck_clean(p.fs, disk.path, p.offset, p.size)[0]


def test_same_seed_gives_the_same_table_and_garbage(tmp_path: Path) -> None:
    a = sample.build_mbr_with_logicals(tmp_path / "a.img", SIZE_MIB, seed=7)
    b = sample.build_mbr_with_logicals(tmp_path / "b.img", SIZE_MIB, seed=7)
    for start, stop in a.table_extents() + a.unused_extents():
        assert _read(a.path, start, stop - start) == _read(b.path, start, stop - start)
    c = sample.build_blank(tmp_path / "c.img", 4, seed=7)
    d = sample.build_blank(tmp_path / "d.img", 4, seed=8)
    assert c.read_bytes() != d.read_bytes()


def test_blank_disk_has_no_table(tmp_path: Path) -> None:
    garbage = sample.build_blank(tmp_path / "g.img", 8, seed=5)
    zeros = sample.build_blank(tmp_path / "z.img", 8, garbage=False)
    assert garbage.stat().st_size == zeros.stat().st_size == 8 * MIB
    assert garbage.read_bytes() == b"".join(sample.garbage_blocks(5, 8 * MIB))
    assert zeros.read_bytes() == bytes(8 * MIB)
    with pytest.raises(sample.SampleError):
        sample.sfdisk_json(zeros)


def test_default_size_disk_is_256_mib_with_the_same_layout(tmp_path: Path) -> None:
    disk = sample.build_gpt_linux(tmp_path / "big.img", garbage=False)
    assert disk.size_bytes == disk.path.stat().st_size == 256 * MIB
    assert disk.partition(1).size == 32 * MIB  # the EFI System partition
    table = sample.sfdisk_json(disk.path)
    assert [p["start"] for p in table["partitions"]] == [p.start_lba for p in disk.partitions]
    root = disk.partition(2)
    assert sample.read_files("ext4", disk.path, root.offset, root.size) == dict(root.files)


def test_too_small_a_disk_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least"):
        sample.build_gpt_linux(tmp_path / "tiny.img", 16)


def test_intended_table_is_what_the_table_reader_finds(disk: SampleDisk) -> None:
    with DiskReader(disk.path) as reader:
        parsed = read_table(reader.read, disk.size_bytes)
    assert parsed is not None
    intended = disk.to_table()
    # The table reader sees the table only; filesystem facts come from elsewhere.
    bare = intended.model_copy(
        update={
            "partitions": tuple(
                p.model_copy(update={"filesystem": None, "label": None, "fs_uuid": None})
                for p in intended.partitions
            )
        }
    )
    assert parsed.table == bare
    ebrs = tuple(lba for lba, _ in parsed.ebrs)
    assert ebrs == disk.ebr_lbas


def test_filesystems_free_space_holds_garbage_too(disk: SampleDisk) -> None:
    # Like a used disk: what a backup of used blocks leaves out is not zeros.
    fill = b"".join(sample.garbage_blocks(disk.seed, disk.size_bytes))
    image = disk.path.read_bytes()
    for p in disk.data_partitions:
        blocks = range(p.offset, p.offset + p.size, 4096)
        same = sum(1 for o in blocks if image[o : o + 4096] == fill[o : o + 4096])
        assert same >= len(blocks) // 2, f"partition {p.number}: {same}/{len(blocks)} left"


def test_custom_layout_with_old_alignment_and_empty_filesystems(tmp_path: Path) -> None:
    # Windows XP put the first partition at sector 63; restores must keep that exactly.
    parts = [
        SamplePartition(
            1, 63, 20 * sample.MIB_LBA - 63, "ntfs", "XP", mbr_type=0x07, bootable=True
        ),
        SamplePartition(2, 20 * sample.MIB_LBA, 8 * sample.MIB_LBA, "vfat", "USB", mbr_type=0x0E),
    ]
    disk = sample.build_disk(tmp_path / "xp.img", 32, "msdos", parts, seed=4, signature="0A0B0C0D")
    table = sample.sfdisk_json(disk.path)
    assert [(p["start"], p["size"]) for p in table["partitions"]] == [
        (63, 20 * sample.MIB_LBA - 63),
        (20 * sample.MIB_LBA, 8 * sample.MIB_LBA),
    ]
    for p in disk.partitions:
        assert p.fs is not None
        assert sample.fsck_clean(p.fs, disk.path, p.offset, p.size)[0]
        assert sample.read_files(p.fs, disk.path, p.offset, p.size) == {}
        boot = _read(disk.path, p.offset, SECTOR)
        assert int.from_bytes(boot[0x1C:0x20], "little") == p.start_lba
    assert disk.unallocated() == ((28 * sample.MIB_LBA, 4 * sample.MIB_LBA),)


def test_a_partition_outside_the_disk_is_refused(tmp_path: Path) -> None:
    part = SamplePartition(1, 2048, 40 * sample.MIB_LBA, "ext4", "big", mbr_type=0x83)
    with pytest.raises(ValueError, match="does not fit"):
        sample.build_disk(tmp_path / "x.img", 32, "msdos", [part])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the build as another user")
def test_builds_as_a_normal_user_without_sbin_on_path() -> None:
    # The demo runs as a normal user whose PATH lacks /usr/sbin, where mkfs lives.
    folder = Path(tempfile.mkdtemp(prefix="restore-tui-nobody-"))
    try:
        folder.chmod(0o777)
        script = (
            "import sys; from restore_tui import sample as s\n"
            "d = s.build_gpt_linux(sys.argv[1], 64)\n"
            "for p in d.data_partitions:\n"
            "    assert s.fsck_clean(p.fs, d.path, p.offset, p.size)[0], p\n"
            "    assert s.read_files(p.fs, d.path, p.offset, p.size) == dict(p.files), p\n"
            "print('built', d.path.stat().st_uid)\n"
        )
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(folder), "TMPDIR": str(folder),
               "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # fmt: skip
        reachable = subprocess.run(
            [*as_nobody, sys.executable, "-c", "import pydantic, restore_tui.sample"],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if reachable.returncode != 0:
            # E.g. a checkout inside a mode-0700 folder: the unprivileged user cannot
            # even load the code, which says nothing about the builder.
            pytest.skip("this checkout is not readable by an unprivileged user (nobody)")
        proc = subprocess.run(
            [*as_nobody, sys.executable, "-c", script, str(folder / "u.img")],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "built 65534"
    finally:
        shutil.rmtree(folder)


@pytest.mark.parametrize("fs", ["ext4", "vfat", "ntfs"])
def test_readers_refuse_what_is_not_a_filesystem(tmp_path: Path, fs: str) -> None:
    blank = sample.build_blank(tmp_path / "b.img", 8, seed=6)
    with pytest.raises(sample.SampleError):
        sample.read_files(fs, blank, MIB, 4 * MIB)
    assert not sample.fsck_clean(fs, blank, MIB, 4 * MIB)[0]

"""Restores of real sample disks (real filesystems) through the command line.

Image file to image file and loop device to loop device: stored ranges, boot code
and track 0 equal the source, filesystems check clean, files are identical; one
partition into free space leaves every other byte alone; damaged data stops the
restore before it is written and `resume` with a good copy finishes.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from archive import open_archive
from archive.manifest import ArchiveManifest
from layout.gaps import free_regions
from layout.table_io import read_table
from restore_tui import sample
from restore_tui.cli import main
from restore_tui.journal import Journal, beside_path

SECTOR = 512
MIB = 1024 * 1024

pytestmark = pytest.mark.skipif(
    shutil.which("mkfs.ext4") is None or shutil.which("mkfs.vfat") is None,
    reason="needs mkfs.ext4 and mkfs.vfat to build sample disks",
)


def backup(source: str | Path, out: Path) -> ArchiveManifest:
    assert main(["backup", str(source), str(out)]) == 0
    with open_archive(out) as archive:
        return archive.manifest


def read(path: str | Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def digest(path: str | Path, offset: int, length: int) -> str:
    return hashlib.sha256(read(path, offset, length)).hexdigest()


def blank(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def assert_restored(
    disk: sample.SampleDisk,
    manifest: ArchiveManifest,
    source: str,
    target: str,
    *,
    resized_gpt: bool = False,
) -> None:
    """Boot code, track 0, every stored range equal; filesystems clean; files identical."""
    assert read(target, 0, 440) == read(source, 0, 440) == manifest.boot_code
    stop = manifest.boot.track0_stop
    # On a larger GPT disk the primary header (LBA 1) names the new backup location;
    # everything else of track 0 (the entries, the gap) is the source's.
    start = 2 * SECTOR if resized_gpt else SECTOR
    assert read(target, start, stop - start) == read(source, start, stop - start)
    for image in manifest.partitions:
        for chunk in image.chunks:
            assert digest(target, chunk.offset, chunk.length) == digest(
                source, chunk.offset, chunk.length
            ), f"partition {image.number} differs at byte {chunk.offset}"
    for part in disk.data_partitions:
        if part.fs is None:
            continue
        ok, output = sample.fsck_clean(part.fs, target, part.offset, part.size)
        assert ok, output
        assert sample.read_files(part.fs, target, part.offset, part.size) == disk.files[part.number]


@pytest.mark.parametrize("builder", [sample.build_mbr_with_logicals, sample.build_gpt_linux])
def test_full_disk_image_to_image(
    tmp_path: Path, builder: Callable[..., sample.SampleDisk]
) -> None:
    disk = builder(tmp_path / "src.img", 64)
    manifest = backup(disk.path, tmp_path / "src.rtui")
    target = blank(tmp_path / "target.img", disk.size_bytes)
    rc = main(["restore", str(tmp_path / "src.rtui"), "--target", str(target), "--yes"])
    assert rc == 0
    assert_restored(disk, manifest, str(disk.path), str(target))
    # Sector 0 whole (table included) and the GPT structures equal the source's.
    assert read(target, 0, SECTOR) == read(disk.path, 0, SECTOR)
    journal = Journal.load(beside_path(tmp_path / "src.rtui"))
    assert journal.record.finished


def test_full_disk_loop_to_loop(tmp_path: Path, loop_device: Callable[..., str]) -> None:
    disk = sample.build_mbr_with_logicals(tmp_path / "src.img", 64, seed=5)
    src_dev = loop_device(disk.path, read_only=True)
    manifest = backup(src_dev, tmp_path / "src.rtui")
    target_img = tmp_path / "target.img"
    target_img.write_bytes(b"\xcc" * disk.size_bytes)  # an old disk full of other data
    target_dev = loop_device(target_img)
    rc = main(["restore", str(tmp_path / "src.rtui"), "--target", target_dev, "--yes"])
    assert rc == 0
    assert_restored(disk, manifest, src_dev, target_dev)


def test_larger_gpt_disk_passes_sgdisk_and_smaller_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = sample.build_gpt_linux(tmp_path / "src.img", 48)
    manifest = backup(disk.path, tmp_path / "src.rtui")
    big = blank(tmp_path / "big.img", 80 * MIB)
    assert main(["restore", str(tmp_path / "src.rtui"), "--target", str(big), "--yes"]) == 0
    assert_restored(disk, manifest, str(disk.path), str(big), resized_gpt=True)
    if shutil.which("sgdisk"):
        proc = subprocess.run(["sgdisk", "-v", str(big)], capture_output=True, text=True)
        assert proc.returncode == 0 and "No problems found" in proc.stdout, proc.stdout
    parsed = read_table(lambda o, n: read(big, o, n), 80 * MIB)
    assert parsed is not None and parsed.table.disk_size_lba == 80 * MIB // SECTOR
    # The backup header sits at the end of the larger disk.
    assert read(big, 80 * MIB - SECTOR, 8) == b"EFI PART"

    small = blank(tmp_path / "small.img", 24 * MIB)
    capsys.readouterr()
    assert main(["restore", str(tmp_path / "src.rtui"), "--target", str(small), "--yes"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "too small" in err
    assert read(small, 0, 24 * MIB) == bytes(24 * MIB)


def test_one_partition_into_free_space(tmp_path: Path) -> None:
    """Backed-up FAT partition 5 goes into the free end of another disk's extended partition."""
    source = sample.build_mbr_with_logicals(tmp_path / "src.img", 64, seed=11)
    backup(source.path, tmp_path / "src.rtui")
    target = sample.build_mbr_with_logicals(tmp_path / "target.img", 64, seed=12)
    table = target.to_table()
    regions = free_regions(table, target.size_lba, SECTOR, ebr_lbas=target.ebr_lbas)
    region = next(r for r in regions if r.inside_extended)
    before = {p.number: digest(target.path, p.offset, p.size) for p in target.data_partitions}
    ebrs_before = {lba: read(target.path, lba * SECTOR, SECTOR) for lba in target.ebr_lbas}
    with open(target.path, "rb") as f:
        whole_before = f.read()

    rc = main([
        "restore", str(tmp_path / "src.rtui"), "--target", str(target.path),
        "--partition", "5", "--region", str(region.start_lba), "--yes",
    ])  # fmt: skip
    assert rc == 0

    parsed = read_table(lambda o, n: read(target.path, o, n), target.size_bytes)
    assert parsed is not None
    new = [p for p in parsed.table.partitions if p.number not in before and p.kind == "logical"]
    assert len(new) == 1
    new_part = new[0]
    assert region.start_lba <= new_part.start_lba <= region.end_lba
    offset, size = new_part.start_lba * SECTOR, new_part.length_lba * SECTOR
    # Every other partition is byte for byte what it was.
    for number, old_hash in before.items():
        p = target.partition(number)
        assert digest(target.path, p.offset, p.size) == old_hash, f"partition {number} changed"
    # The existing EBRs only gained the link to the new one (the last one's second entry).
    for lba, old in ebrs_before.items():
        now = read(target.path, lba * SECTOR, SECTOR)
        assert now[:462] == old[:462] and now[478:] == old[478:]
    # Nothing outside the new partition, its EBR and the table sectors changed.
    with open(target.path, "rb") as f:
        whole_after = f.read()
    touched = [(0, SECTOR), (offset, offset + size)]
    touched += [(lba * SECTOR, lba * SECTOR + SECTOR) for lba in target.ebr_lbas]
    touched += [(e0, e1) for e0, e1 in parsed.structure_extents]
    changed = [
        i
        for i in range(0, len(whole_after), SECTOR)
        if whole_after[i : i + SECTOR] != whole_before[i : i + SECTOR]
    ]
    for sector_at in changed:
        assert any(a <= sector_at < b for a, b in touched), f"byte {sector_at} changed"
    ok, output = sample.fsck_clean("vfat", target.path, offset, size)
    assert ok, output
    assert sample.read_files("vfat", target.path, offset, size) == source.files[5]
    # The FAT boot sector's hidden-sectors field names the new start.
    assert int.from_bytes(read(target.path, offset + 0x1C, 4), "little") == new_part.start_lba


def corrupt_one_frame(archive: Path, manifest: ArchiveManifest, number: int) -> int:
    """Flip a byte inside a stored frame of partition ``number``; its source offset."""
    chunk = [c for c in manifest.image(number).chunks if c.kind == "data"][1]
    assert chunk.frame_offset is not None and chunk.frame_length is not None
    with open(archive, "r+b") as f:
        at = chunk.frame_offset + chunk.frame_length // 2
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))
    return chunk.offset


def test_damaged_archive_stops_before_writing_and_resume_with_good_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = sample.build_mbr_with_logicals(tmp_path / "src.img", 64, seed=13)
    good = tmp_path / "good" / "src.rtui"
    good.parent.mkdir()
    manifest = backup(disk.path, good)
    bad = tmp_path / "src.rtui"
    shutil.copyfile(good, bad)
    damaged_at = corrupt_one_frame(bad, manifest, 6)
    target = blank(tmp_path / "target.img", disk.size_bytes)
    capsys.readouterr()
    assert main(["restore", str(bad), "--target", str(target), "--yes"]) == 1
    err = capsys.readouterr().err
    assert f"partition 6 at byte {damaged_at}" in err
    assert "nothing from it was written" in err and "restore-tui resume" in err
    # Not one byte of the damaged chunk (nor anything after it) reached the disk.
    part6 = disk.partition(6)
    assert read(target, damaged_at, part6.offset + part6.size - damaged_at) == bytes(
        part6.offset + part6.size - damaged_at
    )
    # A good copy put in place of the damaged file; resume continues from the checkpoint.
    shutil.copyfile(good, bad)
    assert main(["resume", str(bad), "--yes"]) == 0
    assert_restored(disk, manifest, str(disk.path), str(target))


def test_apply_refuses_a_stale_plan_and_resume_refuses_another_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = sample.build_mbr_with_logicals(tmp_path / "src.img", 64, seed=14)
    backup(disk.path, tmp_path / "src.rtui")
    target = blank(tmp_path / "target.img", disk.size_bytes)
    plan = tmp_path / "plan.json"
    assert (
        main(["plan", str(tmp_path / "src.rtui"), "--target", str(target), "--out", str(plan)]) == 0
    )
    # The disk gets a partition table after planning: the plan is stale.
    subprocess.run(
        ["sfdisk", "-q", str(target)],
        input="label: dos\n,10M,L\n",
        text=True,
        check=True,
        capture_output=True,
    )
    snapshot = read(target, 0, disk.size_bytes)
    capsys.readouterr()
    assert main(["apply", str(plan), "--yes"]) == 1
    err = capsys.readouterr().err
    assert "stale" in err and read(target, 0, disk.size_bytes) == snapshot

    # Without --yes and without a terminal, nothing happens.
    fresh = blank(tmp_path / "fresh.img", disk.size_bytes)
    assert (
        main(["plan", str(tmp_path / "src.rtui"), "--target", str(fresh), "--out", str(plan)]) == 0
    )
    capsys.readouterr()
    assert main(["apply", str(plan)]) == 1
    assert "add --yes" in capsys.readouterr().err
    assert read(fresh, 0, disk.size_bytes) == bytes(disk.size_bytes)

    # An interrupted restore onto `fresh` cannot be resumed onto a different disk.
    assert main(["apply", str(plan), "--yes", "--no-verify"]) == 0
    journal = Journal.load(beside_path(tmp_path / "src.rtui"))
    journal.save(finished=False, completed_stages=("table",), current_stage="partition-1")
    other = blank(tmp_path / "other.img", disk.size_bytes + MIB)
    capsys.readouterr()
    assert main(["resume", str(tmp_path / "src.rtui"), "--target", str(other), "--yes"]) == 1
    assert "not the disk the interrupted restore was writing to" in capsys.readouterr().err
    assert read(other, 0, MIB) == bytes(MIB)


def test_busy_archive_holding_and_read_only_disks_are_refused(
    tmp_path: Path, loop_device: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    disk = sample.build_mbr_with_logicals(tmp_path / "src.img", 64, seed=15)
    backup(disk.path, tmp_path / "src.rtui")
    # The would-be target has its first partition mounted, and the backup lives on it.
    busy = sample.build_mbr_with_logicals(tmp_path / "busy.img", 64, seed=16)
    device = loop_device(busy.path)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    part_node = f"{device}p1"
    if not Path(part_node).exists():
        pytest.skip("partx could not add partition nodes for the loop device")
    subprocess.run(["mount", part_node, str(mountpoint)], check=True, capture_output=True)
    try:
        shutil.copyfile(tmp_path / "src.rtui", mountpoint / "src.rtui")
        before = digest(device, 0, busy.size_bytes)
        capsys.readouterr()
        rc = main(["restore", str(mountpoint / "src.rtui"), "--target", device, "--yes"])
        err = capsys.readouterr().err
        assert rc == 1 and err.startswith("error: ") and "cannot be the target now" in err
        assert "nothing is written to it" in err
        assert "holds the backup you are restoring from" in err
        assert "in use" in err and str(mountpoint) in err
        assert digest(device, 0, busy.size_bytes) == before
    finally:
        subprocess.run(["umount", str(mountpoint)], capture_output=True)

    read_only = loop_device(blank(tmp_path / "ro.img", disk.size_bytes), read_only=True)
    capsys.readouterr()
    assert main(["restore", str(tmp_path / "src.rtui"), "--target", read_only, "--yes"]) == 1
    assert "read-only" in capsys.readouterr().err


def test_one_partition_without_region_takes_the_first_free_space_it_fits(tmp_path: Path) -> None:
    """`restore --partition N` alone picks free space the way `plan` does; too big is refused."""
    source = sample.build_mbr_with_logicals(tmp_path / "src.img", 64, seed=21)
    backup(source.path, tmp_path / "src.rtui")
    target = sample.build_gpt_linux(tmp_path / "target.img", 96, garbage=False, seed=22)
    ((free_start, free_length),) = target.unallocated()
    before = {p.number: digest(target.path, p.offset, p.size) for p in target.data_partitions}
    whole = digest(target.path, 0, target.size_bytes)

    # The extended container is no partition of its own: refused, nothing written.
    assert main([
        "restore", str(tmp_path / "src.rtui"), "--target", str(target.path),
        "--partition", "2", "--yes",
    ]) == 1  # fmt: skip
    assert digest(target.path, 0, target.size_bytes) == whole

    moved = source.partition(5)
    assert moved.length_lba <= free_length
    assert main([
        "restore", str(tmp_path / "src.rtui"), "--target", str(target.path),
        "--partition", "5", "--yes",
    ]) == 0  # fmt: skip
    parsed = read_table(lambda o, n: read(target.path, o, n), target.size_bytes)
    assert parsed is not None
    new = [p for p in parsed.table.partitions if p.number not in before]
    assert len(new) == 1
    assert free_start <= new[0].start_lba and new[0].stop_lba <= free_start + free_length
    for number, old_hash in before.items():
        p = target.partition(number)
        assert digest(target.path, p.offset, p.size) == old_hash, f"partition {number} changed"
    ok, output = sample.fsck_clean("vfat", target.path, new[0].start_lba * SECTOR, moved.size)
    assert ok, output


def test_moved_fat32_partition_gets_both_boot_sectors_fixed(tmp_path: Path) -> None:
    """FAT32 keeps a backup boot sector (sector 6): moving the partition updates both copies."""
    mib = 1024 * 1024
    src = tmp_path / "fat32.img"
    with src.open("wb") as f:
        f.truncate(64 * mib)
    subprocess.run(
        ["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(src)],
        input="label: dos\nstart=2048, size=71680, type=c\n", text=True, check=True,
        capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["mkfs.vfat", "-F", "32", "-n", "CAMERA", "--offset", "2048", str(src), str(35 * 1024)],
        check=True, capture_output=True,
    )  # fmt: skip
    manifest = backup(src, tmp_path / "fat32.rtui")
    assert manifest.table.partition(1).fs_version == "FAT32"

    target = sample.build_gpt_linux(tmp_path / "target.img", 256, garbage=False, seed=31)
    ((free_start, _free_length),) = target.unallocated()
    assert main([
        "restore", str(tmp_path / "fat32.rtui"), "--target", str(target.path),
        "--partition", "1", "--yes",
    ]) == 0  # fmt: skip
    parsed = read_table(lambda o, n: read(target.path, o, n), target.size_bytes)
    assert parsed is not None
    (new,) = [p for p in parsed.table.partitions if p.start_lba >= free_start]
    start = new.start_lba * SECTOR
    for sector in (0, 6):  # the boot sector and its FAT32 backup
        field = read(target.path, start + sector * SECTOR + 0x1C, 4)
        assert int.from_bytes(field, "little") == new.start_lba, sector
    ok, output = sample.fsck_clean("vfat", target.path, start, new.length_lba * SECTOR)
    assert ok, output
    assert "differences between boot sector and its backup" not in output


def test_apply_onto_a_resized_disk_names_the_size_not_a_table_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = sample.build_windows_mbr(tmp_path / "src.img", 64, seed=15)
    backup(disk.path, tmp_path / "src.rtui")
    target = sample.build_mbr_with_logicals(tmp_path / "target.img", 64, seed=16).path
    plan = tmp_path / "plan.json"
    assert main(["plan", str(tmp_path / "src.rtui"), "--target", str(target),
                 "--out", str(plan)]) == 0  # fmt: skip
    with target.open("r+b") as f:
        f.truncate(disk.size_bytes + MIB)  # the same file and table, now another size
    before = read(target, 0, disk.size_bytes + MIB)
    capsys.readouterr()
    assert main(["apply", str(plan), "--yes"]) == 1
    err = capsys.readouterr().err
    # The size is what changed; its table is the same, so no claim that it changed.
    assert "the plan is for" in err and "partition table changed" not in err
    assert read(target, 0, disk.size_bytes + MIB) == before

"""Clonezilla image folders restored end to end: `restore-tui restore FOLDER` onto loop devices.

The folders are made by clonezilla_fixtures (partclone + sfdisk + dd called the way
ocs-sr calls them); the last test restores an image made by the real ocs-sr.
Everything goes through the command line and the real engine.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from clonezilla_fixtures import (
    MISSING_TOOLS,
    FsSpec,
    build_disk_and_image,
    make_fs,
    partclone_image,
    store,
)
from conftest import needs_loop
from test_crash_resume import file_hash, let_go, next_checkpoint, spawn

from archive import open_archive
from archive.manifest import ArchiveManifest
from archive.partclone import HEADER_V2
from layout.models import Partition, PartitionTable
from layout.plan import RestoreArea
from layout.table_io import read_table
from restore_tui import sample
from restore_tui.cli import main
from restore_tui.journal import Checkpoint, beside_path

SECTOR = 512
MIB = 1024 * 1024
OLD = b"\xcc"  # what the target disks held before: an old disk's leftovers

pytestmark = [
    pytest.mark.skipif(bool(MISSING_TOOLS), reason=f"missing tools: {MISSING_TOOLS}"),
    needs_loop,
    pytest.mark.root,
]

Loop = Callable[..., str]


@pytest.fixture(scope="module")
def mbr(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """System Reserved NTFS, extended, two logicals (ext4 split gz, vfat xz)."""
    return build_disk_and_image(
        tmp_path_factory.mktemp("mbr"),
        scheme="dos",
        disk_name="sda",
        specs=[
            FsSpec(1, "ntfs", 16, "System Reserved", "zst"),
            FsSpec(5, "ext4", 20, "home", "gz", split=True),
            FsSpec(6, "vfat", 16, "DATA", "xz"),
        ],
        extended=(2, 5),
        seed=41,
    )


@pytest.fixture(scope="module")
def gpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """EFI vfat (lz4) and ext4 (uncompressed, so a flipped byte hits the data itself)."""
    return build_disk_and_image(
        tmp_path_factory.mktemp("gpt"),
        scheme="gpt",
        disk_name="nvme0n1",
        specs=[FsSpec(1, "vfat", 16, "EFI", "lz4"), FsSpec(2, "ext4", 24, "root", "uncomp")],
        seed=42,
    )


# ---------------------------------------------------------------- helpers


def copy_folder(folder: Path, where: Path) -> Path:
    """A private copy of an image folder, so each restore keeps its own journal beside it."""
    copy = where / folder.name
    shutil.copytree(folder, copy)
    return copy


def old_disk(path: Path, size: int, loop_device: Loop) -> str:
    path.write_bytes(OLD * size)
    return loop_device(path)


def read(path: str | Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def digest(path: str | Path, offset: int, length: int) -> str:
    return hashlib.sha256(read(path, offset, length)).hexdigest()


def table_of(path: str | Path, size: int) -> PartitionTable:
    parsed = read_table(lambda o, n: read(path, o, n), size)
    assert parsed is not None, f"no partition table on {path}"
    return parsed.table


def geometry(table: PartitionTable) -> list[tuple[object, ...]]:
    return [
        (p.number, p.kind, p.start_lba, p.length_lba, p.mbr_type, p.gpt_type, p.gpt_guid)
        for p in table.partitions
    ]


def restore(*args: str | Path) -> int:
    return main(["restore", *map(str, args), "--yes"])


def check_filesystem(fs: str, source: str | Path, target: str | Path, p: Partition) -> None:
    """Clean filesystem on the target, holding the same files as the source's."""
    offset, size = p.start_lba * SECTOR, p.length_lba * SECTOR
    ok, output = sample.fsck_clean(fs, target, offset, size)
    assert ok, f"partition {p.number} ({fs}): {output}"
    files = sample.read_files(fs, target, offset, size)
    assert files, f"partition {p.number} ({fs}) holds no files"
    assert files == sample.read_files(fs, source, offset, size)


def assert_ntfs_backup_boot_sector(target: str | Path, p: Partition) -> None:
    boot = read(target, p.start_lba * SECTOR, SECTOR)
    assert boot[3:11] == b"NTFS    "
    assert read(target, (p.start_lba + p.length_lba - 1) * SECTOR, SECTOR) == boot


def assert_full_restore(disk: Path, manifest: ArchiveManifest, target: str | Path) -> None:
    """Table geometry, boot code, track 0 and every stored block equal; filesystems sound."""
    size = disk.stat().st_size
    restored = table_of(target, size)
    source = table_of(disk, size)
    assert geometry(restored) == geometry(source)
    assert (restored.mbr_signature, restored.gpt_disk_guid) == (
        source.mbr_signature,
        source.gpt_disk_guid,
    )
    assert read(target, 0, 440) == read(disk, 0, 440)
    for c in manifest.boot.track0:
        assert read(target, c.offset, c.length) == read(disk, c.offset, c.length)
    for image in manifest.partitions:
        for c in image.chunks:
            assert digest(target, c.offset, c.length) == digest(disk, c.offset, c.length), (
                f"partition {image.number} differs at byte {c.offset}"
            )
    for p in source.partitions:
        if p.filesystem in ("ntfs", "ext4", "vfat"):
            check_filesystem(p.filesystem, disk, target, p)
        if p.filesystem == "ntfs":
            assert_ntfs_backup_boot_sector(target, p)


# ---------------------------------------------------------------- (a) full disk


def test_mbr_folder_onto_a_loop_device_and_an_image_file(
    mbr: tuple[Path, Path], tmp_path: Path, loop_device: Loop
) -> None:
    disk, original = mbr
    size = disk.stat().st_size
    with open_archive(original) as archive:
        manifest = archive.manifest
    assert len([p for p in manifest.table.partitions if p.kind == "logical"]) == 2
    assert len(manifest.boot.ebrs) == 2  # only the first was saved; the chain is rebuilt

    device = old_disk(tmp_path / "target.img", size, loop_device)
    assert restore(copy_folder(original, tmp_path), "--target", device) == 0
    assert_full_restore(disk, manifest, device)
    # Each rebuilt EBR is where the table puts it, and reads back as written.
    for ebr in manifest.boot.ebrs:
        assert read(device, ebr.lba * SECTOR, SECTOR) == bytes.fromhex(ebr.data)

    file_dir = tmp_path / "to-file"
    file_dir.mkdir()
    image_target = file_dir / "target.img"
    image_target.write_bytes(OLD * size)
    assert restore(copy_folder(original, file_dir), "--target", image_target) == 0
    assert file_hash(image_target) == file_hash(Path(device))


def test_gpt_folder_onto_a_loop_device(
    gpt: tuple[Path, Path], tmp_path: Path, loop_device: Loop
) -> None:
    disk, original = gpt
    with open_archive(original) as archive:
        manifest = archive.manifest
    device = old_disk(tmp_path / "target.img", disk.stat().st_size, loop_device)
    assert restore(copy_folder(original, tmp_path), "--target", device) == 0
    assert_full_restore(disk, manifest, device)
    # The primary GPT (header and entries) is the saved one.
    assert read(device, SECTOR, 33 * SECTOR) == read(disk, SECTOR, 33 * SECTOR)


# ---------------------------------------------------------------- (b) one partition


def test_one_partition_into_free_space_of_a_used_loop_device(
    mbr: tuple[Path, Path], tmp_path: Path, loop_device: Loop
) -> None:
    """NTFS System Reserved, then the FAT partition, each into free space of another disk."""
    disk, original = mbr
    folder = copy_folder(original, tmp_path)
    target = sample.build_mbr_with_logicals(tmp_path / "target.img", 160, seed=43)
    device = loop_device(target.path)
    kept = {p.number: digest(device, p.offset, p.size) for p in target.data_partitions}
    with open_archive(folder) as archive:
        source = archive.manifest.table  # with the filesystems blkid.list names
    present = {p.number for p in table_of(device, target.size_bytes).partitions}

    for number in (1, 6):
        assert restore(folder, "--target", device, "--partition", number) == 0
        table = table_of(device, target.size_bytes)
        (new,) = [p for p in table.partitions if p.number not in present]
        present.add(new.number)
        src = source.partition(number)
        assert new.kind == "logical" and new.length_lba == src.length_lba
        assert new.start_lba != src.start_lba  # moved: the boot sector must say so
        assert src.filesystem is not None
        offset, size = new.start_lba * SECTOR, new.length_lba * SECTOR
        ok, output = sample.fsck_clean(src.filesystem, device, offset, size)
        assert ok, output
        files = sample.read_files(src.filesystem, device, offset, size)
        assert files and files == sample.read_files(
            src.filesystem, disk, src.start_lba * SECTOR, size
        )
        # Hidden sectors: the partition's start on the disk, for NTFS and FAT alike.
        assert int.from_bytes(read(device, offset + 0x1C, 4), "little") == new.start_lba
        if src.filesystem == "ntfs":
            assert_ntfs_backup_boot_sector(device, new)
        for p in target.data_partitions:
            assert digest(device, p.offset, p.size) == kept[p.number], f"partition {p.number}"


# ---------------------------------------------------------------- (c) kill and resume


def journal_position(journal: Path) -> Checkpoint | None:
    try:
        return Checkpoint.model_validate_json(journal.read_text())
    except (OSError, ValueError):
        return None


def stage_of(record: Checkpoint, number: int) -> str:
    """The plan's stage restoring partition ``number`` (named by role: "system", ...)."""
    return next(
        s.name
        for s in record.plan.stages
        if any(isinstance(a, RestoreArea) and a.area == number for a in s.actions)
    )


def kill_mid_partition(command: list[str], journal: Path, number: int, rng: random.Random) -> None:
    """Run ``restore-tui COMMAND`` in lockstep (it waits after each checkpoint until told
    to go on); once it is past the first MiB of partition ``number``, let it run a
    moment longer and kill -9 it mid-write."""
    proc = spawn(command)
    killed = False
    try:
        while next_checkpoint(proc, 60):
            record = journal_position(journal)
            let_go(proc)
            if (
                record
                and record.current_stage == stage_of(record, number)
                and record.done_in_action > MIB
            ):
                time.sleep(rng.uniform(0.0, 0.002))
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert killed, f"the restore never got past the first MiB of partition {number}"


def test_kill_mid_partition_then_resume_matches_an_uninterrupted_restore(
    mbr: tuple[Path, Path], tmp_path: Path, loop_device: Loop
) -> None:
    disk, original = mbr
    size = disk.stat().st_size
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref_dir.mkdir()
    run_dir.mkdir()
    reference = ref_dir / "target.img"
    reference.write_bytes(OLD * size)
    assert restore(copy_folder(original, ref_dir), "--target", reference) == 0

    folder = copy_folder(original, run_dir)
    device = old_disk(run_dir / "target.img", size, loop_device)
    journal = beside_path(folder)
    rng = random.Random(44)
    # Killed twice: inside the NTFS partition past its boot sector (so the resumed run
    # must read the boot sector again for the backup boot sector), then inside the
    # split, gzip-compressed ext4 partition.
    for number, command in (
        (1, ["restore", str(folder), "--target", device]),
        (5, ["resume", str(folder)]),
    ):
        kill_mid_partition(command, journal, number, rng)
        after = journal_position(journal)
        assert after is not None and not after.finished
        assert after.current_stage == stage_of(after, number) and after.done_in_action > MIB

    assert main(["resume", str(folder), "--yes"]) == 0
    record = journal_position(journal)
    assert record is not None and record.finished
    assert file_hash(Path(device)) == file_hash(reference)


# ---------------------------------------------------------------- (d) damaged image


def test_flipped_byte_stops_before_the_damaged_group(
    gpt: tuple[Path, Path], tmp_path: Path, loop_device: Loop, capsys: pytest.CaptureFixture[str]
) -> None:
    disk, original = gpt
    folder = copy_folder(original, tmp_path)
    image = folder / "nvme0n1p2.ext4-ptcl-img.uncomp"
    raw = bytearray(image.read_bytes())
    total = int.from_bytes(raw[60:68], "little")
    raw[HEADER_V2.size + (total + 7) // 8 + 4 + 2_000_000] ^= 0x10
    image.write_bytes(bytes(raw))
    with open_archive(folder) as archive:
        manifest = archive.manifest
        (damage,) = archive.verify().damage
    assert damage.partition == 2

    device = old_disk(tmp_path / "target.img", disk.stat().st_size, loop_device)
    capsys.readouterr()
    assert restore(folder, "--target", device) == 1
    err = capsys.readouterr().err
    assert f"partition 2 at byte {damage.offset}" in err and "nothing from it was written" in err
    # The damaged group and everything after it in the partition still hold the old bytes.
    p2 = manifest.table.partition(2)
    stop = (p2.start_lba + p2.length_lba) * SECTOR
    assert read(device, damage.offset, stop - damage.offset) == OLD * (stop - damage.offset)
    # What came before it was restored (the EFI partition is complete).
    for c in manifest.image(1).chunks:
        assert read(device, c.offset, c.length) == read(disk, c.offset, c.length)

    # A good copy of the image put back: resume finishes the restore exactly.
    shutil.copyfile(original / image.name, image)
    assert main(["resume", str(folder), "--yes"]) == 0
    assert_full_restore(disk, manifest, device)


# ---------------------------------------------------------------- a lone partclone image


def test_single_partclone_ntfs_image_as_one_partition(tmp_path: Path, loop_device: Loop) -> None:
    """`sysres.ntfs-ptcl-img.zst` alone (no folder around it) into free space of a used disk.

    partclone leaves the NTFS backup boot sector (the volume's last sector) out of
    its image; the restore must still put a copy of the boot sector there.
    """
    fs_image = tmp_path / "sysres.img"
    make_fs(fs_image, FsSpec(1, "ntfs", 16, "System Reserved"), random.Random(45))
    raw = tmp_path / "sysres.pcl"
    partclone_image(fs_image, "ntfs", raw)
    image = tmp_path / "sysres.ntfs-ptcl-img.zst"
    store(raw, image, "zst", split=False)
    raw.unlink()
    size = fs_image.stat().st_size

    target = sample.build_mbr_with_logicals(tmp_path / "target.img", 96, seed=46)
    device = loop_device(target.path)
    kept = {p.number: digest(device, p.offset, p.size) for p in target.data_partitions}
    present = {p.number for p in table_of(device, target.size_bytes).partitions}
    assert restore(image, "--target", device, "--partition", 1) == 0

    (new,) = [p for p in table_of(device, target.size_bytes).partitions if p.number not in present]
    assert new.length_lba * SECTOR == size and new.mbr_type == 0x07
    offset = new.start_lba * SECTOR
    ok, output = sample.fsck_clean("ntfs", device, offset, size)
    assert ok, output
    assert_ntfs_backup_boot_sector(device, new)
    assert int.from_bytes(read(device, offset + 0x1C, 4), "little") == new.start_lba
    files = sample.read_files("ntfs", device, offset, size)
    assert files and files == sample.read_files("ntfs", fs_image, 0, size)
    for p in target.data_partitions:
        assert digest(device, p.offset, p.size) == kept[p.number], f"partition {p.number}"


# ---------------------------------------------------------------- (e) the real ocs-sr


@pytest.mark.slow
def test_image_made_by_the_real_ocs_sr_restores(tmp_path: Path, loop_device: Loop) -> None:
    from test_clonezilla import OCS_SR, ocs_savedisk

    if OCS_SR is None:
        pytest.skip("Debian's clonezilla package (ocs-sr) is not installed")
    disk, folder = ocs_savedisk(loop_device, tmp_path)
    with open_archive(folder) as archive:
        manifest = archive.manifest
        assert manifest.creator.startswith("Clonezilla 5.")
    device = old_disk(tmp_path / "target.img", disk.stat().st_size, loop_device)
    assert restore(folder, "--target", device) == 0
    assert_full_restore(disk, manifest, device)


def test_a_copied_folder_resumes_the_interrupted_restore(
    mbr: tuple[Path, Path], tmp_path: Path, loop_device: Loop
) -> None:
    """`cp -r` gives the folder new modification times; it is still the same backup."""
    disk, original = mbr
    size = disk.stat().st_size
    ref_dir, run_dir, copy_dir = tmp_path / "ref", tmp_path / "run", tmp_path / "copy"
    for d in (ref_dir, run_dir, copy_dir):
        d.mkdir()
    reference = ref_dir / "target.img"
    reference.write_bytes(OLD * size)
    assert restore(copy_folder(original, ref_dir), "--target", reference) == 0

    folder = copy_folder(original, run_dir)
    device = old_disk(run_dir / "target.img", size, loop_device)
    kill_mid_partition(
        ["restore", str(folder), "--target", device], beside_path(folder), 1, random.Random(5)
    )
    time.sleep(1.1)  # so every copied file's modification time differs from the original's
    copied = copy_dir / folder.name
    subprocess.run(["cp", "-r", str(folder), str(copied)], check=True)
    shutil.copy(beside_path(folder), beside_path(copied))
    assert (copied / "parts").stat().st_mtime != (folder / "parts").stat().st_mtime
    shutil.rmtree(folder)  # the original is gone: only the copy can finish it
    assert main(["resume", str(copied), "--yes"]) == 0
    assert file_hash(Path(device)) == file_hash(reference)

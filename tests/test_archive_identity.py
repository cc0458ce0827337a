"""A backup is the same backup by its content, wherever it was copied: ``Archive.identity()``.

Native files copied or renamed, Clonezilla folders copied with ``cp -r`` (new
modification times, another folder name), lone partclone images: the same
identity. A changed chunk digest or one changed byte of a metadata file: another.

What identity vouches for: the metadata and the image files' names and sizes,
never the partition data (that is what verify reads). A partition image whose
data bytes were replaced keeps its identity; verify finds the damage where a
checksum covers it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from clonezilla_fixtures import (
    MISSING_TOOLS,
    FsSpec,
    build_disk_and_image,
    make_fs,
    partclone_image,
    store,
    write_ocs_log,
)
from test_native_format import _disk_bytes, _manifest_json, rewrite_manifest, write_archive

import archive.clonezilla
import archive.decompress
from archive import open_archive
from archive.base import (
    Archive,
    Area,
    Piece,
    ProgressCallback,
    VerifyReport,
    canonical_json,
    sha256_hex,
)
from archive.clonezilla import ClonezillaArchive, open_clonezilla, recorded_time
from archive.manifest import ArchiveManifest
from archive.partclone import HEADER_V2
from restore_tui.commands import verify as verify_command

needs_tools = pytest.mark.skipif(bool(MISSING_TOOLS), reason=f"missing tools: {MISSING_TOOLS}")
LONG_AGO = 1_000_000_000  # 2001-09-09: a modification time no fresh file has


def identity_of(path: Path) -> str:
    with open_archive(path) as arc:
        return arc.identity()


def age_everything(root: Path, when: float = LONG_AGO) -> None:
    """Give every file (and the folder) a modification time unlike the original's."""
    for entry in [root, *root.rglob("*")]:
        os.utime(entry, (when, when), follow_symlinks=False)


def cp_r(source: Path, target: Path) -> Path:
    subprocess.run(["cp", "-r", str(source), str(target)], check=True)
    age_everything(target)
    return target


# ---------------------------------------------------------------- native .rtui


@pytest.fixture
def native(tmp_path: Path) -> Path:
    return write_archive(tmp_path / "windows-pc.rtui", _disk_bytes())


def test_native_copies_and_renames_are_the_same_backup(native: Path, tmp_path: Path) -> None:
    original = identity_of(native)
    assert len(original) == 64 and original == original.lower()
    int(original, 16)

    elsewhere = tmp_path / "stick"
    elsewhere.mkdir()
    kept_times = Path(shutil.copy2(native, elsewhere / native.name))
    plain = Path(shutil.copyfile(native, elsewhere / "plain.rtui"))
    os.utime(plain, (LONG_AGO, LONG_AGO))
    renamed = native.rename(tmp_path / "renamed-backup.rtui")
    assert plain.stat().st_mtime != renamed.stat().st_mtime
    for copy in (kept_times, plain, renamed):
        assert identity_of(copy) == original, copy


def test_native_identity_is_the_manifest_and_is_computed_once(
    native: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_archive(native) as arc:
        # The manifest's canonical JSON is content (chunk digests, the stored creation
        # time); the same value plans recorded before identities existed.
        expected = sha256_hex(canonical_json(arc.manifest.model_dump(mode="json")))
        assert arc.identity() == expected

        def again() -> str:
            raise AssertionError("identity computed twice")

        monkeypatch.setattr(arc, "_content_identity", again)
        assert arc.identity() == expected


def test_the_base_rule_leaves_created_out(native: Path) -> None:
    """An Archive that adds nothing of its own: its manifest without ``created``."""

    class Plain(Archive):
        format_name = "test"

        def __init__(self, manifest: ArchiveManifest) -> None:
            self.path = native
            self.manifest = manifest

        def pieces(self, area: Area, start: int = 0) -> Iterator[Piece]:
            return iter(())

        def verify(self, progress: ProgressCallback | None = None) -> VerifyReport:
            return VerifyReport()

    with open_archive(native) as arc:
        manifest = arc.manifest
    later = manifest.model_copy(update={"created": datetime(2030, 1, 1, tzinfo=UTC)})
    other_disk = manifest.model_copy(update={"creator": "someone else"})
    assert Plain(manifest).identity() == Plain(later).identity()
    assert Plain(manifest).identity() != Plain(other_disk).identity()
    assert Plain(manifest).unchecked() == ()


def test_native_changed_chunk_digest_is_another_backup(native: Path, tmp_path: Path) -> None:
    original = identity_of(native)
    other = Path(shutil.copyfile(native, tmp_path / "other.rtui"))
    obj = _manifest_json(other)
    chunk = obj["partitions"][0]["chunks"][0]  # type: ignore[index]
    chunk["blake3"] = ("0" if chunk["blake3"][0] != "0" else "1") + chunk["blake3"][1:]
    rewrite_manifest(other, json.dumps(obj).encode())
    changed = identity_of(other)
    assert changed != original
    # The other creation time stored inside the file is another backup too.
    obj = _manifest_json(native)
    obj["created"] = "2024-05-02T12:00:00Z"
    rewrite_manifest(other, json.dumps(obj).encode())
    assert identity_of(other) not in (original, changed)


def test_native_archive_leaves_nothing_unchecked(
    native: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_archive(native) as arc:
        assert arc.unchecked() == ()
    capsys.readouterr()
    assert verify_command.run(argparse.Namespace(archive=str(native))) == 0
    out = capsys.readouterr().out
    assert "The backup is sound" in out and "Not covered" not in out


# ---------------------------------------------------------------- Clonezilla folders


@pytest.fixture(scope="module")
def mbr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """System Reserved NTFS, an extended partition with two logicals; dated by ocs-sr's log."""
    if MISSING_TOOLS:
        pytest.skip(f"missing tools: {MISSING_TOOLS}")
    _disk, folder = build_disk_and_image(
        tmp_path_factory.mktemp("mbr"),
        scheme="dos",
        disk_name="sda",
        specs=[
            FsSpec(1, "ntfs", 16, "System Reserved", "zst"),
            FsSpec(5, "ext4", 20, "home", "gz", split=True),
            FsSpec(6, "vfat", 16, "DATA", "xz"),
        ],
        extended=(2, 5),
        seed=7,
    )
    write_ocs_log(folder, "2024-05-01 12:34:56 CEST")
    return folder


@pytest.fixture(scope="module")
def gpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """EFI vfat, an uncompressed ext4 image, a raw dd image; no date recorded."""
    if MISSING_TOOLS:
        pytest.skip(f"missing tools: {MISSING_TOOLS}")
    _disk, folder = build_disk_and_image(
        tmp_path_factory.mktemp("gpt"),
        scheme="gpt",
        disk_name="nvme0n1",
        specs=[
            FsSpec(1, "vfat", 16, "EFI", "lz4"),
            FsSpec(2, "ext4", 24, "root", "uncomp"),
            FsSpec(3, "raw", 4, "raw", "bz2"),
        ],
        seed=8,
    )
    return folder


@needs_tools
def test_clonezilla_folder_copied_with_cp_r_is_the_same_backup(mbr: Path, tmp_path: Path) -> None:
    with open_archive(mbr) as arc:
        original, created = arc.identity(), arc.manifest.created
    # The date ocs-sr wrote in clonezilla-img, not a file's modification time.
    assert created == datetime(2024, 5, 1, 10, 34, 56, tzinfo=UTC)
    copy = cp_r(mbr, tmp_path / "another name")
    assert (copy / "parts").stat().st_mtime != (mbr / "parts").stat().st_mtime
    with open_archive(copy) as arc:
        assert arc.identity() == original
        assert arc.manifest.created == created


@needs_tools
def test_undated_folder_copy_keeps_identity_though_created_differs(
    gpt: Path, tmp_path: Path
) -> None:
    with open_archive(gpt) as arc:
        original, created = arc.identity(), arc.manifest.created
    copy = cp_r(gpt, tmp_path / "copy")
    with open_archive(copy) as arc:
        # Nothing in the folder records a date: the modification time is the fallback...
        assert arc.manifest.created == datetime.fromtimestamp(LONG_AGO, tz=UTC) != created
        # ... and identity does not depend on it.
        assert arc.identity() == original


@needs_tools
@pytest.mark.parametrize(
    ("name", "offset"),
    [
        ("blkid.list", 10),  # a filesystem's UUID, as blkid saw it
        ("sda-hidden-data-after-mbr", 5000),  # track 0 (no checksum of its own)
        ("sda-mbr", 100),  # boot code
        ("clonezilla-img", 3),  # Clonezilla's log
    ],
)
def test_one_changed_byte_of_a_metadata_file_is_another_backup(
    mbr: Path, tmp_path: Path, name: str, offset: int
) -> None:
    original = identity_of(mbr)
    copy = cp_r(mbr, tmp_path / "img")
    raw = bytearray((copy / name).read_bytes())
    raw[offset] ^= 0x01
    (copy / name).write_bytes(bytes(raw))
    assert identity_of(copy) != original


@needs_tools
def test_image_file_size_and_split_parts_count(mbr: Path, tmp_path: Path) -> None:
    original = identity_of(mbr)
    copy = cp_r(mbr, tmp_path / "img")
    part = copy / "sda5.ext4-ptcl-img.gz.ac"
    with part.open("ab") as f:
        f.write(b"\x00")  # gzip ignores trailing garbage; the image reads the same
    assert identity_of(copy) != original


@needs_tools
def test_what_restore_tui_and_people_leave_in_the_folder_is_not_the_backup(
    mbr: Path, tmp_path: Path
) -> None:
    original = identity_of(mbr)
    copy = cp_r(mbr, tmp_path / "img")
    (copy / "img.restore-journal.json").write_text("{}")
    (copy / ".img.restore-journal.json.tmp").write_text("{}")
    (copy / ".hidden").write_text("x")
    (copy / "README.txt").write_text("my backup from May\n")
    (tmp_path / "img.restore-journal.json").write_text("{}")  # beside it, where it goes
    assert identity_of(copy) == original


@needs_tools
def test_the_disk_chosen_from_a_folder_is_part_of_the_identity(mbr: Path, tmp_path: Path) -> None:
    """A two-disk folder: each of its disks is its own backup."""
    copy = cp_r(mbr, tmp_path / "img")
    for path in list(copy.iterdir()):
        if path.name.startswith("sda"):
            shutil.copyfile(path, copy / ("sdb" + path.name[3:]))
    sf = copy / "sdb-pt.sf"
    sf.write_text(sf.read_text().replace("/dev/sda", "/dev/sdb"))
    (copy / "disk").write_text("sda sdb\n")
    (copy / "parts").write_text("sda1 sda5 sda6 sdb1 sdb5 sdb6\n")
    first = ClonezillaArchive(copy, "sda")
    second = ClonezillaArchive(copy, "sdb")
    assert first.identity() != second.identity()


@needs_tools
def test_identity_reads_no_image_data(
    gpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Documented: identity covers metadata and image sizes; the data is verify's job.

    Once the folder is open, no image is read to compute it; a raw image whose
    data became zeros of the same size, or a flipped data byte in a partclone
    image, keeps the identity, and verify reports the damage.
    """
    original = identity_of(gpt)
    copy = cp_r(gpt, tmp_path / "img")
    arc = open_clonezilla(copy)

    def no_images(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("identity() opened a partition image")

    monkeypatch.setattr(archive.clonezilla, "ImageStream", no_images)
    monkeypatch.setattr(archive.clonezilla, "open_reader", no_images)
    monkeypatch.setattr(archive.decompress.ImageStream, "__init__", no_images)
    assert arc.identity() == original
    monkeypatch.undo()

    raw = copy / "nvme0n1p3.dd-img.bz2"
    size = raw.stat().st_size
    raw.write_bytes(raw.read_bytes()[:4] + bytes(size - 4))  # bzip2's magic, then zeros
    image = copy / "nvme0n1p2.ext4-ptcl-img.uncomp"
    data = bytearray(image.read_bytes())
    total = int.from_bytes(data[60:68], "little")
    data[HEADER_V2.size + (total + 7) // 8 + 4 + 2_000_000] ^= 0x10
    image.write_bytes(bytes(data))
    with open_clonezilla(copy) as damaged:
        assert damaged.identity() == original
        report = damaged.verify()
    # The flipped partclone block fails its CRC; the zeroed raw copy no longer decompresses.
    assert {d.partition for d in report.damage} == {2, 3}


def test_recorded_dates() -> None:
    def when(*fields: int) -> datetime:
        return datetime(*fields, tzinfo=UTC)

    assert recorded_time(
        "This image was saved by Clonezilla at 2024-05-01 12:34:56 UTC.\n"
    ) == when(2024, 5, 1, 12, 34, 56)
    assert recorded_time(
        "This image was saved by Clonezilla at 2024-01-15 08:00:00 EST.\n"
    ) == when(2024, 1, 15, 13, 0, 0)
    assert recorded_time(
        "This image was saved by Clonezilla at 2024-01-15 08:00:00 +0530.\n"
    ) == when(2024, 1, 15, 2, 30, 0)
    # An ambiguous zone (CST: China or the US) counts as UTC.
    assert recorded_time(
        "This image was saved by Clonezilla at 2024-01-15 08:00:00 CST.\n"
    ) == when(2024, 1, 15, 8, 0, 0)
    # No first line: the log's start, then its last line, then an Info-*.txt header.
    assert recorded_time("Starting /usr/sbin/ocs-sr at 2023-03-04 05:06:07 UTC...\n") == when(
        2023, 3, 4, 5, 6, 7
    )
    assert recorded_time("### Image created time: 2023-0304-0506\n") == when(2023, 3, 4, 5, 6)
    info = "This image was saved from this machine with DMI info at 2022-1231-2359:\n"
    assert recorded_time("", [info]) == when(2022, 12, 31, 23, 59)
    assert recorded_time("This image was saved by Clonezilla at 2024-13-45 99:00:00 UTC.") is None
    assert recorded_time("no date here") is None


# ---------------------------------------------------------------- a real ocs-sr image


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(shutil.which("ocs-sr") is None, reason="ocs-sr is not installed")
def test_real_ocs_sr_image_copied_is_the_same_backup(loop_device, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from test_clonezilla import ocs_savedisk

    _disk, folder = ocs_savedisk(loop_device, tmp_path)
    with open_archive(folder) as arc:
        original, created = arc.identity(), arc.manifest.created
    log = (folder / "clonezilla-img").read_text()
    assert created == recorded_time(log)
    assert created.strftime("%Y-%m-%d %H:%M:%S") in log
    copy = cp_r(folder, tmp_path / "copied")
    with open_archive(copy) as arc:
        assert (arc.identity(), arc.manifest.created) == (original, created)


# ---------------------------------------------------------------- a lone partclone image


@needs_tools
def test_partclone_image_copy_keeps_identity_rename_does_not(tmp_path: Path) -> None:
    """Documented: a lone image's file names count (they are all it has besides the header)."""
    fs_image = tmp_path / "fs.img"
    make_fs(fs_image, FsSpec(1, "vfat", 8, "DATA"), random.Random(3))
    raw = tmp_path / "sdb1.pcl"
    partclone_image(fs_image, "vfat", raw)
    image = tmp_path / "sdb1.vfat-ptcl-img.gz"
    store(raw, image, "gz", split=True)
    first = tmp_path / "sdb1.vfat-ptcl-img.gz.aa"
    original = identity_of(first)

    stick = tmp_path / "stick"
    stick.mkdir()
    for part in tmp_path.glob("sdb1.vfat-ptcl-img.gz.a?"):
        shutil.copyfile(part, stick / part.name)
    age_everything(stick)
    with open_archive(stick / first.name) as arc:
        assert arc.identity() == original
        assert arc.manifest.source.device == str(stick / "sdb1.vfat-ptcl-img.gz")

    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for part in stick.iterdir():
        shutil.copyfile(part, renamed / part.name.replace("sdb1", "sdc1"))
    assert identity_of(renamed / "sdc1.vfat-ptcl-img.gz.aa") != original

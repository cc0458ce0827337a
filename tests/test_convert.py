"""`restore-tui convert`: a Clonezilla folder into a native backup that restores the same bytes.

The folders are made by clonezilla_fixtures the way ocs-sr makes them (partclone,
sfdisk, dd, the compressors). Restores go to image files, so no root is needed.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from clonezilla_fixtures import MISSING_TOOLS, FsSpec, build_disk_and_image

from archive.native import NativeArchive, partial_path
from archive.partclone import HEADER_V2
from restore_tui.cli import main

pytestmark = pytest.mark.skipif(bool(MISSING_TOOLS), reason=f"missing tools: {MISSING_TOOLS}")
OLD = b"\xcc"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """MBR: NTFS (zstd), extended with ext4 (gzip, split) and FAT (uncompressed)."""
    return build_disk_and_image(
        tmp_path_factory.mktemp("cz"),
        scheme="dos",
        disk_name="sda",
        specs=[
            FsSpec(1, "ntfs", 12, "System Reserved", "zst"),
            FsSpec(5, "ext4", 16, "home", "gz", split=True),
            FsSpec(6, "vfat", 12, "DATA", "uncomp"),
        ],
        extended=(2, 5),
        seed=77,
    )


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def restored(source: Path, size: int, where: Path) -> str:
    """Restore ``source`` onto an old disk image of ``size`` bytes; the result's SHA-256."""
    where.mkdir()
    target = where / "target.img"
    target.write_bytes(OLD * size)
    copy = where / source.name
    (shutil.copytree if source.is_dir() else shutil.copyfile)(source, copy)
    assert main(["restore", str(copy), "--target", str(target), "--yes"]) == 0
    return file_hash(target)


def test_converted_backup_verifies_and_restores_the_same_bytes(
    folder: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    disk, image = folder
    out = tmp_path / "pc.rtui"
    assert main(["convert", str(image), str(out)]) == 0
    assert not partial_path(out).exists()
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0
    assert "The backup is sound" in capsys.readouterr().out
    with NativeArchive(out) as arc:
        m = arc.manifest
        assert m.creator.endswith("(converted by restore-tui from Clonezilla image)")
        assert {p.number for p in m.partitions if p.chunks} == {1, 5, 6}
        assert all(c.digest for p in m.partitions for c in p.chunks if c.kind == "data")
    size = disk.stat().st_size
    assert restored(out, size, tmp_path / "a") == restored(image, size, tmp_path / "b")


def test_a_damaged_partclone_image_is_refused_and_leaves_no_file(
    folder: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, original = folder
    image = tmp_path / "img"
    shutil.copytree(original, image)
    fat = image / "sda6.vfat-ptcl-img.uncomp"
    raw = bytearray(fat.read_bytes())
    total = int.from_bytes(raw[60:68], "little")
    raw[HEADER_V2.size + (total + 7) // 8 + 4 + 700_000] ^= 0x10  # inside the data blocks
    fat.write_bytes(bytes(raw))
    out = tmp_path / "pc.rtui"
    capsys.readouterr()
    assert main(["convert", str(image), str(out)]) == 1
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error: ")]
    assert "partition 6" in line and "checksum does not match" in line and "pc.rtui" in line
    assert not out.exists() and not partial_path(out).exists()


@pytest.mark.skipif(
    shutil.which("fusefat") is None or not Path("/dev/fuse").exists(), reason="needs FUSE"
)
def test_mount_and_files_of_a_clonezilla_folder_say_to_convert(
    folder: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("mount needs root")
    _, image = folder
    for argv in (["mount", str(image), str(tmp_path / "m")], ["files", str(image)]):
        capsys.readouterr()
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "cannot be read at random offsets" in err
        assert f"restore-tui convert {image} {image}.rtui" in err
    assert not (tmp_path / "m").exists()

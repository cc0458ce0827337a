"""One partition onto a disk with no partition table: a new table of the backup's kind is
made, holding only that partition (it used to be refused: "restore the whole disk")."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from archive import open_archive
from archive.backup import backup
from layout.blockio import DiskReader
from layout.table_io import read_table
from restore_tui import sample
from restore_tui.cli import main

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("sfdisk", "mkfs.ext4", "mkfs.ntfs", "sgdisk")),
    reason="needs sfdisk, sgdisk, mkfs.ext4 and mkfs.ntfs to build the sample disks",
)
MIB = 1024 * 1024


def region_bytes(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def table_of(path: Path):  # type: ignore[no-untyped-def]
    with DiskReader(str(path)) as reader:
        parsed = read_table(reader.read, reader.size, 512)
    assert parsed is not None
    return parsed.table


@pytest.mark.parametrize("scheme", ["msdos", "gpt"])
def test_a_partition_onto_an_empty_disk_gets_a_new_table(tmp_path: Path, scheme: str) -> None:
    if scheme == "gpt":
        source = sample.build_gpt_linux(tmp_path / "src.img", 64)
        number, fs = 2, "ext4"
    else:
        source = sample.build_windows_mbr(tmp_path / "src.img", 64)
        number, fs = 2, "ntfs"
    archive = tmp_path / "src.rtui"
    backup(str(source.path), archive)
    blank = sample.build_blank(tmp_path / "blank.img", 96)

    assert main(["plan", str(archive), "--target", str(blank), "--partition", str(number)]) == 0
    args = ["restore", str(archive), "--target", str(blank), "--partition", str(number), "--yes"]
    assert main(args) == 0

    table = table_of(Path(blank))
    assert table.scheme == scheme and len(table.partitions) == 1
    (new,) = table.partitions
    src = table_of(Path(source.path)).partition(number)
    assert new.start_lba == 2048 and new.length_lba == src.length_lba
    if scheme == "gpt":
        assert new.gpt_type == src.gpt_type and new.gpt_guid == src.gpt_guid
        check = subprocess.run(["sgdisk", "-v", str(blank)], capture_output=True, text=True)
        assert "No problems found" in check.stdout, check.stdout
    else:
        assert new.mbr_type == 0x07 and table.mbr_signature not in (None, "00000000")
    # Every stored byte of the partition is where the new partition is (the NTFS boot
    # sectors' "hidden sectors" field, where the partition starts, aside).
    patched = {0x1C, src.length_lba * 512 - 512 + 0x1C} if fs == "ntfs" else set()
    shift = (new.start_lba - src.start_lba) * 512
    with open_archive(archive) as arc:
        chunks = arc.manifest.image(number).chunks
    for c in chunks:
        want = bytearray(region_bytes(Path(source.path), c.offset, c.length))
        got = bytearray(region_bytes(Path(blank), c.offset + shift, c.length))
        for field in patched:
            at = field - (c.offset - src.start_lba * 512)
            if 0 <= at < c.length:
                want[at : at + 4] = got[at : at + 4] = b"...."
        assert got == want, f"stored bytes at source offset {c.offset} differ"
    blkid = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "TYPE", "-O", str(new.start_lba * 512), str(blank)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert blkid.stdout.strip() == fs

"""Partition tables parsed and rendered by layout.table_io against what sfdisk writes."""

from __future__ import annotations

import json
import struct
import subprocess
import threading
from pathlib import Path

import pytest

from layout.blockio import DiskReader
from layout.fsinfo import probe_filesystem, with_filesystems
from layout.models import Partition, PartitionTable
from layout.table_io import (
    ParsedTable,
    TableError,
    protective_mbr,
    read_table,
    render_ebr,
    render_gpt,
    render_mbr_entry,
    table_fingerprint,
)

MIB = 1024 * 1024


def sfdisk(image: Path, script: str) -> None:
    subprocess.run(
        ["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(image)],
        input=script,
        text=True,
        check=True,
        capture_output=True,
    )


def sfdisk_json(image: Path) -> dict:
    out = subprocess.run(["sfdisk", "-J", str(image)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["partitiontable"]


def write_gpt_copy(parsed: ParsedTable, path: Path, lba: int) -> Path:
    """A blank disk image of ``lba`` sectors holding ``parsed``'s GPT, rendered for that size."""
    image = render_gpt(parsed.table, lba)
    with path.open("wb") as f:
        f.truncate(lba * 512)
        f.write(protective_mbr(parsed.sector0, lba))
        f.write(image.primary_header)
        f.write(image.entries)
        f.seek(image.backup_entries_lba * 512)
        f.write(image.entries)
        f.write(image.backup_header)
    return path


def parse(image: Path):
    with DiskReader(image) as disk:
        return read_table(disk.read, disk.size)


@pytest.fixture
def mbr_logicals(tmp_path: Path) -> Path:
    image = tmp_path / "mbr.img"
    image.write_bytes(b"")
    with image.open("r+b") as f:
        f.truncate(64 * MIB)
    sfdisk(
        image,
        "label: dos\nlabel-id: 0x7490a9a7\n"
        "start=2048, size=20480, type=7, bootable\n"
        "start=22528, size=100000, type=5\n"
        "start=24576, size=30000, type=b\n"
        "start=57344, size=20000, type=83\n",
    )
    return image


@pytest.fixture
def gpt_disk(tmp_path: Path) -> Path:
    image = tmp_path / "gpt.img"
    with image.open("wb") as f:
        f.truncate(64 * MIB)
    sfdisk(
        image,
        "label: gpt\nlabel-id: 1B2C3D4E-0000-4000-8000-00000000ABCD\n"
        "start=2048, size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, "
        'uuid=11111111-2222-4333-8444-555555555555, name="EFI system"\n'
        "start=18432, size=40960, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, "
        'uuid=AAAAAAAA-2222-4333-8444-555555555555, name=root, attrs="LegacyBIOSBootable"\n',
    )
    return image


def test_mbr_with_logicals_matches_sfdisk(mbr_logicals: Path) -> None:
    parsed = parse(mbr_logicals)
    assert parsed is not None
    table = parsed.table
    assert table.scheme == "msdos"
    assert table.mbr_signature == "7490A9A7"
    want = sfdisk_json(mbr_logicals)["partitions"]
    got = [(p.number, p.start_lba, p.length_lba, p.mbr_type) for p in table.partitions]
    expected = [
        (int(w["node"].rsplit("mbr.img", 1)[1]), w["start"], w["size"], int(w["type"], 16))
        for w in want
    ]
    assert got == expected
    assert [p.kind for p in table.partitions] == ["primary", "extended", "logical", "logical"]
    assert "boot" in table.partition(1).flags
    # Two EBRs, each a table structure at its own sector.
    assert [lba for lba, _ in parsed.ebrs] == [22528, 57344 - 2048]
    assert (22528 * 512, 22529 * 512) in parsed.structure_extents


def test_mbr_entries_render_like_sfdisk(mbr_logicals: Path) -> None:
    parsed = parse(mbr_logicals)
    assert parsed is not None
    sector0 = parsed.sector0
    for slot in (1, 2):
        entry = render_mbr_entry(parsed.table.partition(slot))
        # Byte-equal, CHS fields included (255 heads x 63 sectors, as sfdisk writes).
        assert entry == sector0[446 + 16 * (slot - 1) : 462 + 16 * (slot - 1)]
    # The last EBR links nowhere: ours renders the same logical entry and no link.
    last_lba, last_raw = parsed.ebrs[-1]
    ours = render_ebr(parsed.table.partition(6), last_lba, None, 22528)
    assert ours[454:462] == last_raw[454:462]  # start (relative) and size
    assert ours[462:478] == bytes(16) == last_raw[462:478]
    assert ours[510:] == b"\x55\xaa"


def test_gpt_parsed_and_rendered_byte_exact(gpt_disk: Path) -> None:
    parsed = parse(gpt_disk)
    assert parsed is not None
    table = parsed.table
    assert table.scheme == "gpt"
    assert table.gpt_disk_guid == "1B2C3D4E-0000-4000-8000-00000000ABCD"
    esp, root = table.partitions
    assert (esp.start_lba, esp.length_lba, esp.gpt_name) == (2048, 16384, "EFI system")
    assert "esp" in esp.flags
    assert root.gpt_guid == "AAAAAAAA-2222-4333-8444-555555555555"
    assert root.gpt_attributes == 4 and "legacy_boot" in root.flags
    disk_lba = 64 * MIB // 512
    image = render_gpt(table, disk_lba)
    raw = gpt_disk.read_bytes()
    assert image.primary_header == raw[512:1024]
    assert image.entries == raw[1024 : 1024 + len(image.entries)]
    assert image.backup_header == raw[(disk_lba - 1) * 512 :]
    be = image.backup_entries_lba * 512
    assert image.entries == raw[be : be + len(image.entries)]
    assert protective_mbr(parsed.sector0, disk_lba) == parsed.sector0


def test_gpt_rendered_for_larger_disk_passes_sgdisk(gpt_disk: Path, tmp_path: Path) -> None:
    parsed = parse(gpt_disk)
    assert parsed is not None
    lba = 128 * MIB // 512
    big = write_gpt_copy(parsed, tmp_path / "big.img", lba)
    result = subprocess.run(["sgdisk", "-v", str(big)], capture_output=True, text=True)
    assert "No problems found" in result.stdout, result.stdout
    reparsed = parse(big)
    assert reparsed is not None
    assert reparsed.table.gpt_last_usable_lba == lba - 34
    assert [p.model_dump() for p in reparsed.table.partitions] == [
        p.model_dump() for p in parsed.table.partitions
    ]
    # The protective entry covers the new disk.
    assert struct.unpack_from("<I", reparsed.sector0, 458)[0] == lba - 1


def test_damaged_gpt_primary_falls_back_to_backup(gpt_disk: Path) -> None:
    with gpt_disk.open("r+b") as f:
        f.seek(512 + 40)
        f.write(b"\xff")
    parsed = parse(gpt_disk)
    assert parsed is not None and len(parsed.table.partitions) == 2


def test_damaged_gpt_both_headers_is_an_error(gpt_disk: Path) -> None:
    size = gpt_disk.stat().st_size
    with gpt_disk.open("r+b") as f:
        f.seek(512 + 40)
        f.write(b"\xff")
        f.seek(size - 512 + 40)
        f.write(b"\xff")
    with pytest.raises(TableError, match="both GPT headers"):
        parse(gpt_disk)


def test_looping_ebr_chain_is_an_error(mbr_logicals: Path) -> None:
    parsed = parse(mbr_logicals)
    assert parsed is not None
    last_lba = parsed.ebrs[-1][0]
    with mbr_logicals.open("r+b") as f:
        # Link the last EBR back to the first one.
        f.seek(last_lba * 512 + 462)
        f.write(bytes((0, 0, 0, 0, 5, 0, 0, 0)) + struct.pack("<II", 0, 1))
    with pytest.raises(TableError, match="loops"):
        parse(mbr_logicals)


def test_blank_and_garbage_disks_have_no_table(tmp_path: Path) -> None:
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(1 * MIB))
    assert parse(blank) is None
    assert table_fingerprint(None) == table_fingerprint(None)


def test_fingerprint_changes_with_geometry_not_filesystem(mbr_logicals: Path) -> None:
    parsed = parse(mbr_logicals)
    assert parsed is not None
    t = parsed.table
    labelled = t.model_copy(
        update={"partitions": tuple(p.model_copy(update={"label": "x"}) for p in t.partitions)}
    )
    assert table_fingerprint(labelled) == table_fingerprint(t)
    moved = PartitionTable(
        scheme="msdos",
        disk_size_lba=t.disk_size_lba,
        mbr_signature="7490A9A7",
        partitions=(Partition(number=1, start_lba=4096, length_lba=100),),
    )
    assert table_fingerprint(moved) != table_fingerprint(t)


def fat_in_partition_5(disk: Path, scratch: Path) -> None:
    fat = scratch / "fat.img"
    with fat.open("wb") as f:
        f.truncate(30000 * 512)
    subprocess.run(["mkfs.vfat", "-n", "SHARED", str(fat)], check=True, capture_output=True)
    with disk.open("r+b") as f:
        f.seek(24576 * 512)
        f.write(fat.read_bytes())


def test_filesystems_found_by_offset(mbr_logicals: Path, tmp_path: Path) -> None:
    fat_in_partition_5(mbr_logicals, tmp_path)
    parsed = parse(mbr_logicals)
    assert parsed is not None
    table = with_filesystems(parsed.table, str(mbr_logicals))
    logical = table.partition(5)
    assert (logical.filesystem, logical.label) == ("vfat", "SHARED")
    assert table.partition(6).filesystem is None
    assert probe_filesystem(str(mbr_logicals), 0, 512).type is None


def test_many_regions_are_probed_side_by_side_in_order(
    mbr_logicals: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore probes every backed-up partition's place before it writes; the blkid runs
    go side by side (each waits here until three run at once) and answers keep their order."""
    import layout.fsinfo as fsinfo

    real = fsinfo.probe_filesystem
    together = threading.Barrier(3, timeout=10)

    def meeting(path: str, offset: int, size: int) -> fsinfo.FsInfo:
        together.wait()  # BrokenBarrierError when the probes run one after another
        return real(path, offset, size)

    monkeypatch.setattr(fsinfo, "probe_filesystem", meeting)
    fat_in_partition_5(mbr_logicals, tmp_path)
    parsed = parse(mbr_logicals)
    assert parsed is not None
    ss = parsed.table.sector_size
    numbers = (6, 5, 1)
    regions = [
        (parsed.table.partition(n).start_lba * ss, parsed.table.partition(n).length_lba * ss)
        for n in numbers
    ]
    found = fsinfo.probe_filesystems(str(mbr_logicals), regions)
    assert [info.label for info in found] == [None, "SHARED", None]


def test_libparted_reads_the_tables_we_write(
    gpt_disk: Path, mbr_logicals: Path, tmp_path: Path
) -> None:
    """pyparted (libparted) is the second opinion on tables we render ourselves.

    Opened on image files only: on a block device of this kernel, libparted's
    re-read would remove partition nodes, which is why probing does not use it.
    """
    parted = pytest.importorskip("parted")
    parsed = parse(gpt_disk)
    assert parsed is not None
    big = write_gpt_copy(parsed, tmp_path / "big.img", 128 * MIB // 512)
    for path, table in ((big, parsed.table), (mbr_logicals, parse(mbr_logicals).table)):
        disk = parted.newDisk(parted.getDevice(str(path)))
        theirs = sorted((p.number, p.geometry.start, p.geometry.length) for p in disk.partitions)
        ours = sorted((p.number, p.start_lba, p.length_lba) for p in table.partitions)
        assert theirs == ours, path
        assert disk.type == ("gpt" if table.scheme == "gpt" else "msdos")

"""Backups made by other tools: refused by their signature in words a person can act on,
and raw disk images (a whole disk byte for byte) opened and restored.

Each foreign file here is just its format's signature and padding (a real ntfsclone
image where ntfsclone is installed): the message must name the tool, say restore-tui
cannot read it and what to do instead, and stand alone after ``error:``.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from archive import open_archive
from archive.base import TRACK0
from archive.errors import NotAnArchive, TruncatedArchive
from archive.foreign import identify
from archive.raw import PIECE_BYTES, RawDiskImage
from restore_tui import sample
from restore_tui.cli import main

SECTOR = 512
MIB = 1024 * 1024

needs_sample_tools = pytest.mark.skipif(
    not all(sample.have_tool(t) for t in ("sfdisk", "mkfs.ext4", "mkfs.vfat", "mkntfs")),
    reason="needs sfdisk, mkfs.ext4, mkfs.vfat and mkntfs to build sample disks",
)


def vhd_footer(disk_type: int, size: int) -> bytes:
    """A VHD footer laid out as QEMU's block/vpc.c reads it (big-endian, checksummed)."""
    footer = bytearray(512)
    footer[:8] = b"conectix"
    data_offset = 0xFFFFFFFFFFFFFFFF if disk_type == 2 else 512
    struct.pack_into(">IIQ", footer, 8, 2, 0x00010000, data_offset)
    footer[28:32] = b"win "
    struct.pack_into(">QQ", footer, 40, size, size)
    struct.pack_into(">I", footer, 60, disk_type)
    struct.pack_into(">I", footer, 64, ~sum(footer) & 0xFFFFFFFF)
    return bytes(footer)


def dynamic_vhd(disk_type: int) -> bytes:
    footer = vhd_footer(disk_type, 64 * MIB)
    return footer + b"cxsparse" + bytes(1016) + footer


PAD = bytes(8192)

# (file name, content, words the message must hold)
FOREIGN: list[tuple[str, bytes, tuple[str, ...]]] = [
    (
        "Full C Drive.tib",
        b"\xb4\x6e\x68\x44" + PAD,
        ("is an Acronis True Image backup", "rescue media", ".vhdx", "qemu-img convert"),
    ),
    ("Disk_full_b1_s1_v1.tib", b"\xce\x24\xb9\xa2" + PAD, ("is an Acronis True Image backup",)),
    ("acronis-backup.bin", b"\xb4\x6e\x68\x44" + PAD, ("is an Acronis True Image backup",)),
    ("Full C Drive.tibx", os.urandom(8192), ("looks like an Acronis backup", ".tibx", "rescue")),
    (
        "4A1B-00-00.mrimg",
        os.urandom(8192) + struct.pack("<Q", 4096) + b"MACRIUM_FILE",
        ("is a Macrium Reflect image (Reflect X)", "rescue media", "img_to_vhdx"),
    ),
    ("Backup-00-00.mrimg", os.urandom(8192), ("looks like a Macrium Reflect image", "rescue")),
    (
        "Windows7.vhd",
        dynamic_vhd(3),
        ("is a Windows virtual disk (.vhd)", "System Image Recovery", "qemu-img convert"),
    ),
    ("child.vhd", dynamic_vhd(4), ("differencing", "parent", "System Image Recovery")),
    (
        "empty-fixed.vhd",
        bytes(MIB) + vhd_footer(2, MIB),
        ("fixed size", "no partition table", "System Image Recovery"),
    ),
    (
        "{4D2C-11}.vhdx",
        b"vhdxfile" + PAD,
        ("is a Windows virtual disk (.vhdx)", "System Image Recovery", "WindowsImageBackup"),
    ),
    (
        "sda1.ntfs-img",
        b"\0ntfsclone-image\x0a\x01" + PAD,
        ("is an ntfsclone image", "ntfsclone --restore-image --overwrite /dev/PARTITION"),
    ),
    (
        "sda1.ntfs-img.gz",
        gzip.compress(b"\0ntfsclone-image\x0a\x01" + PAD),
        ("compressed with gzip", "gunzip -c sda1.ntfs-img.gz | ntfsclone --restore-image"),
    ),
    ("hda1.000", b"PaRtImAgE-VoLuMe" + PAD, ("is a partimage image", "partimage restore")),
    (
        "hda1.partimg.gz.000",
        gzip.compress(b"PaRtImAgE-VoLuMe" + PAD),
        ("is a partimage image", "partimage restore"),
    ),
    (
        "vm.qcow2",
        b"QFI\xfb\x00\x00\x00\x03" + PAD,
        ("is a QEMU virtual disk (qcow2)", "qemu-img convert -O raw vm.qcow2 disk.img"),
    ),
    (
        "vm.vmdk",
        b"KDMV\x01\x00\x00\x00" + PAD,
        ("is a VMware virtual disk", "qemu-img convert -O raw vm.vmdk disk.img"),
    ),
    (
        "flat.vmdk",
        b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        b'createType="monolithicFlat"\n\n# Extent description\nRW 131072 FLAT "disk-flat.vmdk" 0\n',
        ("only describes a VMware virtual disk", "choose disk-flat.vmdk here instead"),
    ),
    (
        "split.vmdk",
        b'# Disk DescriptorFile\nversion=1\ncreateType="twoGbMaxExtentSparse"\n\n'
        b'RW 4192256 SPARSE "split-s001.vmdk"\nRW 4192256 SPARSE "split-s002.vmdk"\n',
        ("split-s001.vmdk, split-s002.vmdk", "qemu-img convert"),
    ),
    ("old.gho", os.urandom(8192), ("looks like a Norton Ghost backup", "rescue media")),
]


@pytest.mark.parametrize(("name", "content", "words"), FOREIGN, ids=[f[0] for f in FOREIGN])
def test_foreign_backup_is_refused_in_words(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: bytes,
    words: tuple[str, ...],
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["inspect", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"error: {name} ")
    message = captured.err.removeprefix("error: ").strip()
    for word in words:
        assert word in message, message
    assert "cannot read" in message or "choose" in message
    # It stands alone: not the native reader's words, and a few lines on a screen.
    assert "archive marker" not in message
    assert len(message) < 700, len(message)
    with pytest.raises(NotAnArchive):
        open_archive(path)


def test_signature_wins_over_the_name(tmp_path: Path) -> None:
    renamed = tmp_path / "backup.img"
    renamed.write_bytes(b"QFI\xfb\x00\x00\x00\x02" + PAD)
    finding = identify(renamed)
    assert finding is not None and finding.kind == "qcow" and finding.confirmed
    # A name alone is only a hint, and the message says so.
    named = tmp_path / "C.tib"
    named.write_bytes(os.urandom(4096))
    finding = identify(named)
    assert finding is not None and finding.kind == "acronis-tib" and not finding.confirmed


@pytest.mark.skipif(not sample.have_tool("ntfsclone"), reason="needs ntfsclone and mkntfs")
def test_real_ntfsclone_image_and_single_partition_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    volume = tmp_path / "sda2.img"
    with volume.open("wb") as f:
        f.truncate(16 * MIB)
    mkntfs = sample.find_tool("mkntfs")
    ntfsclone = sample.find_tool("ntfsclone")
    assert mkntfs and ntfsclone
    subprocess.run([mkntfs, "-F", "-q", "-f", str(volume)], check=True, capture_output=True)
    image = tmp_path / "sda2.ntfs-img"
    subprocess.run(
        [ntfsclone, "-q", "--save-image", "-o", str(image), str(volume)],
        check=True,
        capture_output=True,
    )
    assert main(["inspect", str(image)]) == 1
    assert "is an ntfsclone image of one NTFS partition" in capsys.readouterr().err
    # The partition copied with dd: a filesystem where a partition table should be.
    assert main(["inspect", str(volume)]) == 1
    err = capsys.readouterr().err
    assert "NTFS filesystem" in err and "single partition" in err
    assert "not a restore-tui archive" in err


def test_unknown_files_say_what_restore_tui_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 64)
    assert main(["inspect", str(junk)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: junk.bin is not a restore-tui archive")
    assert "raw copies of a whole disk" in err
    zeros = tmp_path / "wiped.img"
    zeros.write_bytes(bytes(MIB))
    with pytest.raises(NotAnArchive, match="all zeros"):
        open_archive(zeros)
    packed = tmp_path / "disk.img.gz"
    packed.write_bytes(gzip.compress(b"\xfa" * 4096))
    with pytest.raises(NotAnArchive, match=r"gunzip -k disk.img.gz"):
        open_archive(packed)


def test_windows_image_backup_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "WindowsImageBackup" / "OLDPC" / "Backup 2012-03-10 091502"
    folder.mkdir(parents=True)
    (folder / "{4D2C-11}.vhd").write_bytes(dynamic_vhd(3))
    for chosen in (tmp_path, tmp_path / "WindowsImageBackup", folder):
        with pytest.raises(NotAnArchive, match="System Image Recovery"):
            open_archive(chosen)


# -- raw disk images --------------------------------------------------------------------


def read(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(length)


BUILDERS: list[Callable[..., sample.SampleDisk]] = [
    sample.build_windows_mbr,
    sample.build_gpt_linux,
    sample.build_mbr_with_logicals,
]


@needs_sample_tools
@pytest.mark.parametrize("builder", BUILDERS, ids=lambda b: b.__name__)
def test_raw_disk_image_opens_and_restores_byte_for_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], builder: Callable[..., sample.SampleDisk]
) -> None:
    disk = builder(tmp_path / "disk.img", 64)
    with open_archive(disk.path) as arc:
        assert isinstance(arc, RawDiskImage)
        m = arc.manifest
        assert m.source.identity.size_bytes == disk.size_bytes
        assert {p.number for p in m.table.partitions} == {p.number for p in disk.partitions}
        assert m.boot.boot_code == read(disk.path, 0, 440).hex()
        assert [e.lba for e in m.boot.ebrs] == list(disk.ebr_lbas)
        # Nothing checks a raw copy: every area is listed as not covered, and verify
        # reads every byte a restore writes without finding damage.
        assert {u.reason for u in arc.unchecked()} == {"raw-copy"}
        covered = {u.partition for u in arc.unchecked() if u.area == "partition"}
        assert covered == {p.number for p in disk.data_partitions}
        report = arc.verify()
        assert report.ok and report.checked_bytes == m.stored_bytes()
    assert main(["inspect", str(disk.path)]) == 0
    out = capsys.readouterr().out
    assert "Disk image file" in out
    for p in disk.data_partitions:
        assert p.label is not None and p.label in out

    target = sample.build_blank(tmp_path / "target.img", 64)
    assert main(["restore", str(disk.path), "--target", str(target), "--yes"]) == 0
    first = min(p.start_lba for p in disk.partitions)
    assert read(target, 0, first * SECTOR) == read(disk.path, 0, first * SECTOR)
    for p in disk.data_partitions:
        assert read(target, p.offset, p.size) == read(disk.path, p.offset, p.size), p.number
    for lba in disk.ebr_lbas:
        assert read(target, lba * SECTOR, SECTOR) == read(disk.path, lba * SECTOR, SECTOR)


@needs_sample_tools
def test_raw_identity_is_its_content(tmp_path: Path) -> None:
    disk = sample.build_windows_mbr(tmp_path / "disk.img", 64)
    with open_archive(disk.path) as arc:
        before = arc.identity()
    elsewhere = tmp_path / "usb" / "disk.img"
    elsewhere.parent.mkdir()
    shutil.copyfile(disk.path, elsewhere)
    os.utime(elsewhere, (1_000_000_000, 1_000_000_000))
    with open_archive(elsewhere) as copy:
        assert copy.manifest.created != open_archive(disk.path).manifest.created
        assert copy.identity() == before
    # One flipped byte in the first MiB (track 0, before the first partition): another.
    with elsewhere.open("r+b") as f:
        f.seek(700 * SECTOR)
        byte = f.read(1)
        f.seek(700 * SECTOR)
        f.write(bytes([byte[0] ^ 0x01]))
    with open_archive(elsewhere) as changed:
        assert changed.identity() != before


@needs_sample_tools
def test_raw_pieces_are_bounded_and_zero_runs_are_zero_pieces(tmp_path: Path) -> None:
    disk = sample.build_gpt_linux(tmp_path / "disk.img", 64)  # free space: random garbage
    p3 = disk.partition(3)
    with disk.path.open("r+b") as f:  # a run of zeros written out (not a hole)
        f.seek(p3.offset + PIECE_BYTES)
        f.write(bytes(PIECE_BYTES))
    with open_archive(disk.path) as arc:
        areas = [TRACK0, *(p.number for p in arc.manifest.partitions)]
        tracemalloc.start()
        try:
            largest = 0
            zero = data = 0
            for area in areas:
                for piece in arc.pieces(area):
                    largest = max(largest, piece.length)
                    if piece.data is None:
                        zero += 1
                    else:
                        assert len(piece.data) == piece.length
                        data += 1
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert largest <= PIECE_BYTES
        assert zero and data
        assert peak < 3 * PIECE_BYTES, peak
        # Resume: pieces from a byte inside the area start at the piece holding it.
        p2 = arc.manifest.table.partition(2)
        start = p2.start_lba * SECTOR + PIECE_BYTES + 12345
        resumed = list(arc.pieces(2, start))
        assert resumed[0].offset <= start < resumed[0].stop
        assert resumed[-1].stop == p2.stop_lba * SECTOR
    # The holes of a sparse image are zero pieces too, read from nowhere.
    sparse = sample.build_gpt_linux(tmp_path / "sparse.img", 64, garbage=False)
    with open_archive(sparse.path) as arc:
        pieces = [piece for n in (1, 2, 3) for piece in arc.pieces(n)]
    assert any(p.data is None for p in pieces) and any(p.data is not None for p in pieces)


@needs_sample_tools
def test_fixed_size_vhd_is_a_raw_disk_with_a_footer(tmp_path: Path) -> None:
    disk = sample.build_windows_mbr(tmp_path / "disk.img", 64)
    vhd = tmp_path / "Windows.vhd"
    shutil.copyfile(disk.path, vhd)
    with vhd.open("ab") as f:
        f.write(vhd_footer(2, disk.size_bytes))
    with open_archive(vhd) as arc:
        assert isinstance(arc, RawDiskImage)
        assert arc.format_name == "fixed-size VHD"
        assert arc.manifest.source.identity.size_bytes == disk.size_bytes
    target = sample.build_blank(tmp_path / "target.img", 64)
    assert main(["restore", str(vhd), "--target", str(target), "--yes"]) == 0
    for p in disk.data_partitions:
        assert read(target, p.offset, p.size) == read(disk.path, p.offset, p.size)


@needs_sample_tools
def test_cut_raw_image_is_refused_and_one_cut_later_stops(tmp_path: Path) -> None:
    disk = sample.build_gpt_linux(tmp_path / "disk.img", 64)
    cut = tmp_path / "cut.img"
    cut.write_bytes(read(disk.path, 0, 20 * MIB))
    with pytest.raises(NotAnArchive, match="starts like a copy of a whole disk, but") as info:
        open_archive(cut)
    assert "inside partition 2" in str(info.value) and "cut short" in str(info.value)
    mbr = sample.build_windows_mbr(tmp_path / "mbr.img", 64)
    with open_archive(mbr.path) as arc:
        os.truncate(mbr.path, 40 * MIB)  # cut short after it was opened
        with pytest.raises(TruncatedArchive, match="cut short"):
            list(arc.pieces(2))
        report = arc.verify()
    assert [d.partition for d in report.damage] == [2]


@needs_sample_tools
def test_gpt_copy_that_stops_after_its_last_partition_is_restorable(tmp_path: Path) -> None:
    """`dd ... count=` up to the last partition's end: the free tail and the backup GPT
    are missing, which a restore does not need (it writes the GPT for the target)."""
    disk = sample.build_gpt_linux(tmp_path / "disk.img", 64)
    last = max(p.stop_lba for p in disk.partitions) * SECTOR
    trimmed = tmp_path / "trimmed.img"
    trimmed.write_bytes(read(disk.path, 0, last))
    with open_archive(trimmed) as arc:
        assert isinstance(arc, RawDiskImage)
        assert arc.manifest.source.identity.size_bytes == disk.size_bytes
        assert arc.verify().ok
    target = sample.build_blank(tmp_path / "target.img", 64)
    assert main(["restore", str(trimmed), "--target", str(target), "--yes"]) == 0
    for p in disk.data_partitions:
        assert read(target, p.offset, p.size) == read(disk.path, p.offset, p.size)

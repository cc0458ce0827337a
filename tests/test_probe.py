"""Probing image files and a sysfs tree without udev: tables, filesystems, identity, free space.

Images are built with sfdisk and real mkfs; the no-udev test reads a small
sysfs-shaped directory whose disk node is an image file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import ClassVar

import pytest

from layout.blockio import DiskReader
from layout.probe import (
    CombinedProbe,
    ImageProbe,
    ProbeError,
    RecordedProbe,
    SystemProbe,
    disks_holding,
    human_size,
)
from layout.table_io import read_table, table_fingerprint
from restore_tui.cli import main

MiB = 1024 * 1024
needs_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("sfdisk", "mkfs.ext4", "mkfs.vfat", "blkid")),
    reason="needs sfdisk, mkfs.ext4, mkfs.vfat and blkid",
)


def make_image(path: Path, size_mib: int, script: str) -> Path:
    with path.open("wb") as f:
        f.truncate(size_mib * MiB)
    subprocess.run(["sfdisk", "-q", str(path)], input=script, text=True, check=True)
    return path


def mkfs_ext4(image: Path, start_lba: int, size_lba: int, label: str) -> None:
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-L", label, "-E", f"offset={start_lba * 512}",
         str(image), f"{size_lba // 2}k"],
        check=True,
    )


def mkfs_vfat(image: Path, start_lba: int, size_lba: int, label: str) -> None:
    # mkfs.vfat has no offset option: build the filesystem in a file and copy it in.
    part = image.with_suffix(".part")
    with part.open("wb") as f:
        f.truncate(size_lba * 512)
    subprocess.run(["mkfs.vfat", "-n", label, str(part)], check=True, capture_output=True)
    with image.open("r+b") as out:
        out.seek(start_lba * 512)
        out.write(part.read_bytes())
    part.unlink()


@pytest.fixture
def mbr_image(tmp_path: Path) -> Path:
    image = make_image(
        tmp_path / "windows.img", 64,
        "label: dos\nlabel-id: 0x7490a9a7\n"
        "start=2048,size=16384,type=c,bootable\n"
        "start=18432,size=40960,type=83\n"
        "start=59392,size=65536,type=5\n"
        "start=61440,size=20480,type=83\n"
        "start=83968,size=20480,type=83\n",
    )
    mkfs_vfat(image, 2048, 16384, "BOOT")
    mkfs_ext4(image, 18432, 40960, "DATA")
    mkfs_ext4(image, 83968, 20480, "LOGICAL6")
    return image


@pytest.fixture
def gpt_image(tmp_path: Path) -> Path:
    image = make_image(
        tmp_path / "linux.img", 48,
        "label: gpt\nlabel-id: 7C2D5B9E-3A41-4F6B-9E0D-2B8C6A1F4E33\n"
        "start=2048,size=8192,type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B,"
        "uuid=4B0E7C1A-9F2D-4E8B-A3C6-1D5F8E2B7A90,name=EFI\n"
        "start=10240,size=40960,type=0FC63DAF-8483-4772-8E79-3D69D8477DE4,name=root\n",
    )
    mkfs_vfat(image, 2048, 8192, "ESP")
    mkfs_ext4(image, 10240, 40960, "root")
    return image


@needs_tools
def test_image_probe_mbr_with_logicals(mbr_image: Path) -> None:
    disk = ImageProbe().disk(str(mbr_image))
    assert disk.device == str(mbr_image)
    assert disk.identity.bus == "image" and disk.identity.model == "windows.img"
    assert disk.identity.size_bytes == 64 * MiB
    assert disk.table is not None and disk.table.mbr_signature == "7490A9A7"
    facts = {p.number: (p.kind, p.filesystem, p.label) for p in disk.table.partitions}
    assert facts == {
        1: ("primary", "vfat", "BOOT"),
        2: ("primary", "ext4", "DATA"),
        3: ("extended", None, None),
        5: ("logical", None, None),
        6: ("logical", "ext4", "LOGICAL6"),
    }
    assert all(p.fs_uuid for p in disk.table.partitions if p.filesystem)
    # The fingerprint is table_io's, of the table as read from the bytes.
    with DiskReader(mbr_image) as reader:
        parsed = read_table(reader.read, reader.size, 512)
    assert disk.table_fingerprint == table_fingerprint(parsed)
    # Free: inside the extended container after logical 6, and after the container.
    regions = [(r.start_lba, r.end_lba, r.inside_extended) for r in disk.free]
    assert regions == [(106496, 124927, True), (124928, 131071, False)]
    assert disk.in_use == () and not disk.read_only and disk.missing_facts == ()


@needs_tools
def test_image_probe_gpt(gpt_image: Path) -> None:
    disk = ImageProbe().disk(str(gpt_image))
    table = disk.table
    assert table is not None and table.scheme == "gpt"
    assert table.gpt_disk_guid == "7C2D5B9E-3A41-4F6B-9E0D-2B8C6A1F4E33"
    esp, root = table.partitions
    assert esp.gpt_guid == "4B0E7C1A-9F2D-4E8B-A3C6-1D5F8E2B7A90"
    assert (esp.filesystem, esp.label, esp.gpt_name) == ("vfat", "ESP", "EFI")
    assert (root.filesystem, root.label) == ("ext4", "root")
    (free,) = disk.free
    assert free.start_lba == 51200
    assert free.end_lba == table.gpt_last_usable_lba


def test_image_probe_blank_and_missing(tmp_path: Path) -> None:
    blank = tmp_path / "blank.img"
    with blank.open("wb") as f:
        f.truncate(32 * MiB)
    disk = ImageProbe().disk(str(blank))
    assert disk.table is None and disk.table_problem is None
    assert disk.table_fingerprint == table_fingerprint(None)
    (region,) = disk.free
    assert region.start_lba == 2048
    with pytest.raises(ProbeError, match="does not exist"):
        ImageProbe().disk(str(tmp_path / "nope.img"))
    with pytest.raises(ProbeError, match="not a disk image file"):
        ImageProbe().disk(str(tmp_path))


def test_damaged_table_is_reported_not_guessed(tmp_path: Path) -> None:
    image = tmp_path / "bad.img"
    with image.open("wb") as f:
        f.truncate(8 * MiB)
    sector = bytearray(512)
    # One primary entry running far past the end of an 8 MiB disk.
    sector[446 + 4] = 0x83
    sector[446 + 8 : 446 + 16] = (2048).to_bytes(4, "little") + (10**6).to_bytes(4, "little")
    sector[510:512] = b"\x55\xaa"
    with image.open("r+b") as f:
        f.write(sector)
    disk = ImageProbe().disk(str(image))
    assert disk.table is None
    assert disk.table_problem is not None and "past the disk's last sector" in disk.table_problem
    assert disk.free == ()  # nothing is offered on a disk we cannot read
    assert disk.table_fingerprint != table_fingerprint(None)


def test_human_size() -> None:
    assert human_size(512) == "512 bytes"
    assert human_size(64 * MiB) == "64.0 MiB"
    assert human_size(1000204886016) == "931.5 GiB"


# --- sysfs without udev ---------------------------------------------------------


def fake_usb_disk(root: Path, disk_image: Path) -> tuple[Path, Path]:
    """A sysfs tree with one USB disk "sdz" (and an empty loop, zram, an optical drive)."""
    sys_block = root / "sys" / "block"
    dev_dir = root / "dev"
    sys_block.mkdir(parents=True)
    dev_dir.mkdir()
    real = root / "sys" / "devices" / "pci0000:00" / "0000:00:14.0" / "usb2" / "2-1" / "block"
    sdz = real / "sdz"
    (sdz / "queue").mkdir(parents=True)
    (sdz / "device").mkdir()
    (sdz / "holders").mkdir()
    size = disk_image.stat().st_size
    (sdz / "size").write_text(f"{size // 512}\n")
    (sdz / "queue" / "logical_block_size").write_text("512\n")
    (sdz / "queue" / "physical_block_size").write_text("4096\n")
    (sdz / "ro").write_text("0\n")
    (sdz / "removable").write_text("0\n")
    (sdz / "dev").write_text("8:400\n")
    (sdz / "device" / "model").write_text("Expansion HDD   \n")
    (sdz / "device" / "vendor").write_text("Seagate \n")
    serial = b"NAAB1234"
    (sdz / "device" / "vpd_pg80").write_bytes(bytes([0, 0x80, 0, len(serial)]) + serial)
    (sys_block / "sdz").symlink_to(sdz)
    for name, files in {
        "loop7": {"size": "0"},  # no backing file: left out
        "zram0": {"size": "1024"},
        "sr0": {"size": "2048"},
        "md0": {"size": "4096"},
    }.items():
        (sys_block / name).mkdir()
        for fname, text in files.items():
            (sys_block / name / fname).write_text(text)
    shutil.copyfile(disk_image, dev_dir / "sdz")
    return sys_block, dev_dir


@needs_tools
def test_no_udev_fallback_reads_sysfs_and_says_what_is_missing(
    tmp_path: Path, mbr_image: Path
) -> None:
    sys_block, dev_dir = fake_usb_disk(tmp_path / "machine", mbr_image)
    probe = SystemProbe(use_udev=False, sys_block=sys_block, dev_dir=dev_dir)
    assert probe.disk_names() == ["sdz"]
    (disk,) = probe.disks()
    ident = disk.identity
    # Model, vendor and the VPD serial come from sysfs; the bus from the device path.
    assert (ident.model, ident.vendor, ident.serial, ident.bus) == (
        "Expansion HDD", "Seagate", "NAAB1234", "usb"
    )
    assert ident.physical_sector_size == 4096
    assert disk.removable  # USB disks are removable for the user, whatever sysfs says
    assert disk.table is not None and disk.table.mbr_signature == "7490A9A7"
    assert disk.headline == "Seagate Expansion HDD · 64.0 MiB · serial NAAB1234 · USB"
    assert disk.missing_facts == ()

    # Without a VPD page and a model, the output says what is unknown and why.
    (sys_block / "sdz" / "device" / "vpd_pg80").unlink()
    (sys_block / "sdz" / "device" / "model").unlink()
    (disk,) = probe.disks()
    assert disk.identity.serial is None
    assert "serial unknown: udev is not in use" in disk.missing_facts
    assert "model unknown: udev is not in use" in disk.missing_facts
    assert disk.headline.startswith("Unknown disk · 64.0 MiB · no serial number · USB")


def test_disks_holding_follows_mount_sources(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.write_text("x")
    held = disks_holding(str(f))
    # tmp may be tmpfs (no disk) or on a disk; either way every answer is a whole disk.
    for device in held:
        name = device.removeprefix("/dev/")
        assert not (Path("/sys/block") / name / "partition").exists()
        assert (Path("/sys/block") / name).exists()


# --- the command line ---------------------------------------------------------------


@needs_tools
def test_disks_command_text_and_json(
    mbr_image: Path, gpt_image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["disks", "--image", str(mbr_image), "--image", str(gpt_image)]) == 0
    out = capsys.readouterr().out
    block = out[out.index("windows.img · 64.0 MiB · image file"):]
    lines = block.splitlines()
    assert lines[0] == "windows.img · 64.0 MiB · image file"
    assert lines[1] == f"  {mbr_image} (a disk image file)"
    assert lines[2] == "  MBR partition table, disk signature 7490A9A7"
    assert '    2    20.0 MiB  ext4      "DATA"' in lines
    assert '    6    10.0 MiB  ext4      "LOGICAL6"  (logical)' in lines
    assert "          9.0 MiB  unallocated inside the extended partition" in lines
    assert "linux.img · 48.0 MiB · image file" in out
    assert "GPT partition table, disk GUID 7C2D5B9E-3A41-4F6B-9E0D-2B8C6A1F4E33" in out

    assert main(["disks", "--json", "--image", str(gpt_image)]) == 0
    listed = json.loads(capsys.readouterr().out)
    (ours,) = [d for d in listed if d["device"] == str(gpt_image)]
    assert ours["identity"]["bus"] == "image"
    assert ours["table"]["partitions"][1]["label"] == "root"
    # Real /dev names come with the note that they can change between boots.
    for d in listed:
        if d["device"].startswith("/dev/"):
            assert d["identity"]["bus"] != "image"


def test_combined_probe_adds_images_to_a_machine(tmp_path: Path) -> None:
    machine = RecordedProbe(Path(__file__).parent / "data" / "machines" / "forum-laptop.json")
    blank = tmp_path / "blank.img"
    with blank.open("wb") as f:
        f.truncate(16 * MiB)
    probe = CombinedProbe(machine, [str(blank)])
    devices = [d.device for d in probe.disks()]
    assert devices == ["/dev/sdb", "/dev/sdc", "/dev/sda", str(blank)]
    assert probe.disk(str(blank)).identity.bus == "image"
    assert probe.disk("/dev/sdb").identity.serial == "WD-WCC6Y1234567"
    with pytest.raises(ProbeError, match="not one of the recorded disks"):
        probe.disk("/dev/sdq")


@needs_tools
def test_holders_are_named_in_plain_words(tmp_path: Path, mbr_image: Path) -> None:
    # This kernel has no device-mapper, so the stack is described in a sysfs tree:
    # partition 1 under an LVM volume, the whole disk a RAID member.
    sys_block, dev_dir = fake_usb_disk(tmp_path / "machine", mbr_image)
    sdz = sys_block / "sdz"
    part = sdz / "sdz1"
    (part / "holders").mkdir(parents=True)
    (part / "partition").write_text("1\n")
    (part / "dev").write_text("8:401\n")
    (part / "holders" / "dm-3").mkdir()
    (sys_block / "dm-3" / "dm").mkdir(parents=True)
    (sys_block / "dm-3" / "dm" / "name").write_text("vg-home\n")
    (sys_block / "dm-3" / "dev").write_text("253:3\n")
    (sys_block / "dm-3" / "holders").mkdir()
    (sdz / "holders" / "md127").mkdir()
    (sys_block / "md127" / "holders").mkdir(parents=True)
    probe = SystemProbe(use_udev=False, sys_block=sys_block, dev_dir=dev_dir)
    (disk,) = probe.disks()
    assert disk.in_use == (
        "the whole disk is used by md127 (RAID/LVM/device-mapper)",
        "partition 1 is used by dm-3 (vg-home) (RAID/LVM/device-mapper)",
    )


class RecordedUdev(SystemProbe):
    """SystemProbe with udev's answer for a SATA disk, as `udevadm info` printed it."""

    PROPS: ClassVar[dict[str, str]] = {
        "ID_BUS": "ata",
        "ID_MODEL": "WDC_WD10EZEX-08WN4A0",
        "ID_MODEL_ENC": "WDC\\x20WD10EZEX-08WN4A0\\x20\\x20\\x20\\x20",
        "ID_SERIAL": "WDC_WD10EZEX-08WN4A0_WD-WCC6Y1234567",
        "ID_SERIAL_SHORT": "WD-WCC6Y1234567",
        "ID_WWN": "0x50014ee2b5f0c1a2",
        "ID_WWN_WITH_EXTENSION": "0x50014ee2b5f0c1a2",
    }

    def _udev_properties(self, name: str) -> tuple[dict[str, str], str | None]:
        return dict(self.PROPS), None


@needs_tools
def test_udev_properties_become_the_identity(tmp_path: Path, mbr_image: Path) -> None:
    sys_block, dev_dir = fake_usb_disk(tmp_path / "machine", mbr_image)
    (sys_block / "sdz" / "device" / "vpd_pg80").unlink()
    # Linux reports "ATA" as the vendor of every SATA disk.
    (sys_block / "sdz" / "device" / "vendor").write_text("ATA     \n")
    (disk,) = RecordedUdev(sys_block=sys_block, dev_dir=dev_dir).disks()
    ident = disk.identity
    assert ident.model == "WDC WD10EZEX-08WN4A0"  # decoded, trailing spaces dropped
    assert ident.serial == "WD-WCC6Y1234567"
    assert ident.wwn == "0x50014ee2b5f0c1a2"
    assert ident.bus == "sata"  # udev says "ata"; people say SATA
    assert disk.missing_facts == ()
    assert disk.headline == "WDC WD10EZEX-08WN4A0 · 64.0 MiB · serial WD-WCC6Y1234567 · SATA"

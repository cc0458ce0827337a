"""Finding disks and what they are: real disks (udev + sysfs), image files, recorded machines.

Every probe returns :class:`ProbedDisk` values behind one :class:`Probe` interface,
so matching, planning and the wizard never care where the facts came from.
Nothing here touches hardware at import time; partition tables are parsed from
the whole-disk device by ``layout.table_io`` (libparted is never asked to open a
disk: on this kernel that re-reads the table and removes partition nodes).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from pydantic import TypeAdapter

from layout.blockio import DiskReader
from layout.fsinfo import with_filesystems
from layout.gaps import free_regions
from layout.models import DiskIdentity, FreeRegion, Frozen, PartitionTable, SectorSize
from layout.table_io import ParsedTable, TableError, read_table, table_fingerprint
from layout.units import human_size

SYS_BLOCK = Path("/sys/block")
SYS_DEV_BLOCK = Path("/sys/dev/block")
MOUNTINFO = Path("/proc/self/mountinfo")
SWAPS = Path("/proc/swaps")
UDEV_CONTROL = Path("/run/udev/control")

# Whole disks people restore onto. Partitions, md/dm, zram, ram, optical (sr)
# and mmc boot areas (mmcblk0boot0) do not match these names.
WHOLE_DISK_NAME = re.compile(
    r"^(sd[a-z]+|hd[a-z]+|vd[a-z]+|xvd[a-z]+|nvme\d+n\d+|mmcblk\d+|loop\d+)$"
)

BUS_NAMES = {
    "sata": "SATA",
    "ata": "ATA",
    "scsi": "SCSI",
    "usb": "USB",
    "nvme": "NVMe",
    "virtio": "virtual disk (virtio)",
    "xen": "virtual disk (Xen)",
    "mmc": "SD/MMC card",
    "ieee1394": "FireWire",
    "loop": "loop device",
    "image": "image file",
}


class ProbeError(Exception):
    """A disk could not be found or read; the message says what to do."""


class ProbedDisk(Frozen):
    """Everything restore-tui knows about one disk (or disk image) right now."""

    device: str  # the /dev path or the image file path: can change between boots
    identity: DiskIdentity
    table: PartitionTable | None  # filesystem type/label/UUID filled where found
    table_fingerprint: str
    table_problem: str | None = None  # the table is damaged: what is wrong with it
    free: tuple[FreeRegion, ...] = ()
    read_only: bool = False
    removable: bool = False
    in_use: tuple[str, ...] = ()  # plain-language: "partition 2 is mounted at /media/usb"
    mounts: tuple[str, ...] = ()  # mount points of anything on the disk
    backing_file: str | None = None  # loop devices: the file behind it
    missing_facts: tuple[str, ...] = ()  # "serial unknown: udev is not running"
    # MBR: sectors of the extended boot records in chain order (a new logical
    # partition is linked behind the last one); None when the chain was not read.
    ebr_lbas: tuple[int, ...] | None = None

    @property
    def name(self) -> str:
        """The disk's one name in words, everywhere: "model · size · serial"."""
        return disk_words(self.identity, self.backing_file)

    @property
    def headline(self) -> str:
        """"model · size · serial · bus": how a person recognises the disk."""
        return disk_headline(self.identity, self.name)

    @property
    def device_note(self) -> str:
        if self.identity.bus == "image":
            return f"{self.device} (a disk image file)"
        return f"{self.device} (this name can change between boots)"


def model_words(identity: DiskIdentity, backing_file: str | None = None) -> str:
    """What a disk is called: its model (with the maker where Linux knows a useful one),
    the file behind a loop device or image, or what kind of disk it is."""
    if identity.model:
        # Linux names every SATA disk's vendor "ATA": that says nothing to a person.
        vendor = identity.vendor if identity.vendor not in (None, "ATA") else None
        if vendor and vendor not in identity.model:
            return f"{vendor} {identity.model}"
        return identity.model
    if backing_file:
        return Path(backing_file).name
    return {"image": "Disk image", "loop": "Loop device"}.get(identity.bus or "", "Unknown disk")


def disk_words(identity: DiskIdentity, backing_file: str | None = None) -> str:
    """"model · size · serial": one disk, one name, on every screen and in every message."""
    parts = [model_words(identity, backing_file), human_size(identity.size_bytes)]
    if identity.serial:
        parts.append(f"serial {identity.serial}")
    return " · ".join(parts)


def disk_headline(identity: DiskIdentity, name: str) -> str:
    """A disk's name (``disk_words``) with how it is attached, and the missing serial
    said where a real disk would have one."""
    no_serial = identity.serial is None and identity.bus not in ("loop", "image")
    return f"{name}{' · no serial number' if no_serial else ''} · {bus_name(identity.bus)}"


def bus_name(bus: str | None) -> str:
    if bus is None:
        return "connection unknown"
    return BUS_NAMES.get(bus, bus)


class Probe(Protocol):
    """Where disks come from: the running system, image files, or a recording."""

    def disks(self) -> list[ProbedDisk]: ...

    def disk(self, device: str) -> ProbedDisk: ...

    def disk_holding(self, path: str) -> str | None: ...


# ---------------------------------------------------------------------------
# Small readers of /proc and /sys


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read_text(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _unescape_mount(text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


@dataclass(frozen=True)
class MountEntry:
    devno: tuple[int, int]
    mount_point: str
    source: str
    fstype: str


def read_mounts(path: Path = MOUNTINFO) -> list[MountEntry]:
    entries: list[MountEntry] = []
    text = _read_text(path) or ""
    for line in text.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        after = line.split(" - ", 1)[1].split()
        try:
            major, minor = (int(x) for x in fields[2].split(":"))
        except ValueError:
            continue
        entries.append(
            MountEntry(
                devno=(major, minor),
                mount_point=_unescape_mount(fields[4]),
                fstype=after[0] if after else "",
                source=_unescape_mount(after[1]) if len(after) > 1 else "",
            )
        )
    return entries


def read_swap_devnos(path: Path = SWAPS) -> set[tuple[int, int]]:
    """Device numbers of block devices in use as swap (swap files live on mounted filesystems)."""
    devnos: set[tuple[int, int]] = set()
    text = _read_text(path) or ""
    for line in text.splitlines()[1:]:
        fields = line.split()
        if not fields:
            continue
        try:
            st = os.stat(_unescape_mount(fields[0]))
        except OSError:
            continue
        if stat.S_ISBLK(st.st_mode):
            devnos.add((os.major(st.st_rdev), os.minor(st.st_rdev)))
    return devnos


def _devno(text: str | None) -> tuple[int, int] | None:
    if not text or ":" not in text:
        return None
    major, minor = text.split(":", 1)
    try:
        return int(major), int(minor)
    except ValueError:
        return None


def loop_backing_file(name: str, sys_block: Path = SYS_BLOCK) -> str | None:
    text = _read_text(sys_block / name / "loop" / "backing_file")
    if not text:
        return None
    return text.removesuffix(" (deleted)")


@dataclass(frozen=True)
class SysPartition:
    name: str
    number: int
    devno: tuple[int, int] | None


def sys_partitions(name: str, sys_block: Path = SYS_BLOCK) -> list[SysPartition]:
    parts: list[SysPartition] = []
    base = sys_block / name
    try:
        children = sorted(os.listdir(base))
    except OSError:
        return parts
    for child in children:
        number = _read_int(base / child / "partition")
        if number is not None:
            parts.append(SysPartition(child, number, _devno(_read_text(base / child / "dev"))))
    return sorted(parts, key=lambda p: p.number)


def _sys_dir_of_devno(devno: tuple[int, int]) -> Path | None:
    link = SYS_DEV_BLOCK / f"{devno[0]}:{devno[1]}"
    try:
        return Path(os.path.realpath(link)) if link.exists() else None
    except OSError:
        return None


def whole_disks_below(devno: tuple[int, int]) -> list[str]:
    """Whole-disk names under a block device: a partition's parent, or a dm/md's members."""
    found: list[str] = []
    seen: set[Path] = set()

    def walk(sys_dir: Path) -> None:
        if sys_dir in seen:
            return
        seen.add(sys_dir)
        if (sys_dir / "partition").exists():
            walk(sys_dir.parent)
            return
        slaves = sys_dir / "slaves"
        members = sorted(os.listdir(slaves)) if slaves.is_dir() else []
        if members:
            for member in members:
                walk(Path(os.path.realpath(slaves / member)))
        elif sys_dir.name not in found:
            found.append(sys_dir.name)

    sys_dir = _sys_dir_of_devno(devno)
    if sys_dir is not None:
        walk(sys_dir)
    return found


def _devno_holding(path: str, mounts: Sequence[MountEntry]) -> tuple[int, int] | None:
    """The block device whose filesystem holds ``path``.

    ``st_dev`` names it directly for most filesystems; btrfs and overlay-style
    mounts report an anonymous device (major 0), so the mount table's source
    for the longest mount point above the path is used instead.
    """
    real = os.path.realpath(path)
    st = os.stat(real)
    if stat.S_ISBLK(st.st_mode):
        return os.major(st.st_rdev), os.minor(st.st_rdev)
    devno = (os.major(st.st_dev), os.minor(st.st_dev))
    if devno[0] != 0:
        return devno
    best: MountEntry | None = None
    for entry in mounts:
        mp = entry.mount_point.rstrip("/") or "/"
        inside = real == mp or real.startswith(mp + "/") or mp == "/"
        if inside and (best is None or len(mp) >= len(best.mount_point.rstrip("/") or "/")):
            best = entry
    if best is None or not best.source.startswith("/dev/"):
        return None
    try:
        src = os.stat(best.source)
    except OSError:
        return None
    if not stat.S_ISBLK(src.st_mode):
        return None
    return os.major(src.st_rdev), os.minor(src.st_rdev)


def disks_holding(path: str, sys_block: Path = SYS_BLOCK) -> list[str]:
    """Every whole disk that ``path`` depends on, nearest first, as /dev paths.

    A file on a loop device's filesystem depends on the loop device and on the
    disk holding the loop's backing file, and so on down.
    """
    result: list[str] = []
    mounts = read_mounts()
    pending = [path]
    seen_paths: set[str] = set()
    while pending:
        current = pending.pop(0)
        if current in seen_paths:
            continue
        seen_paths.add(current)
        try:
            devno = _devno_holding(current, mounts)
        except OSError:
            continue
        if devno is None:
            continue
        for name in whole_disks_below(devno):
            device = f"/dev/{name}"
            if device not in result:
                result.append(device)
            backing = loop_backing_file(name, sys_block)
            if backing:
                pending.append(backing)
    return result


def _udev_missing_reason() -> str:
    if not UDEV_CONTROL.exists():
        return "udev is not running"
    return "udev has no record of this disk yet"


def _dm_name(holder: str, sys_block: Path) -> str:
    name = _read_text(sys_block / holder / "dm" / "name")
    return f"{holder} ({name})" if name else holder


@dataclass
class _UseScan:
    """In-use facts gathered once per probe run."""

    mounts: list[MountEntry]
    swaps: set[tuple[int, int]]

    @classmethod
    def now(cls) -> _UseScan:
        return cls(read_mounts(), read_swap_devnos())

    def mount_points(self, devno: tuple[int, int] | None) -> list[str]:
        if devno is None:
            return []
        return [m.mount_point for m in self.mounts if m.devno == devno]


def _usage(
    what: str, sys_dir: Path, devno: tuple[int, int] | None, scan: _UseScan, sys_block: Path,
    depth: int = 0,
) -> tuple[list[str], list[str]]:
    """(in-use sentences, mount points) for one block device and what is stacked on it."""
    notes: list[str] = []
    mounts = scan.mount_points(devno)
    if mounts:
        notes.append(f"{what} is mounted at {' and '.join(mounts)}")
    if devno is not None and devno in scan.swaps:
        notes.append(f"{what} is active swap")
    try:
        holders = sorted(os.listdir(sys_dir / "holders"))
    except OSError:
        holders = []
    for holder in holders:
        label = _dm_name(holder, sys_block)
        notes.append(f"{what} is used by {label} (RAID/LVM/device-mapper)")
        if depth < 8:  # stacks are shallow; the bound only guards against sysfs loops
            holder_devno = _devno(_read_text(sys_block / holder / "dev"))
            sub_notes, sub_mounts = _usage(
                label, sys_block / holder, holder_devno, scan, sys_block, depth + 1
            )
            notes.extend(sub_notes)
            mounts.extend(sub_mounts)
    return notes, mounts


def _disk_usage(name: str, scan: _UseScan, sys_block: Path) -> tuple[list[str], list[str]]:
    sys_dir = sys_block / name
    devno = _devno(_read_text(sys_dir / "dev"))
    notes, mounts = _usage("the whole disk", sys_dir, devno, scan, sys_block)
    for part in sys_partitions(name, sys_block):
        n, m = _usage(
            f"partition {part.number}", sys_dir / part.name, part.devno, scan, sys_block
        )
        notes.extend(n)
        mounts.extend(m)
    return notes, mounts


# ---------------------------------------------------------------------------
# Tables


def _sector_size(value: int | None, default: int = 512) -> SectorSize:
    if value in (512, 1024, 2048, 4096):
        return cast(SectorSize, value)
    return cast(SectorSize, default)


@dataclass(frozen=True)
class TableFacts:
    table: PartitionTable | None
    fingerprint: str
    free: tuple[FreeRegion, ...]
    problem: str | None
    missing: tuple[str, ...]
    ebr_lbas: tuple[int, ...] | None = None


def read_table_facts(path: str, size_bytes: int, sector_size: int) -> TableFacts:
    """The table of the disk or image at ``path``, with filesystems and free space."""
    try:
        with DiskReader(path) as reader:
            parsed: ParsedTable | None = read_table(reader.read, size_bytes, sector_size)
    except PermissionError:
        hint = "the system refused access" if os.geteuid() == 0 else "run as root"
        return TableFacts(
            None, table_fingerprint(None), (), None,
            (f"partition table unknown: no permission to read {path} ({hint})",),
        )
    except OSError as exc:
        return TableFacts(
            None, table_fingerprint(None), (), None,
            (f"partition table unknown: reading {path} failed ({exc.strerror or exc})",),
        )
    except TableError as exc:
        fingerprint = hashlib.sha256(f"damaged table: {exc}".encode()).hexdigest()
        return TableFacts(None, fingerprint, (), str(exc), ())
    size_lba = size_bytes // sector_size
    if parsed is None:
        free = free_regions(None, size_lba, sector_size) if size_lba > 0 else ()
        return TableFacts(None, table_fingerprint(None), free, None, ())
    table = with_filesystems(parsed.table, path)
    ebr_lbas = [lba for lba, _raw in parsed.ebrs]
    free = free_regions(table, size_lba, sector_size, ebr_lbas=ebr_lbas)
    return TableFacts(table, table_fingerprint(parsed), free, None, (), tuple(ebr_lbas))


# ---------------------------------------------------------------------------
# Image files


def _loops_of_file(path: str, sys_block: Path) -> list[str]:
    real = os.path.realpath(path)
    found: list[str] = []
    try:
        names = sorted(os.listdir(sys_block))
    except OSError:
        return found
    for name in names:
        if name.startswith("loop"):
            backing = loop_backing_file(name, sys_block)
            if backing and os.path.realpath(backing) == real:
                found.append(name)
    return found


class ImageProbe:
    """Disk image files as disks: bus "image", model = the file's name."""

    def __init__(
        self, images: Iterable[str] = (), *, sector_size: int = 512, sys_block: Path = SYS_BLOCK
    ) -> None:
        self.images = [str(p) for p in images]
        self.sector_size = sector_size
        self.sys_block = sys_block

    def disks(self) -> list[ProbedDisk]:
        return [self.disk(path) for path in self.images]

    def disk(self, device: str) -> ProbedDisk:
        path = os.path.abspath(device)
        try:
            st = os.stat(path)
        except FileNotFoundError as exc:
            raise ProbeError(f"{device} does not exist: check the path") from exc
        if not stat.S_ISREG(st.st_mode):
            raise ProbeError(f"{device} is not a disk image file")
        ss = _sector_size(self.sector_size)
        identity = DiskIdentity(
            model=Path(path).name,
            bus="image",
            size_bytes=st.st_size,
            logical_sector_size=ss,
            physical_sector_size=ss,
        )
        facts = read_table_facts(path, st.st_size, ss)
        notes: list[str] = []
        mounts: list[str] = []
        scan = _UseScan.now()
        for loop in _loops_of_file(path, self.sys_block):
            n, m = _disk_usage(loop, scan, self.sys_block)
            # The image itself is only in use through what is active on its loop device.
            notes.extend(f"attached as /dev/{loop}: {note}" for note in n)
            mounts.extend(m)
        return ProbedDisk(
            device=path,
            identity=identity,
            table=facts.table,
            table_fingerprint=facts.fingerprint,
            table_problem=facts.problem,
            free=facts.free,
            ebr_lbas=facts.ebr_lbas,
            read_only=not os.access(path, os.W_OK),
            removable=False,
            in_use=tuple(notes),
            mounts=tuple(mounts),
            missing_facts=facts.missing,
        )

    def disk_holding(self, path: str) -> str | None:
        found = disks_holding(path, self.sys_block)
        return found[0] if found else None

    def disks_holding(self, path: str) -> list[str]:
        return disks_holding(path, self.sys_block)


# ---------------------------------------------------------------------------
# The running system


def _decode_udev(value: str | None) -> str | None:
    """udev's *_ENC values escape bytes as \\xNN; the plain ones use '_' for spaces."""
    if not value:
        return None
    text = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), value)
    return " ".join(text.split()) or None


def _norm_bus(udev_bus: str | None, name: str, sys_dir: Path) -> str | None:
    if name.startswith("loop"):
        return "loop"
    if name.startswith("nvme"):
        return "nvme"
    if name.startswith("vd"):
        return "virtio"
    if name.startswith("xvd"):
        return "xen"
    if name.startswith("mmcblk"):
        return "mmc"
    if udev_bus:
        return {"ata": "sata"}.get(udev_bus, udev_bus)
    # Without udev: the device's sysfs path says which controller it hangs off.
    real = os.path.realpath(sys_dir)
    if "/usb" in real:
        return "usb"
    if "/ata" in real:
        return "sata"
    if name.startswith("sd"):
        return "scsi"
    return None


def _vpd_serial(sys_dir: Path) -> str | None:
    """The SCSI/SATA unit serial number (VPD page 0x80), readable without udev."""
    try:
        raw = (sys_dir / "device" / "vpd_pg80").read_bytes()
    except OSError:
        return None
    if len(raw) < 4:
        return None
    text = raw[4 : 4 + raw[3]].decode("ascii", "replace").strip()
    return text or None


def _sysfs_wwn(sys_dir: Path) -> str | None:
    for candidate in (sys_dir / "wwid", sys_dir / "device" / "wwid"):
        text = _read_text(candidate)
        if text:
            return text
    return None


def _sysfs_model(sys_dir: Path) -> str | None:
    for candidate in (sys_dir / "device" / "model", sys_dir / "device" / "name"):
        text = _read_text(candidate)
        if text:
            return " ".join(text.split())
    return None


def _sysfs_serial(sys_dir: Path) -> str | None:
    for candidate in (sys_dir / "serial", sys_dir / "device" / "serial"):
        text = _read_text(candidate)
        if text:
            return text
    return _vpd_serial(sys_dir)


class SystemProbe:
    """The disks of the running machine.

    ``use_udev=False`` (or udev not running) takes identity from sysfs and
    blkid only, and says in ``missing_facts`` what that leaves unknown.
    """

    def __init__(
        self, *, use_udev: bool = True, sys_block: Path = SYS_BLOCK, dev_dir: Path = Path("/dev")
    ) -> None:
        self.use_udev = use_udev
        self.sys_block = sys_block
        self.dev_dir = dev_dir
        self._images = ImageProbe(sys_block=sys_block)
        self._udev_context: Any = None
        self._udev_error: str | None = None

    # -- udev ------------------------------------------------------------------
    def _udev_properties(self, name: str) -> tuple[dict[str, str], str | None]:
        """udev's properties of a disk, or ({}, why they are missing)."""
        if not self.use_udev:
            return {}, "udev is not in use"
        if self._udev_context is None and self._udev_error is None:
            try:
                import pyudev

                self._udev_context = pyudev.Context()
            except Exception as exc:  # ImportError, or libudev missing on a rescue system
                self._udev_error = f"udev is unavailable ({exc})"
        if self._udev_context is None:
            return {}, self._udev_error
        try:
            import pyudev

            device = pyudev.Devices.from_sys_path(self._udev_context, str(self.sys_block / name))
            props = {str(k): str(v) for k, v in device.properties.items()}
            initialized = bool(device.is_initialized)
        except Exception as exc:
            return {}, f"udev could not describe it ({exc})"
        if not initialized:
            return props, _udev_missing_reason()
        return props, None

    # -- enumeration -----------------------------------------------------------
    def disk_names(self) -> list[str]:
        names: list[str] = []
        try:
            entries = sorted(os.listdir(self.sys_block))
        except OSError:
            return names
        for name in entries:
            if not WHOLE_DISK_NAME.match(name):
                continue
            if name.startswith("loop") and not loop_backing_file(name, self.sys_block):
                continue  # an unused loop device
            if not _read_int(self.sys_block / name / "size"):
                continue  # an empty card reader slot
            names.append(name)
        return names

    def disks(self) -> list[ProbedDisk]:
        scan = _UseScan.now()
        return [self._probe_block(name, scan) for name in self.disk_names()]

    def disk(self, device: str) -> ProbedDisk:
        try:
            st = os.stat(device)
        except FileNotFoundError as exc:
            raise ProbeError(
                f"{device} does not exist: check the name with `restore-tui disks`"
            ) from exc
        if stat.S_ISREG(st.st_mode):
            return self._images.disk(device)
        if not stat.S_ISBLK(st.st_mode):
            raise ProbeError(f"{device} is neither a disk nor a disk image file")
        sys_dir = _sys_dir_of_devno((os.major(st.st_rdev), os.minor(st.st_rdev)))
        if sys_dir is None:
            raise ProbeError(f"{device}: the kernel has no record of this device")
        if (sys_dir / "partition").exists():
            raise ProbeError(
                f"{device} is a partition, not a whole disk: choose /dev/{sys_dir.parent.name}"
            )
        return self._probe_block(sys_dir.name, _UseScan.now())

    def disk_holding(self, path: str) -> str | None:
        found = disks_holding(path, self.sys_block)
        return found[0] if found else None

    def disks_holding(self, path: str) -> list[str]:
        return disks_holding(path, self.sys_block)

    # -- one disk ----------------------------------------------------------------
    def _probe_block(self, name: str, scan: _UseScan) -> ProbedDisk:
        sys_dir = self.sys_block / name
        device = str(self.dev_dir / name)
        missing: list[str] = []
        props, udev_missing = self._udev_properties(name)
        sectors = _read_int(sys_dir / "size") or 0
        logical = _sector_size(_read_int(sys_dir / "queue" / "logical_block_size"))
        physical = _read_int(sys_dir / "queue" / "physical_block_size") or logical
        backing = loop_backing_file(name, self.sys_block)
        bus = _norm_bus(props.get("ID_BUS"), name, sys_dir)
        model = _decode_udev(props.get("ID_MODEL_ENC")) or _decode_udev(
            (props.get("ID_MODEL") or "").replace("_", " ")
        )
        vendor = _decode_udev(props.get("ID_VENDOR_ENC")) or _decode_udev(
            (props.get("ID_VENDOR") or "").replace("_", " ")
        )
        serial = props.get("ID_SERIAL_SHORT") or None
        wwn = props.get("ID_WWN_WITH_EXTENSION") or props.get("ID_WWN") or None
        # sysfs knows some of it directly (NVMe, virtio, SCSI VPD pages), udev or not.
        model = model or _sysfs_model(sys_dir)
        vendor = vendor or _read_text(sys_dir / "device" / "vendor") or None
        serial = serial or _sysfs_serial(sys_dir)
        wwn = wwn or _sysfs_wwn(sys_dir)
        if bus not in ("loop",):
            why = udev_missing or "the disk does not report it"
            if serial is None:
                missing.append(f"serial unknown: {why}")
            if model is None:
                missing.append(f"model unknown: {why}")
            if udev_missing and bus is None:
                missing.append(f"connection type unknown: {udev_missing}")
        identity = DiskIdentity(
            model=model,
            vendor=vendor if vendor and vendor != model else None,
            serial=serial,
            wwn=wwn,
            bus=bus,
            size_bytes=sectors * 512,  # sysfs counts 512-byte units whatever the sector size
            logical_sector_size=logical,
            physical_sector_size=max(1, physical),
        )
        facts = read_table_facts(device, identity.size_bytes, logical)
        missing.extend(facts.missing)
        notes, mounts = _disk_usage(name, scan, self.sys_block)
        removable = _read_int(sys_dir / "removable") == 1 or bus == "usb"
        read_only = _read_int(sys_dir / "ro") == 1
        return ProbedDisk(
            device=device,
            identity=identity,
            table=facts.table,
            table_fingerprint=facts.fingerprint,
            table_problem=facts.problem,
            free=facts.free,
            ebr_lbas=facts.ebr_lbas,
            read_only=read_only,
            removable=removable,
            in_use=tuple(notes),
            mounts=tuple(dict.fromkeys(mounts)),
            backing_file=backing,
            missing_facts=tuple(missing),
        )


# ---------------------------------------------------------------------------
# Recorded machines and combinations

_DISK_LIST = TypeAdapter(list[ProbedDisk])


class RecordedProbe:
    """A machine recorded as JSON (a list of ProbedDisk): tests and bug reports."""

    def __init__(
        self, source: str | os.PathLike[str] | list[ProbedDisk], *,
        holding: dict[str, str] | None = None,
    ) -> None:
        if isinstance(source, list):
            self._disks = list(source)
        else:
            text = Path(source).read_text()
            data = json.loads(text)
            if isinstance(data, dict):
                holding = {**data.get("holding", {}), **(holding or {})}
                data = data["disks"]
            self._disks = _DISK_LIST.validate_python(data)
        self._holding = dict(holding or {})

    def disks(self) -> list[ProbedDisk]:
        return list(self._disks)

    def disk(self, device: str) -> ProbedDisk:
        for d in self._disks:
            if d.device == device:
                return d
        raise ProbeError(f"{device} is not one of the recorded disks")

    def disk_holding(self, path: str) -> str | None:
        return self._holding.get(path)

    def disks_holding(self, path: str) -> list[str]:
        one = self._holding.get(path)
        return [one] if one else []


def dump_disks(disks: Sequence[ProbedDisk]) -> str:
    """JSON for a list of disks: what ``disks --json`` prints and RecordedProbe reads."""
    return _DISK_LIST.dump_json(list(disks), indent=2).decode() + "\n"


class CombinedProbe:
    """Real disks plus some image files, as one machine."""

    def __init__(self, base: Probe, images: Iterable[str] = ()) -> None:
        self.base = base
        self.images = ImageProbe([os.path.abspath(p) for p in images])

    def disks(self) -> list[ProbedDisk]:
        return [*self.base.disks(), *self.images.disks()]

    def disk(self, device: str) -> ProbedDisk:
        if os.path.abspath(device) in self.images.images or os.path.isfile(device):
            return self.images.disk(device)
        return self.base.disk(device)

    def disk_holding(self, path: str) -> str | None:
        return self.base.disk_holding(path)


def archive_disks(probe: Probe, path: str) -> list[str]:
    """Every disk ``path`` depends on (through loop backing files too), nearest first."""
    # The backup file itself offered as a target image: it "holds" the backup too, and
    # no sysfs lookup finds that (the file is not on any disk image we were given).
    images = (
        probe.images.images
        if isinstance(probe, CombinedProbe)
        else probe.images if isinstance(probe, ImageProbe) else []
    )
    real = os.path.realpath(path)
    itself = [image for image in images if os.path.realpath(image) == real]
    base = probe.base if isinstance(probe, CombinedProbe) else probe
    if isinstance(base, SystemProbe | ImageProbe | RecordedProbe):
        return [*itself, *base.disks_holding(path)]
    one = probe.disk_holding(path)
    return [*itself, *([one] if one else [])]


def probe_for(images: Sequence[str] = (), *, use_udev: bool = True) -> Probe:
    """The probe the command line uses: this machine's disks plus ``images``."""
    system = SystemProbe(use_udev=use_udev)
    return CombinedProbe(system, images) if images else system


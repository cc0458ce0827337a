"""Back up a whole disk (or disk image file) into a native restore-tui archive.

Reads the partition table ourselves, asks blkid what filesystem each partition
holds, stores track 0 and each partition's used blocks, and writes atomically.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from archive.base import ProgressCallback
from archive.capture import CapturePlan, plan_capture
from archive.errors import ArchiveError
from archive.manifest import ArchiveManifest, BootArea, PartitionImage, RawSector, SourceDisk
from archive.native import NativeWriter
from archive.roles import infer_role
from layout.blockio import DiskReader, Geometry
from layout.fsinfo import with_filesystems
from layout.models import DiskIdentity
from layout.table_io import TableError, read_table


class BackupError(ArchiveError):
    """A backup that cannot be made; the message says why and what to do."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: ArchiveManifest
    stored_bytes: int  # raw source bytes stored (data and zero extents)
    archive_bytes: int  # size of the archive file


def _creator() -> str:
    try:
        return f"restore-tui {version('restore-tui')}"
    except PackageNotFoundError:
        return "restore-tui (development tree)"


def _sysfs_text(path: Path) -> str | None:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return None
    return text or None


def _bus_of(sys_dir: Path) -> str | None:
    real = str(sys_dir.resolve())
    for marker, bus in (
        ("/usb", "usb"),
        ("/nvme", "nvme"),
        ("/virtio", "virtio"),
        ("/ata", "sata"),
        ("/mmc", "mmc"),
        ("/devices/virtual/block/loop", "loop"),
        ("/scsi", "scsi"),
    ):
        if marker in real:
            return bus
    return None


def disk_identity(path: str, geometry: Geometry) -> DiskIdentity:
    """Model, serial, bus and sizes of a disk; an image file says "image".

    The system probe (udev, then sysfs) knows disks best; when it cannot answer
    (a minimal rescue system), sysfs is read directly.
    """
    if geometry.is_block_device:
        try:
            from layout.probe import ProbeError, SystemProbe

            try:
                return SystemProbe().disk(path).identity
            except ProbeError:
                pass
        except ImportError:
            pass
    if not geometry.is_block_device:
        return DiskIdentity(
            model=None,
            bus="image",
            size_bytes=geometry.size_bytes,
            logical_sector_size=512,
            physical_sector_size=512,
        )
    rdev = os.stat(path).st_rdev
    sys_dir = Path(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}")
    device = sys_dir / "device"
    serial = _sysfs_text(device / "serial") or _sysfs_text(sys_dir / "serial")
    wwid = _sysfs_text(device / "wwid") or _sysfs_text(sys_dir / "wwid")
    logical = geometry.logical_sector_size
    if logical not in (512, 1024, 2048, 4096):
        raise BackupError(f"{path} has {logical}-byte sectors, which restore-tui cannot handle")
    return DiskIdentity(
        model=_sysfs_text(device / "model"),
        vendor=_sysfs_text(device / "vendor"),
        serial=serial,
        wwn=wwid,
        bus=_bus_of(sys_dir),
        size_bytes=geometry.size_bytes,
        logical_sector_size=logical,
        physical_sector_size=geometry.physical_sector_size,
    )


def _devnums(path: str) -> list[tuple[int, int, str]]:
    """(major, minor, name) of ``path`` and its partitions; of loop devices backing an image."""
    found: list[tuple[int, int, str]] = []

    def with_partitions(sys_dir: Path, name: str) -> None:
        rdev = _sysfs_text(sys_dir / "dev")
        if rdev:
            major, minor = rdev.split(":")
            found.append((int(major), int(minor), name))
        for child in sys_dir.iterdir() if sys_dir.is_dir() else ():
            dev = _sysfs_text(child / "dev")
            if (child / "partition").exists() and dev:
                major, minor = dev.split(":")
                found.append((int(major), int(minor), child.name))

    st = os.stat(path)
    if stat.S_ISBLK(st.st_mode):
        sys_dir = Path(f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
        with_partitions(sys_dir.resolve(), os.path.basename(path))
    else:
        real = os.path.realpath(path)
        for loop in Path("/sys/block").glob("loop*"):
            if _sysfs_text(loop / "loop" / "backing_file") == real:
                with_partitions(loop, loop.name)
    return found


def mounted_read_write(path: str, mountinfo: str | None = None) -> list[str]:
    """Mount points of filesystems on ``path`` (or a loop device over it) mounted read-write."""
    try:
        numbers = {(major, minor): name for major, minor, name in _devnums(path)}
    except OSError:
        return []
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return []
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 6 or ":" not in fields[2]:
            continue
        major, minor = (int(x) for x in fields[2].split(":", 1))
        options = fields[5].split(",")
        if (major, minor) in numbers and "rw" in options:
            found.append(f"{fields[4]} (/dev/{numbers[(major, minor)]})")
    return found


def backup(
    source: str,
    out: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
) -> BackupResult:
    """Back up the disk or image ``source`` into the archive file ``out``."""
    try:
        reader = DiskReader(source)
    except OSError as exc:
        raise BackupError(f"cannot read {source}: {exc.strerror or exc}") from None
    with reader:
        ss = reader.geometry.logical_sector_size
        try:
            parsed = read_table(reader.read, reader.size, ss)
        except TableError as exc:
            raise BackupError(f"the partition table on {source} is damaged: {exc}") from None
        if parsed is None:
            raise BackupError(
                f"{source} has no partition table; restore-tui backs up partitioned disks"
            )
        table = with_filesystems(parsed.table, source)
        identity = disk_identity(source, reader.geometry)
        # Track 0: everything after sector 0 up to the first partition (GPT header and
        # entries, GRUB's core image, vendor data hidden there).
        first = table.first_partition_lba
        track0_stop = first * ss if first is not None else min(reader.size, 1024 * 1024)
        track0_ranges = [(ss, track0_stop)] if track0_stop > ss else []
        plans: list[tuple[int, CapturePlan]] = [
            (p.number, plan_capture(source, p, ss)) for p in table.partitions
        ]
        total = sum(b - a for a, b in track0_ranges) + sum(pl.stored_bytes for _, pl in plans)
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        if progress is not None:
            progress(0, total)
        with NativeWriter(out) as writer:
            track0 = writer.store(reader.read, track0_ranges, advance)
            images = []
            for number, plan in plans:
                partition = table.partition(number)
                role, evidence = infer_role(partition, table)
                chunks = writer.store(reader.read, plan.ranges, advance)
                images.append(
                    PartitionImage(
                        number=number,
                        role=role,
                        role_evidence=evidence,
                        used_bytes=plan.used_bytes,
                        capture=plan.capture,
                        capture_note=plan.note,
                        chunks=chunks,
                    )
                )
            manifest = ArchiveManifest(
                created=datetime.now(UTC),
                creator=_creator(),
                source=SourceDisk(identity=identity, device=str(source)),
                table=table,
                boot=BootArea(
                    boot_code=parsed.sector0[:440].hex(),
                    sector0=parsed.sector0.hex(),
                    track0=track0,
                    track0_stop=track0_stop,
                    ebrs=tuple(RawSector(lba=lba, data=raw.hex()) for lba, raw in parsed.ebrs),
                ),
                partitions=tuple(images),
            )
            path = writer.finish(manifest)
    return BackupResult(path, manifest, total, path.stat().st_size)

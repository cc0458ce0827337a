"""Which bytes of each partition a backup stores: the used blocks, or every sector.

For ext2/3/4, FAT12/16/32 and NTFS we take partclone's map of used blocks
(``partclone.<extfs|fat|ntfs> -D``, a ddrescue domain log); everything else is
stored whole.

Why partclone, and why through a loop device: the map decides what a restore
can bring back, so a block missed is data lost. partclone's readers are the
ones Clonezilla has used on millions of disks, and for ext they go through
libext2fs, which gets the hard cases right (BLOCK_UNINIT groups, flex_bg,
meta_bg, bigalloc) where a reader of our own could silently miss metadata.
partclone only reads a whole device from its first byte (it has no input
offset), and this kernel gives no partition nodes, so we attach a *read-only*
loop device over the partition's byte range (``losetup -r -o START
--sizelimit LENGTH``): that works the same for image files and for disks,
needs no copy, and cannot write to the source. Attaching a loop device needs
root; without it, or when partclone refuses a filesystem (not cleanly
unmounted, damaged), the partition is stored whole and the manifest's
``capture_note`` says why. That is never wrong, only larger.

Adjustments: ranges are rounded out to 4 KiB inside the partition (restores
write whole pages), and an NTFS partition's last sector, the backup boot
sector that partclone leaves out, is always kept. Swap is stored whole: a
hibernation image lives there, and keeping only the header would make a
restored system try to resume from garbage.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from layout.models import Partition

GRANULE = 4096
PARTCLONE_TOOLS = {
    "ext2": "partclone.extfs",
    "ext3": "partclone.extfs",
    "ext4": "partclone.extfs",
    "vfat": "partclone.fat",
    "ntfs": "partclone.ntfs",
}
CaptureKind = Literal["used-blocks", "all-sectors", "none"]
Range = tuple[int, int]


@dataclass(frozen=True)
class CapturePlan:
    """The source-disk byte ranges ``[start, stop)`` to store for one partition."""

    capture: CaptureKind
    ranges: tuple[Range, ...]
    used_bytes: int | None
    note: str | None = None

    @property
    def stored_bytes(self) -> int:
        return sum(b - a for a, b in self.ranges)


def merge_ranges(ranges: list[Range]) -> list[Range]:
    """Sorted, with touching or overlapping ranges joined."""
    merged: list[Range] = []
    for start, stop in sorted(r for r in ranges if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


def round_out(ranges: list[Range], start: int, stop: int, granule: int = GRANULE) -> list[Range]:
    """Widen each range to ``granule`` boundaries counted from ``start``, kept inside
    ``[start, stop)``, then merged."""
    out = []
    for a, b in ranges:
        a2 = start + (a - start) // granule * granule
        b2 = start + -(-(b - start) // granule) * granule
        out.append((max(start, a2), min(stop, b2)))
    return merge_ranges(out)


def parse_domain_log(text: str, size: int) -> list[Range]:
    """Used ``[start, stop)`` ranges (relative to the partition) from a ddrescue domain log.

    Lines are ``pos size status`` in hex; ``+`` marks used blocks. The first
    non-comment line (``current_pos current_status``) has two fields and is skipped.
    """
    used: list[Range] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#") or len(fields) < 3:
            continue
        try:
            pos, length = int(fields[0], 16), int(fields[1], 16)
        except ValueError:
            raise ValueError(f"unreadable line in partclone's block map: {line!r}") from None
        if fields[2] == "+":
            used.append((min(pos, size), min(pos + length, size)))
    return merge_ranges(used)


def used_map_reason() -> str | None:
    """Why used-block maps cannot be made here (None when they can)."""
    if os.geteuid() != 0:
        return "skipping free space needs root (to attach a read-only loop device)"
    if not Path("/dev/loop-control").exists() or shutil.which("losetup") is None:
        return "skipping free space needs loop devices, which this system lacks"
    return None


def partclone_used_ranges(
    source: str, offset: int, size: int, filesystem: str
) -> tuple[list[Range] | None, str | None]:
    """partclone's used ranges, relative to the partition; or (None, reason in plain words)."""
    tool = PARTCLONE_TOOLS.get(filesystem)
    if tool is None:
        return None, f"no block map for {filesystem} filesystems"
    if shutil.which(tool) is None:
        return None, f"{tool} is not installed, so free space could not be skipped"
    reason = used_map_reason()
    if reason:
        return None, reason
    attached = subprocess.run(
        ["losetup", "-f", "--show", "-r", "-o", str(offset), "--sizelimit", str(size), source],
        capture_output=True,
        text=True,
    )
    loop = attached.stdout.strip()
    if attached.returncode != 0 or not loop:
        return None, f"could not attach a loop device ({attached.stderr.strip() or 'no reason'})"
    try:
        with tempfile.TemporaryDirectory(prefix="restore-tui-map-") as tmp:
            log = Path(tmp) / "domain.log"
            # -L keeps partclone's log out of /var/log; -q: no progress output.
            proc = subprocess.run(
                [tool, "-D", "-s", loop, "-o", str(log), "-q", "-L", str(Path(tmp) / "pc.log")],
                capture_output=True,
                text=True,
                timeout=3600,
            )
            if proc.returncode != 0 or not log.exists():
                detail = (proc.stderr or proc.stdout).strip().splitlines()
                why = detail[-1] if detail else f"exit code {proc.returncode}"
                return None, f"{tool} could not map the used blocks ({why})"
            return parse_domain_log(log.read_text(), size), None
    except subprocess.TimeoutExpired:
        return None, f"{tool} took too long to map the used blocks"
    finally:
        subprocess.run(["losetup", "-d", loop], capture_output=True)


def plan_capture(source: str, partition: Partition, sector_size: int) -> CapturePlan:
    """What to store of ``partition`` on ``source`` (a disk or image file)."""
    start = partition.start_lba * sector_size
    size = partition.length_lba * sector_size
    stop = start + size
    if partition.kind == "extended":
        return CapturePlan("none", (), None, "an extended container holds no data itself")
    fs = partition.filesystem
    if fs is None or fs not in PARTCLONE_TOOLS:
        what = f"{fs} partition" if fs else "no filesystem recognised"
        return CapturePlan("all-sectors", ((start, stop),), None, f"{what}: every sector kept")
    used, reason = partclone_used_ranges(source, start, size, fs)
    if used is None:
        return CapturePlan("all-sectors", ((start, stop),), None, f"every sector kept: {reason}")
    used_bytes = sum(b - a for a, b in used)
    absolute = [(start + a, start + b) for a, b in used]
    if fs == "ntfs":
        # The backup boot sector is the volume's last sector; partclone omits it.
        absolute.append((stop - sector_size, stop))
    ranges = round_out(absolute, start, stop)
    return CapturePlan("used-blocks", tuple(ranges), used_bytes, f"used blocks of {fs} (partclone)")

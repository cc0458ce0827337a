"""Filesystem facts (type, label, UUID) inside a partition, from blkid's low-level probe.

Works on image files and whole-disk devices alike, by byte offset, so it needs
no partition nodes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from layout.models import PartitionTable


@dataclass(frozen=True)
class FsInfo:
    type: str | None
    label: str | None
    uuid: str | None
    version: str | None = None


EMPTY = FsInfo(None, None, None)
# blkid runs at once when many regions are probed: each run is mostly process start-up
# (10-30 ms), and a restore probes every backed-up partition's place before it writes.
PARALLEL_PROBES = 8


def probe_filesystem(path: str, offset: int, size: int) -> FsInfo:
    """What filesystem starts at ``offset`` (``size`` bytes) in ``path``; EMPTY if none."""
    blkid = shutil.which("blkid") or "/sbin/blkid"
    try:
        result = subprocess.run(
            [blkid, "-p", "-o", "export", "-O", str(offset), "-S", str(size), path],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return EMPTY
    # blkid exits 2 when nothing was found: not an error for us.
    if result.returncode != 0:
        return EMPTY
    # `-o export` shell-escapes values ("System\\ Reserved"); undo that.
    values = {
        key: re.sub(r"\\(.)", r"\1", value)
        for key, value in (line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    }
    if values.get("USAGE") not in (None, "filesystem", "other"):
        return EMPTY
    return FsInfo(
        values.get("TYPE"), values.get("LABEL"), values.get("UUID"), values.get("VERSION")
    )


def probe_filesystems(path: str, regions: Sequence[tuple[int, int]]) -> list[FsInfo]:
    """:func:`probe_filesystem` of each ``(offset, size)`` region, in order; the probes run
    side by side."""
    if len(regions) <= 1:
        return [probe_filesystem(path, offset, size) for offset, size in regions]
    with ThreadPoolExecutor(max_workers=min(PARALLEL_PROBES, len(regions))) as pool:
        return list(pool.map(lambda region: probe_filesystem(path, *region), regions))


def with_filesystems(table: PartitionTable, path: str) -> PartitionTable:
    """The table with each data partition's filesystem type, label and UUID filled in."""
    ss = table.sector_size
    regions = [
        (p.start_lba * ss, p.length_lba * ss) for p in table.partitions if p.kind != "extended"
    ]
    found = iter(probe_filesystems(path, regions))
    partitions = []
    for p in table.partitions:
        if p.kind == "extended":
            partitions.append(p)
            continue
        info = next(found)
        partitions.append(
            p.model_copy(
                update={
                    "filesystem": info.type,
                    "label": info.label,
                    "fs_uuid": info.uuid,
                    "fs_version": info.version,
                }
            )
        )
    return table.model_copy(update={"partitions": tuple(partitions)})

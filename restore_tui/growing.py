"""Growing a restored filesystem into its larger partition, with the filesystem's own tool.

The tool (resize2fs, ntfsresize) is never given the whole disk: it gets a loop device
that is exactly the partition's extent (``losetup --offset --sizelimit``), so it cannot
write outside it; afterwards the sectors around the extent (track 0, and a MiB each
side of the partition) are compared with what they were before, as a second check.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator

from layout.plan import GrowFilesystem

AROUND = 1024 * 1024  # bytes compared on each side of the extent, and of track 0
TOOL_TIMEOUT = 6 * 3600.0  # a resize of a large NTFS volume can take long


class GrowError(Exception):
    """The filesystem could not be grown; the message says what to run by hand."""


def _run(argv: list[str], timeout: float = TOOL_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )


def _said(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stderr or result.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit status {result.returncode}"


@contextlib.contextmanager
def extent_device(target: str, offset: int, length: int) -> Iterator[str]:
    """A loop device that is exactly [offset, offset + length) of ``target``."""
    if shutil.which("losetup") is None:
        raise GrowError("losetup is not installed, so the partition cannot be given to the tool")
    made = _run(
        ["losetup", "--find", "--show", "--offset", str(offset), "--sizelimit", str(length),
         target],
        timeout=60,
    )  # fmt: skip
    if made.returncode != 0:
        raise GrowError(
            f"no loop device could be set up over the partition ({_said(made)}); growing "
            "needs root"
        )
    device = made.stdout.strip()
    try:
        yield device
    finally:
        _run(["losetup", "--detach", device], timeout=60)


def _commands(action: GrowFilesystem, device: str) -> list[list[str]]:
    if action.filesystem == "ntfs":
        # No size: ntfsresize grows the volume to the device, i.e. the partition.
        return [["ntfsresize", "--force", "--no-progress-bar", device]]
    # resize2fs wants a freshly checked filesystem; -p repairs only what is safe.
    return [["e2fsck", "-f", "-p", device], ["resize2fs", device]]


def _ok(argv: list[str], result: subprocess.CompletedProcess[str]) -> bool:
    # e2fsck: 0 clean, 1 errors corrected; anything else needs a person.
    return result.returncode in ((0, 1) if argv[0] == "e2fsck" else (0,))


def by_hand(action: GrowFilesystem) -> str:
    """What a person runs when the tool stopped."""
    if action.filesystem == "ntfs":
        return "ntfsresize --force /dev/<the partition> (or let Windows check the disk)"
    return "e2fsck -f /dev/<the partition>, then resize2fs /dev/<the partition>"


def around(fd: int, action: GrowFilesystem) -> str:
    """A digest of what lies just outside the extent (and of track 0)."""
    h = hashlib.sha256()
    size = os.lseek(fd, 0, os.SEEK_END)
    for lo, hi in (
        (0, min(AROUND, action.offset)),
        (max(0, action.offset - AROUND), action.offset),
        (action.stop, min(size, action.stop + AROUND)),
    ):
        if hi > lo:
            h.update(os.pread(fd, hi - lo, lo))
    return h.hexdigest()


def grow(target: str, action: GrowFilesystem) -> None:
    """Run the tool on the partition's own extent; GrowError when it failed."""
    with extent_device(target, action.offset, action.length) as device:
        for argv in _commands(action, device):
            if shutil.which(argv[0]) is None:
                raise GrowError(
                    f"{argv[0]} is not installed; install it, or restore without --grow"
                )
            result = _run(argv)
            if not _ok(argv, result):
                raise GrowError(
                    f"{argv[0]} could not grow partition's filesystem ({_said(result)}). The "
                    f"restored data is in place; to finish by hand run: {by_hand(action)}"
                )


def check(target: str, action: GrowFilesystem) -> bool:
    """Whether the grown filesystem checks clean and fills its partition (read-only)."""
    with extent_device(target, action.offset, action.length) as device:
        if action.filesystem == "ntfs":
            result = _run(["ntfsresize", "--info", "--force", "--no-progress-bar", device])
            sizes = {
                key: int(line.split(":", 1)[1].split()[0])
                for line in result.stdout.splitlines()
                for key in ("Current volume size", "Current device size")
                if line.startswith(key)
            }
            volume, dev = sizes.get("Current volume size", 0), sizes.get("Current device size", 0)
            # NTFS keeps its backup boot sector in the partition's last sector.
            return result.returncode == 0 and dev > 0 and dev - volume <= 1024 * 1024
        result = _run(["e2fsck", "-f", "-n", device])
        if result.returncode != 0:
            return False
        info = _run(["dumpe2fs", "-h", device])
        fields = dict(
            line.split(":", 1) for line in info.stdout.splitlines() if ":" in line
        )
        blocks = int(fields.get("Block count", "0").strip() or 0)
        block_size = int(fields.get("Block size", "0").strip() or 0)
        # Full to within one block group's rounding (resize2fs keeps whole blocks).
        return blocks * block_size > action.length - 8 * 1024 * 1024

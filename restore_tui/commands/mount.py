"""`restore-tui mount BACKUP MOUNTPOINT`: every partition of a backup, read-only, as folders.

Each stored partition appears as ``MOUNTPOINT/<number>-<label>/`` with its real
files; one restore-tui cannot read appears as ``partition.img`` to copy whole.
Returns once the folders are there (`restore-tui umount MOUNTPOINT` takes it
all down); ``--foreground`` stays attached until Ctrl+C and then cleans up.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from restore_tui.mounting import MountState, alive, damage_seen, mount_backup, unmount
from restore_tui.progress import human_bytes

FS_WORDS = {"ntfs": "NTFS", "vfat": "FAT", "ext2": "ext2", "ext3": "ext3", "ext4": "ext4"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "mount",
        help="show a backup's partitions as read-only folders, to look inside or copy files",
        description="Mount every partition of a backup (or one) read-only under MOUNTPOINT: "
        "MOUNTPOINT/<number>-<label>/ holds its files. Nothing in the backup can be changed. "
        "Take it down with `restore-tui umount MOUNTPOINT`.",
    )
    parser.add_argument("archive", metavar="BACKUP", help="the backup file")
    parser.add_argument("mountpoint", metavar="MOUNTPOINT", help="an empty folder (made if new)")
    parser.add_argument("--partition", type=int, metavar="N", help="only partition N")
    parser.add_argument(
        "--foreground",
        action="store_true",
        help="stay attached; Ctrl+C unmounts everything and returns",
    )
    parser.set_defaults(run=run)


def describe(state: MountState) -> list[str]:
    """One line per partition folder: where it is and what it holds."""
    lines = []
    for part in state.partitions:
        size = _size(part.mounted)
        if part.how == "image":
            lines.append(f"  {part.folder}/partition.img  the whole partition ({part.note})")
        else:
            fs = FS_WORDS.get(part.filesystem or "", part.filesystem or "")
            lines.append(f"  {part.folder}/  {fs} files{size}")
    return lines


def _size(path: str | None) -> str:
    if path is None:
        return ""
    try:
        st = os.statvfs(path)
    except OSError:
        return ""
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    return f", {human_bytes(used)} used" if st.f_blocks else ""


def _stop_on_term(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    point = Path(args.mountpoint)
    state = mount_backup(args.archive, point, args.partition, show_messages=args.foreground)
    print(f"Mounted {args.archive} read-only at {state.mountpoint}:")
    for line in describe(state):
        print(line)
    if not args.foreground:
        print(f"Nothing in it can be changed. When done: restore-tui umount {state.mountpoint}")
        return 0
    print("Nothing in it can be changed. Press Ctrl+C to unmount.", flush=True)
    signal.signal(signal.SIGTERM, _stop_on_term)
    try:
        while state.server is not None and alive(state.server):
            time.sleep(0.5)
        print("error: the backup's server stopped; unmounting", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        damage = damage_seen(state)
        unmount(state.mountpoint)
        print(f"Unmounted {state.mountpoint}.")
        for line in damage:
            print(f"warning: damaged data was found: {line}", file=sys.stderr)

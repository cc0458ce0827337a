"""`restore-tui umount MOUNTPOINT`: take down what `restore-tui mount` put there.

Unmounts each partition, detaches the loop devices, stops the filesystem helpers
and the backup's server (only those that mount started, by the record it kept),
and removes the folders it made. A folder still in use is named, nothing forced.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from restore_tui.errors import UserError
from restore_tui.mounting import damage_seen, find_state, unmount


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "umount",
        help="take down a backup mounted with `restore-tui mount`",
        description="Unmount a backup mounted with `restore-tui mount`: every partition, the "
        "loop devices and the background server; nothing is left behind.",
    )
    parser.add_argument("mountpoint", metavar="MOUNTPOINT", help="the folder given to mount")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    state = find_state(args.mountpoint)
    if state is None:
        raise UserError(
            f"restore-tui has nothing mounted at {args.mountpoint}; give the folder that "
            "`restore-tui mount` was given"
        )
    damage = damage_seen(state)
    unmount(args.mountpoint)
    print(f"Unmounted {state.mountpoint}: nothing of the backup is mounted there any more.")
    for line in damage:
        print(f"warning: while it was mounted, damaged data was found: {line}", file=sys.stderr)
    return 0

"""`restore-tui backups [--json]`: the backups on the attached disks, mounted or not.

Each partition is looked inside read-only (mounted read-only for the look when it is
not mounted, without journal replay, and unmounted again), so nothing on any disk
changes. Each backup is named with the disk it is on: model, size, partition, label.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from layout.probe import Probe, ProbedDisk, ProbeError
from layout.units import human_size
from restore_tui.commands.disk_options import add_disk_options, probe_from_args
from restore_tui.errors import UserError
from restore_tui.finding import find, mount_hint, nothing_found_text


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "backups",
        help="list the backups on the attached disks, also on disks that are not mounted",
        description="Look inside every attached disk read-only (mounting a partition "
        "read-only for the look when it is not mounted, and unmounting it again) and list "
        "the restore-tui archives and Clonezilla image folders found, with the disk each is "
        "on. Nothing on any disk is changed.",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"backups": [...], "looked_inside": [...], "skipped": [...]} as JSON',
    )
    parser.add_argument(
        "--disk",
        metavar="DEV",
        action="append",
        default=[],
        help="look only inside this disk (repeatable), e.g. /dev/sdb",
    )
    parser.add_argument(
        "--exclude",
        metavar="DEV",
        action="append",
        default=[],
        help="never look inside this disk (repeatable), e.g. the disk being restored",
    )
    add_disk_options(parser)
    parser.set_defaults(run=run)


class _Only:
    """The probe, narrowed to the disks named with --disk."""

    def __init__(self, base: Probe, devices: list[str]) -> None:
        self.base = base
        self.devices = devices

    def disks(self) -> list[ProbedDisk]:
        return [self.base.disk(d) for d in self.devices]

    def disk(self, device: str) -> ProbedDisk:
        return self.base.disk(device)

    def disk_holding(self, path: str) -> str | None:
        return self.base.disk_holding(path)


def run(args: argparse.Namespace) -> int:
    probe: Probe = probe_from_args(args)
    if args.disk:
        probe = _Only(probe, args.disk)
    try:
        probe.disks()  # a wrong --disk is an error, not a quiet "nothing found"
    except ProbeError as exc:
        raise UserError(str(exc)) from exc
    scan = find(probe, exclude=args.exclude)
    if args.json:
        data = {
            "backups": [b.to_json() for b in scan.backups],
            "looked_inside": list(scan.disks),
            "skipped": list(scan.skipped),
        }
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return 0
    if not scan.backups:
        print(
            nothing_found_text(
                scan,
                "Plug in the disk that holds the backup and run this again; if it is in a "
                "folder deeper down, give its path to the other commands.",
            )
        )
        return 0
    print("Backups found:")
    for b in scan.backups:
        print(f"  {b.name}  ·  {b.kind}, {human_size(b.size)}")
        print(f"    {b.where}")
        if b.path is not None:
            print(f"    {b.path}")
        elif b.device is not None:
            hint = mount_hint(b.device, b.filesystem or "")
            print(f"    {b.device} is not mounted; the wizard opens it read-only by itself")
            if hint:
                print(f"    for the other commands, first: {hint}  → /mnt{b.inner_path}")
    n = len(scan.disks)
    if n:
        print(f"Looked inside {n} disk{'s' if n != 1 else ''}: {'; '.join(scan.disks)}.")
    for line in scan.skipped:
        print(f"Could not look inside {line}.")
    return 0

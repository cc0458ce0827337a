"""`restore-tui verify ARCHIVE`: read the whole backup and check every checksum.

Exit code 0 only when everything is sound; otherwise each damaged place is
named by partition (in plain words) and byte offset. Afterwards it says what of
the backup no checksum covers (a Clonezilla image's boot code, for one).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from archive import open_archive
from archive.base import Archive, Damage
from archive.roles import plain_name
from restore_tui.coverage import unchecked_lines
from restore_tui.progress import ProgressPrinter, human_bytes


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="read the whole backup and check that nothing in it is damaged",
        description="Read every byte of a backup and check it against its checksum. "
        "Exit code 0 means the backup is sound.",
    )
    parser.add_argument("archive", metavar="ARCHIVE", help="the backup file or folder")
    parser.set_defaults(run=run)


def damage_line(arc: Archive, damage: Damage) -> str:
    if damage.partition is None:
        where = "the start of the disk (track 0)"
    else:
        try:
            role = plain_name(arc.manifest.image(damage.partition).role)
            where = f"partition {damage.partition} ({role})"
        except KeyError:
            where = f"partition {damage.partition}"
    return f"{where}, byte offset {damage.offset}: {damage.message}"


def run(args: argparse.Namespace) -> int:
    with open_archive(args.archive) as arc:
        printer = ProgressPrinter("Checking", arc.manifest.stored_bytes())
        report = arc.verify(printer)
        printer.finish()
        if report.ok:
            print(
                f"The backup is sound: {report.checked_chunks} pieces, "
                f"{human_bytes(report.checked_bytes)} of disk data, every checksum matches."
            )
            for line in unchecked_lines(arc):
                print(line)
            return 0
        print(f"The backup is damaged in {len(report.damage)} place(s):")
        for damage in report.damage:
            print(f"  {damage_line(arc, damage)}")
        for line in unchecked_lines(arc):
            print(line)
    print(
        "error: this backup is damaged; restoring the places listed would write wrong data. "
        "Use another copy of the backup if you have one.",
        file=sys.stderr,
    )
    return 1

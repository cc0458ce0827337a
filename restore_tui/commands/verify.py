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
from archive.base import Archive, Damage, Unchecked
from archive.roles import plain_name
from layout.units import human_size
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


# Who keeps no checksum, for the sentence that says so.
_MAKERS = {"Clonezilla image": "Clonezilla", "partclone image": "partclone"}


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _partition_words(arc: Archive, number: int | None) -> str:
    assert number is not None
    try:
        image = arc.manifest.image(number)
        entry = arc.manifest.table.partition(number)
    except KeyError:
        return f"partition {number}"
    return f"partition {number} ({plain_name(image.role, entry.filesystem)})"


def unchecked_lines(arc: Archive, unchecked: tuple[Unchecked, ...] | None = None) -> list[str]:
    """One sentence for the areas the format keeps no checksum for, one per such partition."""
    items = arc.unchecked() if unchecked is None else unchecked
    maker = _MAKERS.get(arc.format_name, "this kind of backup")
    areas: list[str] = []
    notes: list[str] = []
    for item in items:
        if item.area == "boot-code":
            areas.append("the boot code")
            notes.append("the boot code is the start-up code in the disk's first sector")
        elif item.area == "track0":
            areas.append(
                f"the {human_size(arc.manifest.boot.track0_stop)} before the first partition"
            )
            notes.append("the space before the first partition can hold more start-up code")
        elif item.area == "ebrs":
            areas.append("the records that link the logical partitions")
    lines: list[str] = []
    if areas:
        them = "it" if len(areas) == 1 else "them"
        these = "this" if len(areas) == 1 else "these"
        line = (
            f"Not covered by any checksum: {_join(areas)} ({maker} keeps no checksum for "
            f"{these}); restore-tui restores {them} as stored."
        )
        if notes:
            note = "; ".join(notes)
            line += f" {note[0].upper()}{note[1:]}."
        lines.append(line)
    for item in items:
        if item.area != "partition":
            continue
        what = _partition_words(arc, item.partition)
        if item.reason == "raw-copy":
            why = f"it was saved as a raw copy, which {maker} keeps no checksum for"
        else:
            why = "its image carries no checksums"
        lines.append(
            f"Not covered by any checksum: the data of {what}, because {why}; restore-tui "
            "restores it as stored."
        )
    return lines


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

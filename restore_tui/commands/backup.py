"""`restore-tui backup SOURCE OUT`: back up a whole disk or disk image into one archive file.

Shows progress with throughput and time left, and warns when a filesystem on
the source is mounted read-write (its files may change while they are read).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from archive.backup import backup, mounted_read_write
from archive.roles import plain_name
from restore_tui.errors import UserError
from restore_tui.progress import ProgressPrinter, human_bytes


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "backup",
        help="back up a whole disk (or disk image file) into one archive file",
        description="Back up a whole disk or disk image file: partition table, boot code, "
        "the start of the disk and every partition (only the used parts of ext, FAT and "
        "NTFS filesystems) into one archive file.",
    )
    parser.add_argument("source", metavar="SOURCE", help="the disk (/dev/sdX) or image file")
    parser.add_argument("out", metavar="OUT", help="the archive file to create")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    source: str = args.source
    out = Path(args.out)
    if not os.path.exists(source):
        raise UserError(f"{source} does not exist; give the disk (/dev/sdX) or image file")
    if out.exists():
        raise UserError(f"{out} already exists; choose another name, or delete it first")
    if not out.parent.is_dir():
        raise UserError(f"the folder {out.parent} does not exist; create it or choose another")
    for where in mounted_read_write(source):
        print(
            f"warning: {where} is mounted read-write, so its files may change while they are "
            "read and the backup may not match any single moment. For a reliable backup, "
            "unmount it or start the computer from rescue media.",
            file=sys.stderr,
        )
    printer = ProgressPrinter("Backing up", 0)
    result = backup(source, out, progress=printer)
    printer.finish()
    manifest = result.manifest
    print(f"Backup written to {result.path}")
    print(
        f"  {len(manifest.partitions)} partition(s); {human_bytes(result.stored_bytes)} of disk "
        f"data stored in {human_bytes(result.archive_bytes)}."
    )
    for image in manifest.partitions:
        if image.capture == "all-sectors":
            print(f"  partition {image.number} ({plain_name(image.role)}): {image.capture_note}")
    return 0

"""`restore-tui convert CLONEZILLA_DIR OUT.rtui`: import a Clonezilla image into the native format.

A Clonezilla (or partclone) image is one compressed stream per partition, so it
cannot be mounted or browsed; the converted backup can, and restores exactly the
same bytes. Every partclone checksum is checked on the way; the result is read
back and verified before it gets its name, so a file named OUT is always whole.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from archive.convert import convert
from restore_tui.errors import UserError
from restore_tui.progress import ProgressPrinter, human_bytes


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="turn a Clonezilla image folder into a restore-tui backup (to mount or browse it)",
        description="Convert a Clonezilla image folder (or a partclone image) into one "
        "restore-tui backup file, checking every checksum on the way. The result can be "
        "mounted, browsed with `restore-tui files`, verified and restored.",
    )
    parser.add_argument("source", metavar="CLONEZILLA_DIR", help="the Clonezilla image folder")
    parser.add_argument("out", metavar="OUT", help="the backup file to create (.rtui)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists():
        raise UserError(f"{out} already exists; choose another name, or delete it first")
    if not out.parent.is_dir():
        raise UserError(f"the folder {out.parent} does not exist; create it or choose another")
    printer = ProgressPrinter("Converting", 0)
    manifest = convert(args.source, out, printer)
    printer.finish()
    stored = manifest.stored_bytes()
    print(f"Converted {args.source} into {out}")
    print(
        f"  {len(manifest.partitions)} partition(s); {human_bytes(stored)} of disk data, every "
        f"checksum checked; {human_bytes(out.stat().st_size)} on disk."
    )
    print(f"  Look inside it: restore-tui files {out}   (or restore-tui mount {out} FOLDER)")
    return 0

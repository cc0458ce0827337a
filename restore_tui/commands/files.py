"""`restore-tui files BACKUP [PATH]`: list a folder inside a backup, or copy files out.

``--extract PATH DEST`` copies a file or folder out (never over an existing one).
The backup is mounted read-only in a private folder for the command and taken
down again before it returns, whatever happens. ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from restore_tui.commands.inspect import render_table
from restore_tui.looking import Entry, copy_out, entry_of, list_folder, look_inside, resolve
from restore_tui.progress import ProgressPrinter, human_bytes


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "files",
        help="list the files in a backup, or copy some out, without restoring it",
        description="List a folder inside a backup (name, type, size, modified), or copy a "
        "file or folder out of it with --extract. Without --partition, the top level holds "
        "one folder per partition, named <number>-<label>.",
    )
    parser.add_argument("archive", metavar="BACKUP", help="the backup file")
    parser.add_argument(
        "path", metavar="PATH", nargs="?", default="", help="the folder to list (before options)"
    )
    parser.add_argument("--partition", type=int, metavar="N", help="look inside partition N")
    parser.add_argument(
        "--extract",
        nargs=2,
        metavar=("PATH", "DEST"),
        help="copy PATH out of the backup to DEST (into DEST when it is a folder)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.set_defaults(run=run)


def _row(e: Entry) -> tuple[str, ...]:
    name = e.name + ("/" if e.kind == "folder" else "")
    if e.target is not None:
        name += f" -> {e.target}"
    size = "" if e.kind == "folder" else human_bytes(e.size)
    return (e.kind, size, e.modified.strftime("%Y-%m-%d %H:%M"), name)


def _list(args: argparse.Namespace, root: Path) -> int:
    where = resolve(root, args.path)
    entries = list_folder(where) if where.is_dir() and not where.is_symlink() else [entry_of(where)]
    shown = str(where.relative_to(root)) if where != root else ""
    if args.json:
        out = {
            "backup": args.archive,
            "partition": args.partition,
            "path": shown,
            "entries": [e.as_json() for e in entries],
        }
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    if not entries:
        print(f"{shown or 'The top level'} is empty.")
        return 0
    print(render_table(("Type", "Size", "Modified (UTC)", "Name"), [_row(e) for e in entries]))
    return 0


def _extract(args: argparse.Namespace, root: Path) -> int:
    wanted, dest = args.extract
    src = resolve(root, wanted)
    printer = None if args.json else ProgressPrinter("Copying", 0)
    result = copy_out(src, Path(dest), printer)
    if printer is not None:
        printer.finish()
    if args.json:
        out = {
            "copied": str(result.path),
            "files": result.files,
            "bytes": result.bytes,
            "skipped": result.skipped,
        }
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    print(f"Copied {src.relative_to(root)} to {result.path}: {result.files} file(s), "
          f"{human_bytes(result.bytes)}.")  # fmt: skip
    for skipped in result.skipped:
        print(f"  not copied (a device or socket, not a file): {Path(skipped).relative_to(root)}")
    return 0


def run(args: argparse.Namespace) -> int:
    with look_inside(args.archive, args.partition) as root:
        if args.extract:
            return _extract(args, root)
        return _list(args, root)

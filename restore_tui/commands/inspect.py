"""`restore-tui inspect ARCHIVE [--json]`: what a backup holds, in plain words.

The source disk first (model, size, serial, connection, date), then a table of
partitions with their role, size, used space, label and filesystem.
"""

from __future__ import annotations

import argparse
from typing import Any

from archive import open_archive
from archive.base import Archive
from archive.roles import plain_name
from restore_tui.progress import human_bytes


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="show what a backup holds: the disk it came from and its partitions",
        description="Show the disk a backup came from and each partition in it, without "
        "reading the data.",
    )
    parser.add_argument("archive", metavar="ARCHIVE", help="the backup file or folder")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")
    parser.set_defaults(run=run)


def source_line(arc: Archive) -> str:
    m = arc.manifest
    ident = m.source.identity
    if ident.bus == "image":
        name = "Disk image file"
    elif ident.model:
        name = (
            ident.model
            if not ident.vendor or ident.vendor in ident.model
            else (f"{ident.vendor} {ident.model}")
        )
    else:
        name = "Unknown model"
    parts = [name, human_bytes(ident.size_bytes)]
    if ident.serial:
        parts.append(f"serial {ident.serial}")
    if ident.bus and ident.bus != "image":
        parts.append(ident.bus)
    made = m.created.strftime("%Y-%m-%d %H:%M %Z").strip()
    return f"Backup of: {' · '.join(parts)} — made {made} from {m.source.device}"


def table_line(arc: Archive) -> str:
    t = arc.manifest.table
    if t.scheme == "gpt":
        return f"Partition table: GPT, disk GUID {t.gpt_disk_guid}"
    return f"Partition table: MBR, disk signature {t.mbr_signature}"


def partition_rows(arc: Archive) -> list[tuple[str, ...]]:
    m = arc.manifest
    ss = m.table.sector_size
    rows: list[tuple[str, ...]] = []
    for p in m.table.partitions:
        try:
            image = m.image(p.number)
        except KeyError:
            image = None
        role = plain_name(image.role, p.filesystem) if image else "not in this backup"
        used = "—"
        if image is not None and image.used_bytes is not None:
            used = human_bytes(image.used_bytes)
        elif image is not None and image.capture == "all-sectors":
            used = "not known"
        rows.append(
            (
                str(p.number),
                role,
                human_bytes(p.length_lba * ss),
                used,
                p.label or p.gpt_name or "",
                p.filesystem or ("—" if p.kind == "extended" else "none recognised"),
            )
        )
    return rows


def render_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    with open_archive(args.archive) as arc:
        if args.json:
            print(arc.manifest.model_dump_json(indent=2))
            return 0
        print(source_line(arc))
        print(table_line(arc))
        print()
        header = ("#", "What it is", "Size", "Used", "Label", "Filesystem")
        print(render_table(header, partition_rows(arc)))
    return 0

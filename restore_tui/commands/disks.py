"""`restore-tui disks`: the disks attached now, named by what they are.

Each disk is shown as "model · size · serial · bus" first and its /dev name
second (that name can change between boots), then its partitions and what is in use.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from layout.probe import ProbedDisk, ProbeError, dump_disks, human_size
from restore_tui.commands.disk_options import add_disk_options, probe_from_args
from restore_tui.errors import UserError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "disks",
        help="list the disks attached now, by model, size, serial and connection",
        description="List the disks attached now. Each is named by model, size, serial and "
        "connection; the /dev name comes second because it can change between boots.",
    )
    parser.add_argument("--json", action="store_true", help="print the disks as JSON")
    add_disk_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        disks = probe_from_args(args).disks()
    except ProbeError as exc:
        raise UserError(str(exc)) from exc
    if args.json:
        sys.stdout.write(dump_disks(disks))
        return 0
    if not disks:
        print("No disks found. Attach the disk and run this again, or pass --image FILE.")
        return 0
    print("\n\n".join(render_disk(d) for d in disks))
    return 0


def partition_lines(disk: ProbedDisk) -> list[str]:
    """One line per partition: number, size, filesystem and label."""
    table = disk.table
    if table is None:
        if disk.table_problem:
            return [f"  partition table damaged: {disk.table_problem}"]
        if any(m.startswith("partition table unknown") for m in disk.missing_facts):
            return ["  partition table not read (see the note below)"]
        return ["  no partition table (blank, or a filesystem on the whole disk)"]
    scheme = "GPT" if table.scheme == "gpt" else "MBR"
    ident = (
        f"disk GUID {table.gpt_disk_guid}"
        if table.scheme == "gpt"
        else f"disk signature {table.mbr_signature}"
    )
    lines = [f"  {scheme} partition table, {ident}"]
    ss = table.sector_size
    for p in table.partitions:
        size = human_size(p.length_lba * ss)
        if p.kind == "extended":
            lines.append(f"  {p.number:>3}  {size:>10}  extended (holds the logical partitions)")
            continue
        fs = p.filesystem or "(no filesystem recognised)"
        label = f'"{p.label}"' if p.label else (f'"{p.gpt_name}"' if p.gpt_name else "no label")
        logical = "  (logical)" if p.kind == "logical" else ""
        lines.append(f"  {p.number:>3}  {size:>10}  {fs:<8}  {label}{logical}")
    for region in disk.free:
        where = " inside the extended partition" if region.inside_extended else ""
        lines.append(f"       {human_size(region.size_bytes):>10}  unallocated{where}")
    return lines


def render_disk(disk: ProbedDisk) -> str:
    lines = [disk.headline, f"  {disk.device_note}"]
    lines.extend(partition_lines(disk))
    notes: list[str] = []
    notes.extend(f"in use: {n}" for n in disk.in_use)
    if disk.read_only:
        notes.append("read-only: nothing can be written to it")
    if disk.removable:
        notes.append("removable")
    if disk.identity.wwn:
        notes.append(f"WWN {disk.identity.wwn}")
    if disk.identity.logical_sector_size != 512:
        notes.append(f"{disk.identity.logical_sector_size}-byte sectors")
    notes.extend(f"note: {m}" for m in disk.missing_facts)
    lines.extend(f"  {n}" for n in notes)
    return "\n".join(lines)

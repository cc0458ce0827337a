"""`restore-tui plan ARCHIVE`: the dry-run preview of a restore, as text or JSON; writes nothing.

The target is a /dev disk or an image file, or the one attached disk that is
clearly the backed-up one; blocked targets are refused with their reasons.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

from archive import open_archive
from layout.plan import Plan
from layout.probe import ProbedDisk
from restore_tui.commands.disk_options import add_disk_options, probe_from_args
from restore_tui.commands.restore import add_grow_option, add_replace_option, choices_from
from restore_tui.errors import UserError
from restore_tui.flow import Flow
from restore_tui.matching import Job, choice_explanation, choose_target
from restore_tui.plan_text import render_text


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="show exactly what a restore would change, writing nothing",
        description="Plan a restore and show it: the target disk's layout before and after, "
        "what will be destroyed, and every step with its exact place on the disk. Nothing is "
        "written to any disk.",
    )
    parser.add_argument("archive", metavar="ARCHIVE", help="the backup file or folder")
    parser.add_argument(
        "--target",
        metavar="DISK",
        help="the disk to restore onto: a /dev path, a disk image file or serial:S (default: the "
        "attached disk that is clearly the backed-up one)",
    )
    parser.add_argument(
        "--partition",
        metavar="N",
        type=int,
        help="restore only partition N of the backup, into free space on the target",
    )
    parser.add_argument(
        "--region",
        metavar="START_LBA",
        type=int,
        help="with --partition: the free space to use, by a sector inside it (default: the "
        "first free space the partition fits in)",
    )
    add_replace_option(parser)
    add_grow_option(parser)
    parser.add_argument(
        "--new-ids",
        action="store_true",
        help="give the restored disk fresh disk and partition identifiers",
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--out", metavar="PLAN.json", help="also save the plan to this file")
    parser.add_argument(
        "--exact", action="store_true", help="show exact sector ranges and byte extents"
    )
    add_disk_options(parser)
    parser.set_defaults(run=run)


def _is_image(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _same_device(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _pick_target(args: argparse.Namespace, flow: Flow, job: Job) -> ProbedDisk:
    if args.target:
        return flow.disk(args.target)  # planning refuses it if it is blocked for the job
    matches = flow.candidates(job)
    chosen = choose_target(matches)
    if chosen is None:
        raise UserError(choice_explanation(matches))
    print(choice_explanation(matches), file=sys.stderr)
    return chosen.disk


def _save(plan: Plan, out: str) -> None:
    """Write the plan JSON atomically: a temporary file, flushed, then renamed."""
    path = Path(out)
    if path.exists() and not path.is_file():
        raise UserError(f"{out} is not a regular file; choose a file name for the plan")
    if path.exists() and _same_device(str(path), plan.target.device):
        raise UserError(f"{out} is the target disk image itself; choose another file name")
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(plan.to_json() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_plan(args: argparse.Namespace) -> Plan:
    """Open the archive, probe the disks, pick the target and plan; raises UserError."""
    extra = [args.target] if args.target and _is_image(args.target) else []
    with open_archive(args.archive) as archive:
        choices = choices_from(args, archive.manifest)
        flow = Flow(archive, probe_from_args(args, extra))
        return flow.plan(_pick_target(args, flow, choices.job), choices)


def run(args: argparse.Namespace) -> int:
    plan = make_plan(args)
    if args.out:
        _save(plan, args.out)
    if args.json:
        print(plan.to_json())
    else:
        print(render_text(plan, exact=args.exact), end="")
        if args.out:
            print(f"\nPlan saved to {args.out}. Nothing was written to any disk.")
    return 0

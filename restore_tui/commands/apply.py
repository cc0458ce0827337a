"""`restore-tui apply PLAN.json`: execute a saved plan, after checking it still fits the disk.

The target must still be the disk the plan names (identity, size) with the table
it had when planned; then the same staged engine as `restore` runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from archive import open_archive
from layout.plan import Plan
from restore_tui.commands.restore import add_run_options, execute, probe_target
from restore_tui.errors import UserError
from restore_tui.journal import find_for_archive


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "apply",
        help="execute a plan saved with `restore-tui plan --out PLAN.json`",
        description="Check that the disk still matches the saved plan (same disk, same size, "
        "same partition table), ask for confirmation, then restore in stages.",
    )
    parser.add_argument("plan", metavar="PLAN.json", help="the saved plan")
    parser.add_argument(
        "--target",
        metavar="DISK",
        help="the disk to write (default: the plan's device; its identity must match)",
    )
    parser.add_argument(
        "--archive",
        metavar="ARCHIVE",
        help="the backup (default: the path in the plan; another copy of the same backup works)",
    )
    add_run_options(parser)
    parser.set_defaults(run=run)


def load_plan(path: str) -> Plan:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UserError(f"cannot read the plan {path}: {exc.strerror}") from exc
    try:
        return Plan.from_json(text)
    except ValidationError as exc:
        raise UserError(
            f"{path} is not a restore-tui plan or it is damaged ({exc.error_count()} problems); "
            "make it again with `restore-tui plan ... --out PLAN.json`"
        ) from exc


def run(args: argparse.Namespace) -> int:
    plan = load_plan(args.plan)
    with open_archive(args.archive or plan.archive.path) as archive:
        probe, disk = probe_target(args.target or plan.target.device)
        journal = find_for_archive(archive.path)
        if journal is not None and journal.record.plan_digest != plan.digest():
            journal = None  # another plan's record: this apply starts afresh and replaces it
        return execute(
            plan,
            archive,
            probe,
            disk,
            args,
            journal=journal,
            plan_path=str(Path(args.plan).absolute()),
        )

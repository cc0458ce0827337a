"""`restore-tui apply PLAN.json`: execute a saved plan, once planning it again gives the same.

The file records the choices and, for review, what they lead to. Apply plans those
choices again from the backup and the disk as they are now and runs only when the
result equals the file: an edited, stale or truncated plan is refused, nothing written.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from archive import open_archive
from restore_tui.commands.restore import add_run_options, execute, target_probe
from restore_tui.flow import Flow, load_plan_file


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


def run(args: argparse.Namespace) -> int:
    saved = load_plan_file(args.plan)
    target = args.target or saved.target.device
    with open_archive(args.archive or saved.archive.path) as archive:
        flow = Flow(archive, target_probe(target))
        disk = flow.disk(target)
        journal = flow.unfinished()
        if journal is not None and journal.record.plan_digest != saved.digest():
            journal = None  # another plan's record: this apply starts afresh and replaces it
        if journal is None or not journal.record.started_writing:
            # Only what planning gives now runs, and only when it is what the file shows.
            saved = flow.rederive(saved, disk)
        return execute(
            flow,
            saved,
            disk,
            args,
            journal=journal,
            plan_path=str(Path(args.plan).absolute()),
        )

"""`restore-tui resume [ARCHIVE]`: continue an interrupted restore from its last checkpoint.

The journal names the plan, the backup and the disk; resume refuses a disk that
is not that one and re-checks the last written piece before going on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from archive import open_archive
from restore_tui.commands.restore import add_run_options, execute, target_probe
from restore_tui.errors import UserError
from restore_tui.flow import Flow
from restore_tui.journal import (
    Journal,
    JournalError,
    candidate_paths,
    describe_disk,
    find_unfinished,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "resume",
        help="continue an interrupted restore from its last checkpoint",
        description="Find the record of an interrupted restore (beside the backup, or in "
        "~/.local/state/restore-tui) and continue it on the same disk.",
    )
    parser.add_argument(
        "archive",
        metavar="ARCHIVE",
        nargs="?",
        help="the backup being restored (a good copy of it works too)",
    )
    parser.add_argument("--journal", metavar="FILE", help="the restore record to continue")
    parser.add_argument(
        "--target",
        metavar="DISK",
        help="the disk being restored, when more than one attached disk could be it (its "
        "identity must match; without it, the disk is found by what it is)",
    )
    add_run_options(parser)
    parser.set_defaults(run=run)


def _finished_journal(archive_path: str) -> Journal | None:
    """The record of a restore of this backup that already finished, if any."""
    for path in candidate_paths(archive_path):
        try:
            journal = Journal.load(path)
        except JournalError:
            continue
        if journal.record.finished:
            return journal
    return None


def find_journal(args: argparse.Namespace) -> Journal:
    if args.journal:
        try:
            return Journal.load(Path(args.journal))
        except JournalError as exc:
            raise UserError(str(exc)) from exc
    if args.archive:
        with open_archive(args.archive) as archive:
            journal = Flow(archive, target_probe()).unfinished()
        if journal is None:
            done = _finished_journal(args.archive)
            if done is not None:
                return done
            raise UserError(
                f"no interrupted restore of {args.archive} was found (looked beside it and in "
                "the state folder); there is nothing to resume. Start it with "
                "`restore-tui restore`"
            )
        return journal
    found = find_unfinished()
    if not found:
        raise UserError(
            "no interrupted restore was found here; name the backup: `restore-tui resume ARCHIVE`"
        )
    if len(found) > 1:
        listing = "\n".join(f"  {s.describe()} — {s.archive_path}" for s in found)
        raise UserError(
            "more than one interrupted restore was found; name the backup to continue:\n" + listing
        )
    try:
        return Journal.load(found[0].path)
    except JournalError as exc:
        raise UserError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    journal = find_journal(args)
    record = journal.record
    if record.finished:
        onto = describe_disk(record)
        print(
            f"The last restore of this backup, onto {onto}, finished "
            f"{record.updated:%Y-%m-%d %H:%M} UTC (record: {journal.path}); there is nothing "
            "to resume. To restore again, use `restore-tui restore`."
        )
        return 0
    summary = journal.summary()
    sys.stderr.write(f"{summary.describe()}\nRecord: {journal.path}\n")
    with open_archive(args.archive or record.archive_path) as archive:
        flow = Flow(archive, target_probe(args.target, record.target_path))
        if args.target:
            disk = flow.disk(args.target)
        else:
            located = flow.locate(record)
            disk = located.disk
            if located.renamed is not None:
                sys.stderr.write(f"The disk's name changed: {located.renamed.text}.\n")
        return execute(
            flow,
            record.plan,
            disk,
            args,
            journal=journal,
            plan_path=record.plan_path,
            what="continues the interrupted restore",
        )

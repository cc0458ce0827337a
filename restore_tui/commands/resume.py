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
from archive.errors import ArchiveError
from restore_tui.commands.restore import add_run_options, execute, probe_target
from restore_tui.engine import manifest_digest
from restore_tui.errors import UserError
from restore_tui.journal import (
    Journal,
    JournalError,
    candidate_paths,
    find_for_archive,
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
        help="where the disk is now, if its /dev name changed (its identity must match)",
    )
    add_run_options(parser)
    parser.set_defaults(run=run)


def _journal_for_copy(archive_path: str) -> Journal | None:
    """An unfinished journal for this backup's contents, recorded under another path."""
    try:
        with open_archive(archive_path) as archive:
            digest = manifest_digest(archive.manifest)
    except ArchiveError:
        return None
    for summary in find_unfinished():
        try:
            journal = Journal.load(summary.path)
        except JournalError:
            continue
        if journal.record.plan.archive.manifest_digest == digest:
            return journal
    return None


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
        journal = find_for_archive(args.archive) or _journal_for_copy(args.archive)
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
        print(f"That restore already finished (record: {journal.path}); nothing to do.")
        return 0
    summary = journal.summary()
    sys.stderr.write(f"{summary.describe()}\nRecord: {journal.path}\n")
    archive_path = args.archive or record.archive_path
    with open_archive(archive_path) as archive:
        probe, disk = probe_target(args.target or record.target_path)
        return execute(
            record.plan,
            archive,
            probe,
            disk,
            args,
            journal=journal,
            plan_path=record.plan_path,
            what="continues the interrupted restore",
        )

"""`restore-tui [ARCHIVE] [--dry-run] [--image FILE...]`: open the guided wizard.

Bare `restore-tui` lands here (see ``restore_tui.cli``); `--dry-run` only previews.
"""

from __future__ import annotations

import argparse
from typing import Any

from restore_tui.commands.disk_options import add_disk_options, probe_from_args


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "wizard",
        help="open the guided restore (also what plain `restore-tui` does)",
        description="Walk through a restore step by step: choose the backup, check it, "
        "choose the disk, see exactly what will change, then restore with checkpoints.",
    )
    parser.add_argument(
        "archive", metavar="ARCHIVE", nargs="?", help="the backup file or Clonezilla folder"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="only show what a restore would change; nothing is written",
    )
    add_disk_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from restore_tui.app import WizardOptions, run_wizard

    probe = probe_from_args(args)
    return run_wizard(WizardOptions(archive_path=args.archive, dry_run=args.dry_run, probe=probe))

"""The `restore-tui` command line: sub-commands, exit codes, and `error:` messages.

Each sub-command lives in its own module under ``restore_tui.commands`` and
exposes ``register(subparsers)``; running it returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from archive.errors import ArchiveError
from restore_tui.errors import UserError

# Order is the order of `restore-tui --help`.
COMMAND_MODULES = (
    "backup",
    "inspect",
    "verify",
    "convert",
    "mount",
    "umount",
    "files",
    "disks",
    "backups",
    "match",
    "plan",
    "restore",
    "apply",
    "resume",
    "demo",
    "wizard",
)


def build_parser(only: str | None = None) -> tuple[argparse.ArgumentParser, set[str]]:
    """The parser, and the names of the sub-commands present in this tree.

    With ``only``, just that sub-command is registered: a command then imports only what
    it needs (``mount`` alone pulls in trio and pyfuse3, a fifth of a restore's start-up).
    """
    parser = argparse.ArgumentParser(
        prog="restore-tui",
        description="Guided restore of whole-disk backups: finds the right disk by what it is, "
        "shows exactly what will change, and restores in stages that survive a reboot.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names: set[str] = set()
    for name in COMMAND_MODULES if only is None else (only,):
        try:
            module = importlib.import_module(f"restore_tui.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"restore_tui.commands.{name}":
                continue  # not built yet in this tree
            raise
        module.register(sub)
        names.add(name)
    return parser, names


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    named = args_list[0] if args_list and args_list[0] in COMMAND_MODULES else None
    parser, commands = build_parser(only=named)
    # `restore-tui`, `restore-tui ARCHIVE` and `restore-tui --dry-run` open the wizard.
    opens_wizard = not args_list or args_list[0] == "--dry-run" or (
        args_list[0] not in commands and not args_list[0].startswith("-")
    )
    if opens_wizard and "wizard" in commands:
        args_list = ["wizard", *args_list]
    args = parser.parse_args(args_list)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args))
    except (UserError, ArchiveError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "error: interrupted before finishing. Nothing half-written was left looking "
            "complete; run the same command again (a restore continues from its last "
            "checkpoint).",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    # Run through the package's module, not this __main__ copy, so the exception
    # classes commands raise are the ones main() catches.
    from restore_tui.cli import main as package_main

    sys.exit(package_main())

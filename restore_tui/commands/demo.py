"""`restore-tui demo [--keep] [--no-tui] [--folder DIR]`: try the wizard on sample disks.

Builds sample disks, backs them up and makes scratch targets in a temporary folder
(no root, no real disk), then opens the wizard on them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="try restore-tui on sample disk images (no root, no real disk touched)",
        description="Build two sample disks (a Windows-like MBR disk and a Linux GPT disk), "
        "back them up, make empty target disks — all image files in a temporary folder — "
        "and open the wizard on them.",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder afterwards")
    parser.add_argument(
        "--no-tui",
        action="store_true",
        help="print the walk-through (backup, disks, plan) as text instead of opening the "
        "wizard; for machines without a terminal",
    )
    parser.add_argument(
        "--folder",
        metavar="DIR",
        type=Path,
        help="build the demo in DIR instead of a new temporary folder (it is kept)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from restore_tui.demo import run_demo

    return run_demo(keep=args.keep, no_tui=args.no_tui, folder=args.folder)

"""`restore-tui match ARCHIVE`: which attached disk is the one the backup came from.

Every disk is listed best first with the evidence for it in plain words, and
with what stops it from being restored onto (holds the backup, in use, too small).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from archive import open_archive
from archive.manifest import ArchiveManifest
from layout.probe import Probe, human_size
from restore_tui.commands.disk_options import add_disk_options, probe_from_args
from restore_tui.flow import Flow
from restore_tui.matching import Match, choice_explanation


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "match",
        help="find which attached disk the backup belongs on, with the reasons",
        description="Compare every attached disk with the disk the backup was made from: "
        "disk signature or GUID, serial, model, size, partitions. Best match first; disks "
        "that cannot be restored onto say why.",
    )
    parser.add_argument("archive", metavar="ARCHIVE", help="the backup file or folder")
    parser.add_argument("--json", action="store_true", help="print the matches as JSON")
    add_disk_options(parser)
    parser.set_defaults(run=run)


def find_matches(archive_path: str, probe: Probe) -> tuple[ArchiveManifest, list[Match]]:
    """Open the archive, probe the disks and rank them for a whole-disk restore."""
    with open_archive(archive_path) as archive:
        return archive.manifest, Flow(archive, probe).candidates("full-disk")


def match_to_json(m: Match) -> dict[str, Any]:
    return {
        "device": m.device,
        "headline": m.disk.headline,
        "score": m.score,
        "strong": m.strong,
        "reasons": list(m.reasons),
        "blockers": [b.text for b in m.blockers],
        "blocker_codes": [b.code for b in m.blockers],
        "disk": json.loads(m.disk.model_dump_json()),
    }


def render_match(rank: int, m: Match) -> str:
    verdict = (
        "cannot be the target"
        if m.blockers
        else ("the backed-up disk" if m.strong else "could be used as the target")
    )
    lines = [f"{rank}. {m.disk.headline} — {verdict}", f"   {m.disk.device_note}"]
    lines.extend(f"   • {r}" for r in m.reasons)  # evidence for and against alike
    lines.extend(f"   ✗ {b.text}" for b in m.blockers)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    manifest, matches = find_matches(args.archive, probe_from_args(args))
    if args.json:
        print(json.dumps([match_to_json(m) for m in matches], indent=2))
        return 0
    source = manifest.source
    src = source.identity
    described = " · ".join(
        x
        for x in (
            src.model or "a disk of unknown model",
            human_size(src.size_bytes),
            f"serial {src.serial}" if src.serial else "no serial number recorded",
        )
        if x
    )
    print(f"The backup was made from {described} (it was {source.device} then)")
    print()
    if not matches:
        print("No disks found. Attach the disk to restore onto, or pass --image FILE.")
        return 0
    print("\n\n".join(render_match(i, m) for i, m in enumerate(matches, 1)))
    print()
    print(choice_explanation(matches))
    return 0

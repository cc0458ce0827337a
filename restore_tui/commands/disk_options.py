"""The disk-selection options shared by `disks`, `match` and `plan`, and the probe they ask for."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from layout.probe import ImageProbe, Probe, probe_for
from restore_tui.errors import UserError


def add_disk_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image",
        metavar="FILE",
        action="append",
        default=[],
        help="also consider this disk image file as a disk (repeatable)",
    )
    parser.add_argument(
        "--only-images",
        action="store_true",
        help="consider only the --image files, not this computer's disks",
    )
    parser.add_argument(
        "--no-udev",
        action="store_true",
        help="do not ask udev; read identity from sysfs and blkid only (minimal rescue systems)",
    )


def probe_from_args(args: argparse.Namespace, extra_images: Sequence[str] = ()) -> Probe:
    images = [*args.image, *extra_images]
    if args.only_images:
        if not images:
            raise UserError("--only-images needs at least one --image FILE")
        return ImageProbe(images)
    return probe_for(images, use_udev=not args.no_udev)

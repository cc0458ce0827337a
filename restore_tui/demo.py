"""`restore-tui demo`: sample disks, their backups and scratch target disks in a temporary
folder, then the wizard on them — no root needed and no real disk touched.

Everything lives in one folder of image files; the wizard is given an image-only
probe, so the computer's own disks are never even listed.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from archive.backup import backup
from restore_tui.journal import JOURNAL_SUFFIX
from restore_tui.sample import (
    MIB_LBA,
    SampleDisk,
    SamplePartition,
    build_blank,
    build_disk,
    build_gpt_linux,
    build_windows_mbr,
)

SAMPLE_MIB = 64
SPARE_SIGNATURE = "0D15C0DE"


@dataclass
class DemoSetup:
    """What the demo built, and where."""

    folder: Path
    windows: SampleDisk
    linux: SampleDisk
    windows_archive: Path
    linux_archive: Path
    new_disk: Path  # blank, larger than the samples: the usual full-disk target
    spare_disk: Path  # one partition and free space: for the one-partition job
    small_disk: Path  # too small for a full restore: shown refused
    notes: list[str] = field(default_factory=list)

    @property
    def archives(self) -> list[Path]:
        return [self.windows_archive, self.linux_archive]

    @property
    def disk_images(self) -> list[Path]:
        """Every disk the wizard is offered, the backed-up ones included."""
        return [
            self.new_disk,
            self.spare_disk,
            self.small_disk,
            self.windows.path,
            self.linux.path,
        ]


def _finished(record: Path) -> bool:
    try:
        return bool(json.loads(record.read_text()).get("finished"))
    except (OSError, ValueError, AttributeError):
        return False


def build_demo(
    folder: Path, *, size_mib: int = SAMPLE_MIB, say: Callable[[str], None] = lambda _m: None
) -> DemoSetup:
    """Build the sample disks, back them up, and make scratch targets inside ``folder``.

    Everything is built anew, so a restore record left in the folder by an earlier run
    would offer to resume onto disks that are no longer what it wrote: it is removed,
    and said so.
    """
    folder.mkdir(parents=True, exist_ok=True)
    old_records = sorted(folder.glob("*" + JOURNAL_SUFFIX))
    unfinished = [r for r in old_records if not _finished(r)]
    for record in old_records:
        record.unlink()
    if unfinished:
        say(
            "the disks are built anew, so the unfinished restore recorded here was removed: "
            "this demo starts afresh (to try resuming, use “Another backup” on the stopped "
            "screen, in the same run)"
        )
    say("building a Windows-like disk (MBR: System Reserved + Windows)…")
    windows = build_windows_mbr(folder / "windows-pc-disk.img", size_mib)
    say("building a Linux laptop disk (GPT: EFI System, root, data)…")
    linux = build_gpt_linux(folder / "linux-laptop-disk.img", size_mib)
    say("backing them up…")
    windows_archive = backup(str(windows.path), folder / "windows-pc.rtui").path
    linux_archive = backup(str(linux.path), folder / "linux-laptop.rtui").path
    say("making scratch target disks…")
    new_disk = build_blank(
        folder / f"new-disk-{size_mib + size_mib // 4}MiB.img", size_mib + size_mib // 4
    )
    small_disk = build_blank(folder / f"small-disk-{size_mib // 2}MiB.img", size_mib // 2)
    spare_mib = size_mib + size_mib // 2
    photos = SamplePartition(
        number=1,
        start_lba=MIB_LBA,
        length_lba=(spare_mib * 2 // 5) * MIB_LBA,
        fs="ext4",
        label="photos",
        mbr_type=0x83,
        files={"holiday/IMG_2041.JPG": bytes(range(256)) * 256, "notes.txt": b"keep me\n"},
    )
    spare = build_disk(
        folder / f"spare-disk-{spare_mib}MiB.img",
        spare_mib,
        "msdos",
        [photos],
        seed=11,
        signature=SPARE_SIGNATURE,
    )
    return DemoSetup(
        folder=folder,
        windows=windows,
        linux=linux,
        windows_archive=windows_archive,
        linux_archive=linux_archive,
        new_disk=new_disk,
        spare_disk=spare.path,
        small_disk=small_disk,
    )


def describe(setup: DemoSetup) -> str:
    """The demo folder's contents in plain words."""
    return "\n".join(
        [
            f"The demo folder is {setup.folder}",
            "  Backups:",
            f"    {setup.windows_archive.name}  — a Windows PC disk: System Reserved + Windows",
            f"    {setup.linux_archive.name}  — a Linux laptop disk: EFI System, root, data",
            "  Disks (image files, so nothing real is touched):",
            f"    {setup.windows.path.name}  — the Windows disk that was backed up",
            f"    {setup.linux.path.name}  — the Linux disk that was backed up",
            f"    {setup.new_disk.name}  — a new, empty disk, a bit larger",
            f"    {setup.spare_disk.name}  — a disk with one partition and free space",
            f"    {setup.small_disk.name}  — a disk too small for a whole-disk restore",
        ]
    )


def walk_through(setup: DemoSetup, out: Callable[[str], None] = print) -> None:
    """The non-interactive demo: what the wizard would show, as text."""
    from archive import open_archive
    from layout.plan import PlanChoices
    from layout.probe import ImageProbe, disk_words
    from restore_tui.commands.match import render_match
    from restore_tui.flow import Flow
    from restore_tui.plan_text import render_text
    from restore_tui.screens.backup import partition_rows
    from restore_tui.screens.common import when

    probe = ImageProbe([str(p) for p in setup.disk_images])
    with open_archive(setup.windows_archive) as archive:
        m = archive.manifest
        out("")
        out(f"1. The backup {setup.windows_archive.name}")
        out(f"   made {when(m.created)} from {disk_words(m.source.identity)}")
        for number, what, size, used, fs in partition_rows(archive):
            out(f"   partition {number}: {what} — {size}, {used} used, {fs}")
        report = archive.verify()
        verdict = "intact" if report.ok else f"DAMAGED ({len(report.damage)} places)"
        out(f"   checked: {verdict}")
        out("")
        out("2. The disks, best match first")
        flow = Flow(archive, probe)
        matches = flow.candidates("full-disk")
        listing = "\n\n".join(render_match(i, match) for i, match in enumerate(matches, 1))
        out(textwrap.indent(listing, "   "))
        target = next(x.disk for x in matches if x.disk.device == str(setup.new_disk))
        plan = flow.plan(target, PlanChoices(job="full-disk"))
        out("")
        out(f"3. Restoring the whole disk onto {setup.new_disk.name} (the preview):")
        for line in render_text(plan).splitlines():
            out("   " + line)
    out("")
    out("Nothing was written. Run `restore-tui demo` in a terminal to do it in the wizard.")


def run_demo(*, keep: bool, no_tui: bool, folder: Path | None = None) -> int:
    """Build the demo, then run the wizard (or the text walk-through); 0 on success."""
    made_here = folder is None
    where = Path(tempfile.mkdtemp(prefix="restore-tui-demo-")) if folder is None else folder
    print(f"restore-tui demo: working in {where}", file=sys.stderr)
    try:
        setup = build_demo(where, say=lambda m: print(f"  {m}", file=sys.stderr))
        print(describe(setup))
        if no_tui:
            walk_through(setup)
            return 0
        from layout.probe import ImageProbe
        from restore_tui.app import WizardOptions, run_wizard

        options = WizardOptions(
            probe=ImageProbe([str(p) for p in setup.disk_images]),
            backup_roots=lambda: [setup.folder],
            journal_dirs=[setup.folder],
            banner="Demo: the backups and disks are image files in " + str(setup.folder),
            next_steps=(
                "In real life: remove the rescue USB stick or CD, then restart the computer.",
                f"Here: the restored disk is the image file you chose in {setup.folder}.",
            ),
        )
        return run_wizard(options)
    finally:
        if keep or not made_here:
            print(f"Kept the demo folder: {where}", file=sys.stderr)
        else:
            shutil.rmtree(where, ignore_errors=True)
            print(
                f"Removed the demo folder {where} (nothing else was touched). To look at the "
                "restored images, or to try stopping and resuming, run `restore-tui demo --keep`.",
                file=sys.stderr,
            )

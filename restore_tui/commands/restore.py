"""`restore-tui restore ARCHIVE --target DISK`: plan and restore, in stages that survive a reboot.

Also holds what `apply` and `resume` share: the refusals, the deliberate
confirmation, progress lines, and running the engine so Ctrl+C leaves a checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from archive import open_archive
from archive.base import Archive
from layout.plan import Plan
from layout.probe import Probe, ProbedDisk, ProbeError, archive_disks, probe_for
from restore_tui.engine import (
    EngineError,
    ProgressEvent,
    RestoreCancelled,
    RestoreEngine,
    manifest_digest,
)
from restore_tui.errors import UserError
from restore_tui.journal import Journal, find_for_archive
from restore_tui.planner import PlanError, plan_full_disk, plan_one_partition
from restore_tui.progress import human_bytes, human_duration
from restore_tui.safety import disk_blockers, journal_refusals, plan_refusals


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "restore",
        help="restore a backup onto a disk (whole disk, or one partition into free space)",
        description="Plan the restore, show what it will change, ask for confirmation, then "
        "write in stages with a checkpoint after each. If it is interrupted (a reboot, a "
        "power cut), `restore-tui resume` continues from the last checkpoint.",
    )
    parser.add_argument("archive", metavar="ARCHIVE", help="the backup file or folder")
    parser.add_argument(
        "--target", required=True, metavar="DISK", help="the disk (/dev/...) or image file"
    )
    parser.add_argument(
        "--partition",
        type=int,
        metavar="N",
        help="restore only partition N of the backup, into free space on DISK",
    )
    parser.add_argument(
        "--region",
        type=int,
        metavar="LBA",
        help="with --partition: the free region starting at (or containing) this sector",
    )
    parser.add_argument(
        "--new-ids",
        action="store_true",
        help="give the restored disk/partition fresh identifiers (disk signature, GUIDs)",
    )
    add_run_options(parser)
    parser.set_defaults(run=run)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--yes", action="store_true", help="do not ask for confirmation (for scripts)"
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip reading back and checking each stage (faster, less safe)",
    )
    # For tests and slow media: how often progress inside a stage is recorded.
    parser.add_argument("--checkpoint-seconds", type=float, default=None, help=argparse.SUPPRESS)


# -- probing and refusing ----------------------------------------------------------------


def probe_target(device: str) -> tuple[Probe, ProbedDisk]:
    probe = probe_for([device] if os.path.isfile(device) else [])
    try:
        return probe, probe.disk(device)
    except ProbeError as exc:
        raise UserError(str(exc)) from exc


def refuse_if_blocked(disk: ProbedDisk, reasons: list[str]) -> None:
    if reasons:
        raise UserError(f"will not write to {disk.headline} ({disk.device}): " + "; ".join(reasons))


def archive_holders(probe: Probe, archive: Archive) -> list[str]:
    try:
        return archive_disks(probe, str(archive.path))
    except ProbeError:
        return []


# -- confirmation ------------------------------------------------------------------------


def confirm(disk: ProbedDisk, what: str, *, yes: bool, stream: TextIO | None = None) -> None:
    """A confirmation that cannot happen by accident: type the serial's end, or "erase"."""
    if yes:
        return
    out = stream or sys.stderr
    if not sys.stdin.isatty():
        raise UserError(
            f"restore-tui needs your confirmation before it {what}, and there is no terminal "
            "to ask on; add --yes to confirm without a terminal"
        )
    serial = (disk.identity.serial or "").strip()
    if len(serial) >= 4:
        word, hint = serial[-4:], f"the last 4 characters of its serial number ({serial})"
    else:
        word, hint = "erase", "the word erase"
    out.write(f"\nThis {what} on {disk.headline} — {disk.device_note}.\n")
    out.write(f"To go ahead, type {hint} and press Enter (anything else cancels): ")
    out.flush()
    try:
        answer = sys.stdin.readline().strip()
    except KeyboardInterrupt:
        answer = ""
    if answer.lower() != word.lower():
        raise UserError("not confirmed; nothing was written")


def show_plan(plan: Plan, disk: ProbedDisk, out: TextIO) -> None:
    out.write(f"Target: {disk.headline}\n        {disk.device_note}\n")
    if plan.erases:
        out.write(f"What is replaced: {plan.erases}\n")
    for warning in plan.warnings:
        out.write(f"Note: {warning}\n")
    out.write("Stages (a checkpoint after each):\n")
    for i, stage in enumerate(plan.stages, 1):
        out.write(f"  {i}. {stage.title}\n")


# -- progress ----------------------------------------------------------------------------


class ProgressLines:
    """Prints engine events: an updating line on a terminal, plain lines otherwise."""

    def __init__(self, stream: TextIO | None = None, *, plain_every_s: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = 0.25 if self.tty else plain_every_s
        self._last = -1e18
        self._last_checkpoint_line = -1e18
        self._width = 0

    def _line(self, text: str, *, keep: bool) -> None:
        if self.tty:
            pad = " " * max(0, self._width - len(text))
            self.stream.write("\r" + text + pad + ("\n" if keep else ""))
            self._width = 0 if keep else len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    @staticmethod
    def status(e: ProgressEvent) -> str:
        stage_pct = 100 * e.stage_done // e.stage_total if e.stage_total else 100
        overall_pct = 100 * e.overall_done // e.overall_total if e.overall_total else 100
        text = (
            f"stage {e.stage_number} of {e.stage_count}, {e.stage_title}: {stage_pct} % · "
            f"overall {overall_pct} % ({human_bytes(e.overall_done)} of "
            f"{human_bytes(e.overall_total)})"
        )
        if e.rate_bytes_s:
            text += f" · {human_bytes(e.rate_bytes_s)}/s"
        if e.eta_s is not None and e.overall_done < e.overall_total:
            text += f" · about {human_duration(e.eta_s)} left"
        return text

    def __call__(self, e: ProgressEvent) -> None:
        now = time.monotonic()
        if e.kind == "note":
            self._line(e.message, keep=True)
        elif e.kind == "stage-start":
            self._line(f"Stage {e.stage_number} of {e.stage_count}: {e.stage_title}", keep=True)
        elif e.kind in ("write", "verify"):
            if now - self._last >= self.every:
                self._last = now
                prefix = "checking: " if e.kind == "verify" else ""
                self._line(prefix + self.status(e), keep=False)
        elif e.kind == "checkpoint":
            # Every stage end is shown; inside a stage at most once a minute.
            at_stage_end = e.stage_done >= e.stage_total
            if at_stage_end or now - self._last_checkpoint_line >= 60:
                self._last_checkpoint_line = now
                overall = 100 * e.overall_done // e.overall_total if e.overall_total else 100
                self._line(
                    f"Checkpoint saved ({overall} % done, stage {e.stage_number} of "
                    f"{e.stage_count}) — safe to resume from here",
                    keep=True,
                )
        elif e.kind == "finished":
            self._line("All stages written and checked: the restore is complete.", keep=True)


# -- running the engine ------------------------------------------------------------------


def run_engine(engine: RestoreEngine) -> None:
    """Run in a worker thread so Ctrl+C asks the engine to stop at a checkpoint."""
    cancel = engine.cancel or threading.Event()
    engine.cancel = cancel
    failure: list[BaseException] = []

    def work() -> None:
        try:
            engine.run()
        except BaseException as exc:  # carried to the main thread and raised there
            failure.append(exc)

    worker = threading.Thread(target=work, name="restore-engine", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        sys.stderr.write("\nStopping after the current piece, at a checkpoint…\n")
        cancel.set()
        worker.join()
    if failure:
        raise failure[0]


def execute(
    plan: Plan,
    archive: Archive,
    probe: Probe,
    disk: ProbedDisk,
    args: argparse.Namespace,
    *,
    journal: Journal | None = None,
    plan_path: str | None = None,
    what: str = "erases what is described above",
) -> int:
    """Refuse, show, confirm, run; the common tail of restore, apply and resume."""
    reasons = disk_blockers(archive.manifest, disk, archive_holders(probe, archive))
    reasons += plan_refusals(plan, disk, journal.record if journal else None)
    if journal is not None:
        reasons += journal_refusals(journal.record, disk)
    refuse_if_blocked(disk, reasons)
    out = sys.stderr
    show_plan(plan, disk, out)
    confirm(disk, what, yes=args.yes)
    kwargs: dict[str, Any] = {}
    if getattr(args, "checkpoint_seconds", None) is not None:
        kwargs["checkpoint_seconds"] = args.checkpoint_seconds
    engine = RestoreEngine(
        plan,
        archive,
        disk.device,
        verify=not args.no_verify,
        journal=journal,
        plan_path=plan_path,
        target_identity=disk.identity,
        progress=ProgressLines(out),
        **kwargs,
    )
    try:
        run_engine(engine)
    except RestoreCancelled:
        raise
    except EngineError as exc:
        if engine.journal is not None:
            raise EngineError(f"{exc} (progress record: {engine.journal.path})") from exc
        raise
    where = engine.journal.path if engine.journal else None
    print(f"Restored onto {disk.headline} ({disk.device}).")
    if where:
        print(f"The record of this restore is kept in {where}.")
    return 0


def make_plan(archive: Archive, probe: Probe, disk: ProbedDisk, args: argparse.Namespace) -> Plan:
    manifest = archive.manifest
    digest = manifest_digest(manifest)
    try:
        others = [d for d in probe.disks() if d.device != disk.device]
    except ProbeError:
        others = []
    try:
        if args.partition is None:
            if args.region is not None:
                raise UserError("--region only goes with --partition N")
            return plan_full_disk(
                manifest,
                digest,
                str(archive.path),
                disk,
                new_ids=args.new_ids,
                other_disks=others,
            )
        return plan_one_partition(
            manifest,
            digest,
            str(archive.path),
            disk,
            args.partition,
            args.region,
            new_ids=args.new_ids,
            other_disks=others,
        )
    except PlanError as exc:
        raise UserError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    with open_archive(args.archive) as archive:
        probe, disk = probe_target(args.target)
        unfinished = find_for_archive(archive.path)
        if (
            unfinished is not None
            and not journal_refusals(unfinished.record, disk)
            and (Path(unfinished.record.target_path).resolve() == Path(disk.device).resolve())
        ):
            # The same backup onto the same disk was interrupted: continue it with the plan
            # it was following (a fresh plan would see the half-written disk instead).
            sys.stderr.write(
                f"An unfinished restore of this backup onto this disk was found: "
                f"{unfinished.summary().describe()}. Continuing it from its last checkpoint "
                f"(to start over instead, delete {unfinished.path}).\n"
            )
            return execute(
                unfinished.record.plan,
                archive,
                probe,
                disk,
                args,
                journal=unfinished,
                plan_path=unfinished.record.plan_path,
                what="continues the interrupted restore",
            )
        # Refuse a disk that can never be the target (it holds the backup, is in use) before
        # planning, whose "too small" would otherwise hide the real reason.
        holders = archive_holders(probe, archive)
        refuse_if_blocked(disk, disk_blockers(archive.manifest, disk, holders))
        plan = make_plan(archive, probe, disk, args)
        if unfinished is not None:
            sys.stderr.write(
                f"Note: an unfinished restore of this backup onto another disk is recorded in "
                f"{unfinished.path} ({unfinished.summary().describe()}); starting this restore "
                "replaces that record.\n"
            )
        return execute(plan, archive, probe, disk, args)

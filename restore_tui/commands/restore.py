"""`restore-tui restore ARCHIVE --target DISK`: plan and restore, in stages that survive a reboot.

Also holds what `apply` and `resume` share: the refusals, the deliberate
confirmation, progress lines, and running the engine so Ctrl+C leaves a checkpoint.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import textwrap
import threading
import time
from typing import Any, TextIO

from archive import open_archive
from archive.manifest import ArchiveManifest
from layout.plan import Plan, PlanChoices
from layout.probe import Probe, ProbedDisk, probe_for
from layout.validate import PlanError
from restore_tui.engine import (
    EngineError,
    ProgressEvent,
    RestoreCancelled,
    RestoreEngine,
)
from restore_tui.errors import UserError
from restore_tui.flow import Flow, Refused, confirmation_for, is_restore_target
from restore_tui.journal import Journal
from restore_tui.matching import Job
from restore_tui.planner import grow_choice
from restore_tui.progress import human_bytes, human_duration, rough_duration, stall_words


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
        "--target",
        required=True,
        metavar="DISK",
        help="the disk: /dev/..., a disk image file, or serial:S (the attached disk with "
        "serial number S, as `restore-tui disks` lists it)",
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
    add_replace_option(parser)
    add_grow_option(parser)
    parser.add_argument(
        "--new-ids",
        action="store_true",
        help="give the restored disk/partition fresh identifiers (disk signature, GUIDs)",
    )
    add_run_options(parser)
    parser.set_defaults(run=run)


def add_grow_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--grow",
        metavar="N|last|system",
        help="whole disk onto a larger disk: grow partition N (or the last one, or the system "
        "partition) into the free space after it, and its filesystem with it (resize2fs, "
        "ntfsresize)",
    )


def add_replace_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--replace",
        action="store_true",
        help="with --partition N: replace the partition on DISK that is backed-up partition "
        "N (found by its filesystem UUID, partition GUID, or place, size and filesystem) "
        "with its backed-up version; nothing else on DISK changes",
    )


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


# -- probing and confirming --------------------------------------------------------------


def target_probe(*targets: str | None) -> Probe:
    """This machine's disks, plus any target given as a disk image file."""
    return probe_for([t for t in targets if t and os.path.isfile(t)])


def confirm(
    disk: ProbedDisk, job: Job, what: str, *, yes: bool, stream: TextIO | None = None
) -> None:
    """A confirmation that cannot happen by accident: the words come from the flow."""
    if yes:
        return
    out = stream or sys.stderr
    if not sys.stdin.isatty():
        raise UserError(
            f"restore-tui needs your confirmation before it {what}, and there is no terminal "
            "to ask on; add --yes to confirm without a terminal"
        )
    wanted = confirmation_for(disk.identity, job)
    hint = (
        f"the last {len(wanted.word)} characters of its serial number ({disk.identity.serial})"
        if wanted.kind == "serial"
        else f"the word {wanted.word}"
    )
    out.write(f"\nThis {what} on {disk.headline} — {disk.device_note}.\n")
    out.write(f"To go ahead, type {hint} and press Enter (anything else cancels): ")
    out.flush()
    try:
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        answer = ""
    if not wanted.matches(answer):
        raise UserError("not confirmed; nothing was written")


def show_plan(plan: Plan, disk: ProbedDisk, out: TextIO, journal: Journal | None = None) -> None:
    """The plan in short; when continuing, what is done and what is left instead of what
    the disk held before the restore began (it holds half of the backup now)."""
    out.write(f"Target: {disk.headline}\n        {disk.device_note}\n")
    done = set(journal.record.completed_stages) if journal is not None else set()
    if journal is None:
        if plan.erases:
            out.write(f"What is replaced: {plan.erases}\n")
        for warning in plan.warnings:
            out.write(f"Note: {warning.text}\n")
    out.write("Stages (a checkpoint after each):\n")
    for i, stage in enumerate(plan.stages, 1):
        mark = " (done)" if stage.name in done else ""
        out.write(f"  {i}. {stage.title}{mark}\n")


# -- progress ----------------------------------------------------------------------------


class ProgressLines:
    """Prints engine events. On a terminal: one status line redrawn in place (``\\r`` and
    clear-to-end), shortened to fit the width rather than wrapped, with notes, stages,
    checkpoints and stalls on lines of their own, wrapped to the width. Otherwise (a log,
    a pipe): plain lines, one per note, stage and stage-end checkpoint, and a status line
    every ``plain_every_s`` seconds."""

    INDENT = "    "

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        plain_every_s: float = 10.0,
        width: int | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = 0.25 if self.tty else plain_every_s
        self.width = width  # None: the terminal's width, asked at each line
        self._last = -1e18
        self._last_checkpoint_line = -1e18
        self._last_stall_line = -1e18
        self._status_shown = False  # a status line is on the screen, to be redrawn
        self._lock = threading.Lock()  # events come from the engine and its stall watch

    def columns(self) -> int:
        """How many characters a line may hold: one less than the terminal is wide, so the
        cursor never wraps onto the next line by itself."""
        if self.width:
            return max(20, self.width - 1)
        try:
            cols = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            cols = shutil.get_terminal_size((80, 24)).columns
        return max(20, (cols or 80) - 1)

    def _keep(self, text: str) -> None:
        """A line that stays (wrapped on a terminal, under the status line's place)."""
        if self.tty:
            clear = "\r\x1b[K" if self._status_shown else ""
            lines = textwrap.wrap(text, width=self.columns(), subsequent_indent=self.INDENT) or [""]
            self.stream.write(clear + "\n".join(lines) + "\n")
            self._status_shown = False
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _status(self, variants: list[str]) -> None:
        """The status line: on a terminal the longest variant that fits, redrawn in place."""
        if self.tty:
            width = self.columns()
            text = next((v for v in variants if len(v) <= width), variants[-1][:width])
            self.stream.write("\r" + text + "\x1b[K")
            self._status_shown = True
        else:
            self.stream.write(variants[0] + "\n")
        self.stream.flush()

    @staticmethod
    def status_variants(e: ProgressEvent) -> list[str]:
        """The status, longest first: without the stage title, then without the rate, then
        without the byte counts and the time left; the overall percent always stays."""
        stage = f"stage {e.stage_number} of {e.stage_count}"
        done = f"overall {e.overall_percent} %"
        amounts = f" ({human_bytes(e.overall_done)} of {human_bytes(e.overall_total)})"
        rate = f" · {human_bytes(e.rate_bytes_s)}/s" if e.rate_bytes_s else ""
        left = ""
        if e.eta_s is not None and e.overall_done < e.overall_total:
            left = f" · about {human_duration(e.eta_s)} left"
        return [
            f"{stage}, {e.stage_title}: {e.stage_percent} % · {done}{amounts}{rate}{left}",
            f"{stage}: {e.stage_percent} % · {done}{amounts}{rate}{left}",
            f"{stage}: {e.stage_percent} % · {done}{amounts}{left}",
            f"{stage}: {e.stage_percent} % · {done}{left}",
            f"{stage}: {e.stage_percent} % · {done}",
            done,
        ]

    @classmethod
    def status(cls, e: ProgressEvent) -> str:
        return cls.status_variants(e)[0]

    def __call__(self, e: ProgressEvent) -> None:
        with self._lock:
            self._show(e)

    def _show(self, e: ProgressEvent) -> None:
        now = time.monotonic()
        if e.kind == "note":
            self._keep(e.message)
        elif e.kind == "stage-start":
            self._keep(f"Stage {e.stage_number} of {e.stage_count}: {e.stage_title}")
        elif e.kind == "stage-already-done":
            self._keep(f"Stage {e.stage_number} of {e.stage_count}: {e.stage_title} — already done")
        elif e.kind in ("write", "verify"):
            if now - self._last >= self.every:
                self._last = now
                prefix = "checking: " if e.kind == "verify" else ""
                self._status([prefix + v for v in self.status_variants(e)])
        elif e.kind == "checkpoint":
            # Every stage end is shown; inside a stage at most once a minute.
            at_stage_end = e.stage_done >= e.stage_total
            if at_stage_end or now - self._last_checkpoint_line >= 60:
                self._last_checkpoint_line = now
                self._keep(
                    f"Checkpoint saved ({e.overall_percent} % done, stage {e.stage_number} of "
                    f"{e.stage_count}) — safe to resume from here"
                )
        elif e.kind == "stalled" and e.waiting_on is not None:
            self._stalled(e, now)
        elif e.kind == "moving":
            self._last_stall_line = -1e18
            quiet = rough_duration(e.stalled_s or 0)
            self._keep(f"Data is moving again (nothing had moved for {quiet}).")
        elif e.kind == "finished":
            self._keep("All stages written and checked: the restore is complete.")

    def _stalled(self, e: ProgressEvent, now: float) -> None:
        assert e.waiting_on is not None
        quiet = e.stalled_s or 0
        first = self._last_stall_line < -1e17
        if first:
            self._last_stall_line = now
            self._keep(stall_words(e.waiting_on, quiet, STALL_WHAT_NOW))
        elif self.tty:
            disk = "the backup's disk" if e.waiting_on == "backup" else "the disk being restored"
            self._status(
                [
                    f"Still waiting for {disk}: nothing has moved for {rough_duration(quiet)}",
                    f"Nothing has moved for {rough_duration(quiet)}",
                ]
            )
        elif now - self._last_stall_line >= 60:
            self._last_stall_line = now
            self._keep(f"Still nothing has moved, for {rough_duration(quiet)} now.")


#: what the command line says one can do while nothing moves
STALL_WHAT_NOW = (
    "You can wait, or press Ctrl+C to stop safely — `restore-tui resume` continues later "
    "from the last checkpoint."
)


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
        if engine.stalled_on is not None:
            # The engine is stuck in a read or a write: it stops when that call returns.
            sys.stderr.write(
                "The disk is not answering, so this can take long. To leave at once, press "
                "Ctrl+C again: the last checkpoint is kept, and `restore-tui resume` "
                "continues from it.\n"
            )
        cancel.set()
        worker.join()
    if failure:
        raise failure[0]


def execute(
    flow: Flow,
    plan: Plan,
    disk: ProbedDisk,
    args: argparse.Namespace,
    *,
    journal: Journal | None = None,
    plan_path: str | None = None,
    what: str = "erases what is described above",
) -> int:
    """Refuse, show, confirm, run; the common tail of restore, apply and resume."""
    reasons = flow.refusals(plan, disk, journal.record if journal else None)
    if reasons:
        raise Refused(disk, reasons)
    out = sys.stderr
    show_plan(plan, disk, out, journal)
    confirm(disk, plan.job, what, yes=args.yes)
    engine = flow.engine(
        plan,
        disk.device,
        journal=journal,
        progress=ProgressLines(out),
        verify=not args.no_verify,
        plan_path=plan_path,
        checkpoint_seconds=getattr(args, "checkpoint_seconds", None),
    )
    try:
        run_engine(engine)
    except RestoreCancelled:
        raise
    except EngineError as exc:
        if engine.journal is not None:
            raise EngineError(f"{exc} (progress record: {engine.journal.path})") from exc
        raise
    if engine.journal is None or not engine.journal.record.finished:
        # Only the record says the restore is complete: never claim it otherwise.
        raise EngineError(
            f"the restore onto {disk.headline} stopped before the end; the disk is not usable "
            "until it is finished",
            resumable=True,
        )
    print(f"Restored onto {disk.headline} ({disk.device}).")
    if engine.journal is not None:
        print(f"The record of this restore is kept in {engine.journal.path}.")
    return 0


def choices_from(args: argparse.Namespace, manifest: ArchiveManifest | None = None) -> PlanChoices:
    """The choices given on the command line (``--grow`` needs the backup's ``manifest``
    to say which partition 'last' or 'system' is)."""
    if args.partition is None and args.region is not None:
        raise UserError("--region only applies with --partition N")
    replace = getattr(args, "replace", False)
    if replace and args.partition is None:
        raise UserError("--replace needs --partition N: the backed-up partition to put back")
    job: Job = "full-disk"
    if args.partition is not None:
        job = "replace-partition" if replace else "one-partition"
    grow = None
    if getattr(args, "grow", None) is not None:
        if manifest is None:
            raise UserError("--grow needs the backup")  # a bug: callers pass the manifest
        try:
            grow = grow_choice(manifest, args.grow)
        except PlanError as exc:
            raise UserError(str(exc)) from None
    return PlanChoices(
        job=job,
        grow=grow,
        partition=args.partition,
        region=args.region,
        new_ids=args.new_ids,
    )


def run(args: argparse.Namespace) -> int:
    with open_archive(args.archive) as archive:
        choices = choices_from(args, archive.manifest)
        flow = Flow(archive, target_probe(args.target))
        disk = flow.disk(args.target)
        unfinished = flow.unfinished()
        if unfinished is not None and is_restore_target(unfinished.record, disk):
            # The same backup onto the same disk was interrupted: continue it with the plan
            # it was following (a fresh plan would see the half-written disk instead).
            sys.stderr.write(
                f"An unfinished restore of this backup onto this disk was found: "
                f"{unfinished.summary().describe()}. Continuing it from its last checkpoint "
                f"(to start over instead, delete {unfinished.path}).\n"
            )
            return execute(
                flow,
                unfinished.record.plan,
                disk,
                args,
                journal=unfinished,
                plan_path=unfinished.record.plan_path,
                what="continues the interrupted restore",
            )
        plan = flow.plan(disk, choices)
        if unfinished is not None:
            sys.stderr.write(
                f"Note: an unfinished restore of this backup onto another disk is recorded in "
                f"{unfinished.path} ({unfinished.summary().describe()}); starting this restore "
                "replaces that record.\n"
            )
        return execute(flow, plan, disk, args)

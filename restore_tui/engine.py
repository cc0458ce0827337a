"""The staged restore engine: executes a plan's stages in order, with durable checkpoints.

It writes only through :class:`CheckedWriter` (the plan's extents), verifies each
stage by reading it back, and continues a stopped restore from its journal.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from archive.base import TRACK0, Archive, Area, Piece
from archive.errors import ArchiveError, CorruptData
from archive.manifest import Chunk
from layout.blockio import BLKRRPART, MediumReader, all_zeros, geometry_of_fd, same_bytes
from layout.models import DiskIdentity, PartitionTable
from layout.notices import Notice, notice
from layout.plan import Action, GrowFilesystem, Plan, RestoreArea, Stage, WriteBytes, ZeroRange
from layout.table_io import TableError, read_table, table_fingerprint
from restore_tui import growing
from restore_tui.datapath import ReadBackMismatch, ReadBehind, check_copy
from restore_tui.errors import UserError
from restore_tui.journal import Checkpoint, Journal, lost_at_restart
from restore_tui.matching import identity_differences
from restore_tui.progress import RateMeter, WaitingOn, percent
from restore_tui.writer import CheckedWriter, OutsidePlan, TargetOpenError

# Data is written in slices of this size: progress, cancellation and checkpoints
# happen between slices, so a 4 MiB chunk is not an indivisible step.
WRITE_SLICE = 1024 * 1024
ZERO_SLICE = 64 * 1024 * 1024
# Progress units of growing a filesystem: it writes little, but takes a while.
GROW_WEIGHT = 64 * 1024 * 1024
VERIFY_BLOCK = 4 * 1024 * 1024
CHECKPOINT_SECONDS = 3.0
LOCK_WAIT_SECONDS = 10.0
# No byte moved for this long while waiting on a disk: say so ("stalled"), and which disk.
STALL_SECONDS = 30.0
# The read-back check hands the target to a digest check this much at a time, so a
# stall watch sees bytes move during a long partition too.
VERIFY_BATCH = 32 * 1024 * 1024

# How the command line says "continue later"; the wizard has a button for it instead.
RESUME_HINT = "run `restore-tui resume` — it continues from the last checkpoint"


# -- errors ------------------------------------------------------------------------------


class EngineError(UserError):
    """A restore that stopped. ``text`` says what happened and what to check, in words
    any front-end can show; ``resumable`` says whether resuming continues it (the
    command line then adds how, as ``str()`` of the error)."""

    def __init__(self, text: str, *, resumable: bool = False) -> None:
        self.text = text
        self.resumable = resumable
        super().__init__(f"{text}. Then {RESUME_HINT}" if resumable else text)


class RestoreCancelled(EngineError):
    """Stopped on request after writing a checkpoint."""


class DamagedBackup(EngineError):
    """The archive's data failed its check; nothing of it was written."""


class TargetChanged(EngineError):
    """The target no longer matches the plan (size, table, identity, sector size)."""


class TableMismatch(EngineError):
    """The table read back after the table stage differs from the plan."""


class VerifyFailed(EngineError):
    """Bytes read back differ from what was written."""


class GrowFailed(EngineError):
    """The filesystem's own tool could not grow it; the message says what to run."""


class WriteFailed(EngineError):
    """The target refused a write or a flush."""


def area_name(area: int | str | None) -> str:
    if area is None or area == TRACK0:
        return "the start of the disk (track 0)"
    return f"partition {area}"


# -- progress ----------------------------------------------------------------------------

EventKind = Literal[
    "note",
    "stage-start",
    "stage-already-done",  # a resume skips a stage an earlier run finished (and checked)
    "write",
    "verify",
    "checkpoint",
    "stage-done",
    "stalled",  # no byte moved for the stall time: ``waiting_on`` says which disk, ``stalled_s``
    "moving",  # bytes move again after "stalled" (``stalled_s``: how long nothing moved)
    "finished",
]


@dataclass(frozen=True)
class ProgressEvent:
    """One report for the CLI and the wizard; byte counts are of the plan's work (the
    engine's units: stored bytes for copies), the same the journal records."""

    kind: EventKind
    stage_index: int  # 0-based; -1 before the first stage
    stage_count: int
    stage_name: str
    stage_title: str
    stage_done: int
    stage_total: int
    overall_done: int
    overall_total: int
    rate_bytes_s: float | None = None
    eta_s: float | None = None
    message: str = ""
    notice: Notice | None = None
    journal_path: str | None = None
    waiting_on: WaitingOn | None = None  # "stalled"/"moving": the backup, or the target disk
    stalled_s: float | None = None  # "stalled"/"moving": seconds without a byte moved

    @property
    def stage_number(self) -> int:
        return self.stage_index + 1

    @property
    def overall_percent(self) -> int:
        return percent(self.overall_done, self.overall_total)

    @property
    def stage_percent(self) -> int:
        return percent(self.stage_done, self.stage_total)


ProgressCallback = Callable[[ProgressEvent], None]


# -- table comparison --------------------------------------------------------------------


def table_differences(expected: PartitionTable, found: PartitionTable | None) -> list[str]:
    """Geometry and identity differences, in plain words (empty when they agree)."""
    if found is None:
        return ["no partition table could be read back"]
    out: list[str] = []
    if found.scheme != expected.scheme:
        out.append(f"the table is {found.scheme}, the plan wrote {expected.scheme}")
        return out
    if expected.scheme == "msdos" and found.mbr_signature != expected.mbr_signature:
        out.append(
            f"disk signature is {found.mbr_signature}, the plan wrote {expected.mbr_signature}"
        )
    if expected.scheme == "gpt" and found.gpt_disk_guid != expected.gpt_disk_guid:
        out.append(f"disk GUID is {found.gpt_disk_guid}, the plan wrote {expected.gpt_disk_guid}")
    want = {p.number: p for p in expected.partitions}
    have = {p.number: p for p in found.partitions}
    for number in sorted(set(want) | set(have)):
        w, h = want.get(number), have.get(number)
        if w is None:
            out.append(f"partition {number} exists but the plan has none")
            continue
        if h is None:
            out.append(f"partition {number} is missing")
            continue
        for field in ("start_lba", "length_lba", "kind", "mbr_type", "gpt_type", "gpt_guid"):
            a, b = getattr(w, field), getattr(h, field)
            if expected.scheme == "msdos" and field in ("gpt_type", "gpt_guid"):
                continue
            if expected.scheme == "gpt" and field == "mbr_type":
                continue
            if a != b:
                out.append(f"partition {number}: {field.replace('_', ' ')} is {b}, plan says {a}")
    return out


def table_state_refusals(
    plan: Plan, table: PartitionTable | None, fingerprint: str, journal: Checkpoint | None
) -> list[Notice]:
    """Is the disk's table what ``plan`` may be written over? The one place for this.

    Before a restore wrote anything the table must be the one planned against; once
    this plan's table stage is done it must be the plan's ``after``; while the table
    stage was under way it may be half written, by us.
    """
    same_plan = journal is not None and journal.plan_digest == plan.digest()
    if same_plan and journal is not None and "table" in journal.completed_stages:
        problems = table_differences(plan.after, table)
        if problems:
            return [
                notice(
                    "table-changed-since-written",
                    "its partition table changed since restore-tui wrote it ("
                    + "; ".join(problems)
                    + "); something else wrote to the disk. Make a new plan and restore again",
                )
            ]
        return []
    if same_plan and journal is not None and journal.started_writing:
        return []
    if fingerprint != plan.target.table_fingerprint:
        return [
            notice(
                "stale-plan",
                "the plan is stale: the disk's partition table changed since the plan was "
                "made. Make a new plan (`restore-tui plan`) and look at it again",
            )
        ]
    return []


# -- byte-range helpers ------------------------------------------------------------------


def subtract(
    ranges: Iterable[tuple[int, int]], holes: Iterable[tuple[int, int]]
) -> list[tuple[int, int]]:
    """[start, stop) ranges with the holes cut out."""
    out = [r for r in ranges if r[1] > r[0]]
    for h0, h1 in holes:
        nxt: list[tuple[int, int]] = []
        for a, b in out:
            if h1 <= a or h0 >= b:
                nxt.append((a, b))
                continue
            if a < h0:
                nxt.append((a, h0))
            if h1 < b:
                nxt.append((h1, b))
        out = nxt
    return out


def _stored_overlap(chunks: tuple[Chunk, ...], lo: int, hi: int) -> int:
    return sum(max(0, min(c.stop, hi) - max(c.offset, lo)) for c in chunks)


def chunk_batches(chunks: Iterable[Chunk], lo: int, hi: int, size: int) -> list[tuple[int, int]]:
    """[lo, hi) cut into ranges holding about ``size`` stored bytes each, for the digest check
    a range at a time. Cuts fall only between two whole chunks that have digests (or are
    zeros), so each range checks the same chunks as one call over [lo, hi) would; chunks
    without digests (other tools' archives) stay in one byte comparison, which reads the
    archive once from its start rather than once per range."""
    out: list[tuple[int, int]] = []
    start, held, checkable = lo, 0, False
    for c in chunks:
        if c.stop <= lo or c.offset >= hi:
            continue
        a, b = max(c.offset, lo), min(c.stop, hi)
        whole = a == c.offset and b == c.stop and (c.kind == "zero" or c.digest is not None)
        if held and held + (b - a) > size and whole and checkable:
            out.append((start, a))
            start, held = a, 0
        held += b - a
        checkable = whole
    out.append((start, hi))
    return out


# -- how much moves on a disk, as the kernel counts it -----------------------------------

IoCounter = Callable[[], int | None]


def _unknown() -> int | None:
    return None


def device_io_counter(path: str) -> IoCounter:
    """A function counting sectors read + written so far on the block device ``path`` is
    (or whose filesystem holds ``path``), from /sys; it returns None when that is unknown
    (a FUSE or in-memory filesystem). Flushing a large write cache, or reading back a long
    run, moves bytes the engine does not see one by one: this sees them."""
    try:
        st = os.stat(path)
    except OSError:
        return _unknown
    dev = st.st_rdev if stat.S_ISBLK(st.st_mode) else st.st_dev
    counters = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat")
    if not counters.exists():
        return _unknown

    def count() -> int | None:
        try:
            fields = counters.read_text().split()
            return int(fields[2]) + int(fields[6])  # sectors read, sectors written
        except (OSError, ValueError, IndexError):
            return None

    return count


def _first_difference(got: bytes | memoryview, want: bytes | memoryview) -> int:
    """Index of the first byte where two byte strings differ (the shorter one's length
    when one is a prefix of the other)."""
    for k in range(min(len(got), len(want))):
        if got[k] != want[k]:
            return k
    return min(len(got), len(want))


def _same_filesystem(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Do ``a`` and ``b`` live on one filesystem (the journal beside the backup)?"""
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return False


# -- the engine --------------------------------------------------------------------------


def _prepend(head: Piece, rest: Generator[Piece, None, None]) -> Generator[Piece, None, None]:
    """``head``, then ``rest``; closing it closes ``rest`` (and the archive's pipeline)."""
    try:
        yield head
        yield from rest
    finally:
        rest.close()


@dataclass
class _Position:
    stage_index: int
    action_index: int
    done_in_action: int  # bytes of the action's extent known written
    last_extent: tuple[int, int] | None


class RestoreEngine:
    """Execute ``plan`` onto ``target_path`` using data from ``archive``.

    ``journal``: an existing journal to continue (resume) or None to start one
    beside the archive (``journal_location`` overrides where). ``cancel`` is
    checked between slices; when set, the engine records a checkpoint and
    raises :class:`RestoreCancelled`.

    While it runs, a watch thread reports a "stalled" event when no byte has moved
    for ``stall_seconds`` while the engine waits on the backup or on the target (even
    when the engine thread is stuck inside a read or write call), and "moving" when
    bytes move again. ``device_activity`` gives the kernel's count of what moves on a
    disk (None: only what the engine itself sees counts).

    Verification re-reads the archive rather than keeping hashes of what was
    written: the archive re-checks every chunk's digest as it is read, and a
    resumed stage (whose first half was written by an earlier process) is
    verified exactly like an uninterrupted one.
    """

    def __init__(
        self,
        plan: Plan,
        archive: Archive,
        target_path: str,
        *,
        verify: bool = True,
        journal: Journal | None = None,
        journal_location: Path | None = None,
        plan_path: str | None = None,
        target_identity: DiskIdentity | None = None,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
        stall_seconds: float = STALL_SECONDS,
        device_activity: Callable[[str], IoCounter] | None = device_io_counter,
    ) -> None:
        self.plan = plan
        self.archive = archive
        self.target_path = target_path
        self.verify = verify
        self.journal = journal
        self.journal_location = journal_location
        self.plan_path = plan_path
        self.target_identity = target_identity or plan.target.identity
        self.progress = progress
        self.cancel = cancel
        self.checkpoint_seconds = checkpoint_seconds
        self.notes: list[Notice] = []
        self._weights = [[self._action_weight(a) for a in s.actions] for s in plan.stages]
        self._stage_totals = [sum(w) for w in self._weights]
        self.overall_total = sum(self._stage_totals)
        self._meter = RateMeter(self.overall_total)
        self._overall_done = 0
        self._stage_done = 0
        self._stage_index = -1
        self._last_checkpoint = time.monotonic()
        self._writer: CheckedWriter | None = None
        self._reader: MediumReader | None = None  # read-back checks: from the medium
        self._at: tuple[Stage, int] | None = None  # the action being executed
        # Target ranges of (stage index, action index) read back equal while they were
        # being written (ReadBehind), in this run: the stage's end check skips them.
        self._checked: dict[tuple[int, int], list[tuple[int, int]]] = {}
        # The next stage's first pieces, decoded while this stage's writes are flushed
        # (_decode_ahead): the area and backup offset they start at, and the iterator.
        self._ahead: tuple[Area, int, Generator[Piece, None, None]] | None = None
        if journal is not None:
            # Events before the first stage starts say where the last checkpoint was.
            self._overall_done = self._units_at(journal.record)
        # The stall watch. ``_state_lock`` guards what the engine is waiting on and when
        # a byte last moved; ``_emit_lock`` keeps events from both threads in order.
        self.stall_seconds = stall_seconds
        self.device_activity = device_activity
        self._state_lock = threading.Lock()
        self._emit_lock = threading.RLock()
        self._side: WaitingOn | None = None
        self._moved_at = time.monotonic()
        self._stall_side: WaitingOn | None = None  # set while a stall has been announced
        self._stall_since = 0.0
        self._stall_said = 0.0
        self._journal_on_backup = False

    # -- weights: stored bytes for copies (what actually moves), length otherwise --------

    def _area_chunks(self, area: int | str | None) -> tuple[Chunk, ...] | None:
        manifest = self.archive.manifest
        try:
            if area == TRACK0:
                return manifest.boot.track0
            if isinstance(area, int):
                return manifest.image(area).chunks
        except KeyError:
            return None
        return None

    def _units_at(self, record: Checkpoint) -> int:
        """Work units on the target at ``record``'s position (what its checkpoint vouches for)."""
        done = 0
        for i, stage in enumerate(self.plan.stages):
            if stage.name in record.completed_stages:
                done += self._stage_totals[i]
            elif stage.name == record.current_stage:
                ai = record.action_index
                done += sum(self._weights[i][:ai])
                if ai < len(stage.actions):
                    done += self._action_weight(stage.actions[ai], record.done_in_action)
        return done

    def _action_weight(self, action: Action, done: int | None = None) -> int:
        """Work units of ``action`` (of its first ``done`` bytes when given)."""
        length = action.length if done is None else done
        if isinstance(action, GrowFilesystem):
            return GROW_WEIGHT if done is None or done >= action.length else 0
        if not isinstance(action, RestoreArea):
            return length
        chunks = self._area_chunks(action.area)
        if chunks is None:
            return length
        lo = action.source_offset
        return _stored_overlap(chunks, lo, lo + length)

    # -- events ------------------------------------------------------------------------

    def _emit(
        self,
        kind: EventKind,
        message: str = "",
        said: Notice | None = None,
        *,
        waiting_on: WaitingOn | None = None,
        stalled_s: float | None = None,
    ) -> None:
        if self.progress is None:
            return
        with self._emit_lock:  # the engine thread and the stall watch both report
            self._emit_locked(kind, message, said, waiting_on, stalled_s)

    def _emit_locked(
        self,
        kind: EventKind,
        message: str,
        said: Notice | None,
        waiting_on: WaitingOn | None,
        stalled_s: float | None,
    ) -> None:
        assert self.progress is not None
        snap = self._meter.update(self._overall_done)
        i = self._stage_index
        stage = self.plan.stages[i] if 0 <= i < len(self.plan.stages) else None
        self.progress(
            ProgressEvent(
                kind=kind,
                stage_index=i,
                stage_count=len(self.plan.stages),
                stage_name=stage.name if stage else "",
                stage_title=stage.title if stage else "",
                stage_done=self._stage_done,
                stage_total=self._stage_totals[i] if stage else 0,
                overall_done=self._overall_done,
                overall_total=self.overall_total,
                rate_bytes_s=snap.rate_bytes_s,
                eta_s=snap.eta_s,
                message=message,
                notice=said,
                journal_path=str(self.journal.path) if self.journal else None,
                waiting_on=waiting_on,
                stalled_s=stalled_s,
            )
        )

    def _note(self, code: str, message: str, **params: str | int) -> None:
        said = notice(code, message, **params)
        self.notes.append(said)
        self._emit("note", message, said)

    # -- the stall watch -----------------------------------------------------------------

    @property
    def stalled_on(self) -> WaitingOn | None:
        """The disk a stall was announced for, while nothing moves (else None)."""
        with self._state_lock:
            return self._stall_side

    @contextlib.contextmanager
    def _waiting(self, side: WaitingOn | None) -> Iterator[None]:
        """The engine waits on ``side`` inside this block (None: on no disk, e.g. thinking,
        or reporting progress). Waiting starts the stall clock when nothing was awaited."""
        with self._state_lock:
            before = self._side
            if before is None and side is not None:
                self._moved_at = time.monotonic()
            self._side = side
        try:
            yield
        finally:
            with self._state_lock:
                self._side = before

    def _moved(self) -> None:
        """Bytes moved (read from the backup, written to or read back from the target)."""
        now = time.monotonic()
        with self._state_lock:
            self._moved_at = now
            stalled = self._stall_side is not None
        if stalled:
            with self._emit_lock:
                with self._state_lock:
                    side, since = self._stall_side, self._stall_since
                    self._stall_side = None
                if side is not None:
                    self._emit("moving", waiting_on=side, stalled_s=now - since)

    def _check_stall(self, now: float) -> None:
        """Announce a stall once nothing moved for ``stall_seconds``, and again every third of
        that (with how long it has been) while it lasts."""
        repeat = self.stall_seconds / 3
        with self._emit_lock:
            with self._state_lock:
                side, since = self._side, self._moved_at
                quiet = now - since
                if side is None or quiet < self.stall_seconds:
                    return
                if self._stall_side is not None and now - self._stall_said < repeat:
                    return
                self._stall_side, self._stall_since, self._stall_said = side, since, now
            self._emit("stalled", waiting_on=side, stalled_s=quiet)

    def _watch(self, stop: threading.Event, counters: dict[WaitingOn, IoCounter]) -> None:
        interval = min(1.0, self.stall_seconds / 4)
        seen = {side: count() for side, count in counters.items()}
        while not stop.wait(interval):
            for side, count in counters.items():
                now_count = count()
                if now_count is None or now_count == seen[side]:
                    continue
                seen[side] = now_count
                with self._state_lock:
                    awaited = self._side == side
                if awaited:  # the disk being waited on is working: not a stall
                    self._moved()
            self._check_stall(time.monotonic())

    def _start_watch(self) -> tuple[threading.Thread, threading.Event]:
        counters: dict[WaitingOn, IoCounter] = {}
        if self.device_activity is not None:
            counters = {
                "backup": self.device_activity(str(self.archive.path)),
                "target": self.device_activity(self.target_path),
            }
        stop = threading.Event()
        thread = threading.Thread(
            target=self._watch, args=(stop, counters), name="restore-stall-watch", daemon=True
        )
        thread.start()
        return thread, stop

    def _save(self, **changes: object) -> None:
        """A journal record with the engine's progress units (the percent shown now)."""
        assert self.journal is not None
        changes.update(done_units=self._overall_done, total_units=self.overall_total)
        with self._waiting("backup" if self._journal_on_backup else None):
            self.journal.save(**changes)
        self._moved()

    # -- entry point -------------------------------------------------------------------

    def run(self) -> None:
        """Execute every stage not yet done; raises an :class:`EngineError` when it stops."""
        plan = self.plan
        if self.journal is not None and self.journal.record.plan_digest != plan.digest():
            raise TargetChanged(
                f"the restore record {self.journal.path} belongs to a different plan; "
                "start a new restore instead of resuming"
            )
        if self.journal is not None:
            differences = identity_differences(
                self.journal.record.target_identity, self.target_identity
            )
            if differences:
                raise TargetChanged(
                    "this is not the disk the interrupted restore was writing to: "
                    + "; ".join(differences)
                )
        if self.journal is not None and self.journal.record.finished:
            self._note("already-finished", "this restore already finished; nothing to do")
            return
        self._check_archive()
        try:
            writer = CheckedWriter(self.target_path, plan.write_extents())
        except TargetOpenError as exc:
            raise WriteFailed(str(exc.strerror)) from exc
        except OutsidePlan as exc:
            raise TargetChanged(str(exc)) from exc
        self._writer = writer
        watch, stop_watch = self._start_watch()
        try:
            self._reader = MediumReader(self.target_path, writer.size)
            self._lock(writer)
            self._preflight(writer)
            if self.journal is None:
                self.journal = Journal.create(
                    plan,
                    archive_path=self.archive.path,
                    target_path=self.target_path,
                    target_identity=self.target_identity,
                    plan_path=self.plan_path,
                    location=self.journal_location,
                )
            else:
                # Resuming from another copy of the same backup, or onto the same disk under
                # a new /dev name: remember where both are now.
                moved: dict[str, object] = {}
                if str(Path(self.archive.path).absolute()) != self.journal.record.archive_path:
                    moved["archive_path"] = str(Path(self.archive.path).absolute())
                if self.target_path != self.journal.record.target_path:
                    moved["target_path"] = self.target_path
                if moved:
                    self.journal.save(**moved)
            self._journal_on_backup = _same_filesystem(self.journal.path, self.archive.path)
            self._note(
                "journal-location",
                f"progress is recorded in {self.journal.path}",
                path=str(self.journal.path),
            )
            volatile = lost_at_restart(self.journal.path)
            if volatile:
                self._note("journal-volatile", volatile, path=str(self.journal.path))
            self._run_stages(writer)
            self._save(finished=True, current_stage=None, last_extent=None)
        finally:
            self._drop_ahead()
            stop_watch.set()
            watch.join(timeout=5)
            if self._reader is not None:
                self._reader.close()
            writer.close()
            self._writer, self._reader = None, None
        # The lock is gone with the descriptor: now udev may look at the finished disk.
        self._reread_table()
        self._emit("finished", "the restore is complete")

    # -- checks before writing ---------------------------------------------------------

    def _check_archive(self) -> None:
        if self.plan.archive.identity != self.archive.identity():
            raise TargetChanged(
                f"{self.archive.path} is not the backup this plan was made from (its contents "
                "differ). Use the same backup (a copy of it works too), or make a new plan"
            )

    def _preflight(self, writer: CheckedWriter) -> None:
        plan = self.plan
        expected_size = plan.target.identity.size_bytes
        if writer.size != expected_size:
            raise TargetChanged(
                f"{self.target_path} is {writer.size} bytes now but the plan was made for a disk "
                f"of {expected_size} bytes; this is not the same disk, or it changed. "
                "Make a new plan for it"
            )
        sector = plan.after.sector_size
        if writer.is_block_device:
            geo = geometry_of_fd(writer.fd)
            if geo.logical_sector_size != sector:
                raise TargetChanged(
                    f"{self.target_path} has {geo.logical_sector_size}-byte sectors but the plan "
                    f"is for {sector}-byte sectors; a restore would misplace every partition"
                )
        try:
            with self._waiting("target"):
                parsed = read_table(writer.read, writer.size, sector)
            self._moved()
            found: PartitionTable | None = parsed.table if parsed else None
            fingerprint = table_fingerprint(parsed)
        except TableError as exc:
            # The same name layout.probe gives a damaged table, so a plan made for a disk
            # whose table is broken (the usual reason to restore) still matches it.
            found = None
            fingerprint = hashlib.sha256(f"damaged table: {exc}".encode()).hexdigest()
        record = self.journal.record if self.journal else None
        refused = table_state_refusals(plan, found, fingerprint, record)
        if refused:
            raise TargetChanged(f"{self.target_path}: {refused[0].text}")

    # -- stages ------------------------------------------------------------------------

    def _start_position(self) -> _Position:
        record = self.journal.record if self.journal else None
        stages = self.plan.stages
        if record is None:
            return _Position(0, 0, 0, None)
        for i, stage in enumerate(stages):
            if stage.name in record.completed_stages:
                continue
            if stage.name == record.current_stage:
                return _Position(i, record.action_index, record.done_in_action, record.last_extent)
            return _Position(i, 0, 0, None)
        return _Position(len(stages), 0, 0, None)

    def _run_stages(self, writer: CheckedWriter) -> None:
        assert self.journal is not None
        start = self._start_position()
        completed = list(self.journal.record.completed_stages)
        self._overall_done = 0
        for i, stage in enumerate(self.plan.stages):
            if stage.name in completed:
                # Finished (and checked) by an earlier run: shown done, not "waiting".
                self._stage_index = i
                self._stage_done = self._stage_totals[i]
                self._overall_done += self._stage_totals[i]
                self._emit("stage-already-done", stage.title)
                continue
            self._stage_index = i
            action_index, done = 0, 0
            if i == start.stage_index:
                action_index, done = start.action_index, start.done_in_action
                if (action_index, done) != (0, 0) and not self._reverify_last(stage, start, writer):
                    action_index, done = 0, 0
            self._stage_done = sum(self._weights[i][:action_index])
            if action_index < len(stage.actions):
                self._stage_done += self._action_weight(stage.actions[action_index], done)
            self._overall_done += self._stage_done
            if self.journal.record.current_stage != stage.name:
                # Recorded before the stage writes its first byte: a kill from here on
                # leaves a journal that says this plan may have changed the disk.
                self._save(
                    current_stage=stage.name, action_index=0, done_in_action=0, last_extent=None
                )
            self._emit("stage-start", stage.title)
            self._check_cancel(stage, action_index, done, None)
            for ai in range(action_index, len(stage.actions)):
                self._execute(stage, ai, done if ai == action_index else 0)
            if stage.name == "table":
                self._after_table(writer)
            left = self._left_to_check(stage) if self.verify else None
            if left is None or not self._rereads_backup(stage, left):
                self._decode_ahead(i + 1)
            self._flush(writer)
            if left is not None:
                self._verify_stage(stage, left, writer)
            completed.append(stage.name)
            self._save(
                completed_stages=tuple(completed),
                current_stage=None,
                action_index=0,
                done_in_action=0,
                last_extent=None,
            )
            self._last_checkpoint = time.monotonic()
            self._emit("checkpoint", f"stage {i + 1} of {len(self.plan.stages)} done")
            self._emit("stage-done", stage.title)

    def _flush(self, writer: CheckedWriter) -> None:
        try:
            with self._waiting("target"):
                writer.sync()
            self._moved()
        except OSError as exc:
            raise WriteFailed(
                f"the disk {self.target_path} did not confirm the data was stored "
                f"({exc.strerror}); the disk or its cable may be failing. Check it",
                resumable=True,
            ) from exc

    def _checkpoint(self, stage: Stage, ai: int, done: int, last: tuple[int, int] | None) -> None:
        assert self.journal is not None and self._writer is not None
        # Data first, then the record that vouches for it.
        self._flush(self._writer)
        self._save(current_stage=stage.name, action_index=ai, done_in_action=done, last_extent=last)
        self._last_checkpoint = time.monotonic()
        self._emit("checkpoint", "safe to resume from here")

    def _check_cancel(self, stage: Stage, ai: int, done: int, last: tuple[int, int] | None) -> None:
        if self.cancel is not None and self.cancel.is_set():
            self._checkpoint(stage, ai, done, last)
            raise RestoreCancelled(
                f"the restore was stopped at your request during {stage.title!r}; the disk is "
                "not usable until it is finished",
                resumable=True,
            )

    def _after_slice(self, stage: Stage, ai: int, done: int, last: tuple[int, int]) -> None:
        self._emit("write")
        self._check_cancel(stage, ai, done, last)
        if time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds:
            self._checkpoint(stage, ai, done, last)

    def _advance(self, units: int) -> None:
        self._stage_done += units
        self._overall_done += units

    # -- executing actions -------------------------------------------------------------

    def _execute(self, stage: Stage, ai: int, start_done: int) -> None:
        action = stage.actions[ai]
        self._at = (stage, ai)
        try:
            action.execute(self, start_done)
        except OSError as exc:
            raise WriteFailed(
                f"writing to {self.target_path} failed during {stage.title!r} "
                f"({exc.strerror or exc}); the disk or its cable may be failing. Check it",
                resumable=True,
            ) from exc

    # The verbs of the actions (layout.plan.ActionRunner): ``self._at`` is the stage
    # and action index being executed, for progress and checkpoints.

    def write_bytes(self, action: WriteBytes, start_done: int) -> None:
        assert self._writer is not None
        assert self._at is not None
        stage, ai = self._at
        if start_done < action.length:
            with self._waiting("target"):
                self._writer.write(action.offset + start_done, action.payload[start_done:])
            self._moved()
            self._advance(action.length - start_done)
            self._after_slice(stage, ai, action.length, (action.offset + start_done, action.stop))

    def zero_range(self, action: ZeroRange, start_done: int) -> None:
        assert self._writer is not None
        assert self._at is not None
        stage, ai = self._at
        pos = action.offset + start_done
        while pos < action.stop:
            n = min(ZERO_SLICE, action.stop - pos)
            with self._waiting("target"):
                self._writer.zero(pos, n)
            self._moved()
            self._advance(n)
            pos += n
            self._after_slice(stage, ai, pos - action.offset, (pos - n, pos))

    def grow_filesystem(self, action: GrowFilesystem, start_done: int) -> None:
        """The filesystem's own tool on exactly the partition's extent (restore_tui.growing);
        what lies around the extent must be unchanged afterwards."""
        writer = self._writer
        assert writer is not None and self._at is not None
        stage, ai = self._at
        if start_done >= action.length:
            return
        self._flush(writer)
        before = growing.around(writer.fd, action)
        try:
            with self._waiting("target"):
                growing.grow(self.target_path, action)
        except growing.GrowError as exc:
            raise GrowFailed(str(exc), resumable=True) from exc
        writer.drop_cache(0, 0)  # the tool wrote through another device: read afresh
        if growing.around(writer.fd, action) != before:
            raise GrowFailed(
                f"while growing {stage.title!r}, bytes outside the partition changed; stop "
                "using this disk and restore it again"
            )
        self._moved()
        self._advance(GROW_WEIGHT)
        self._after_slice(stage, ai, action.length, (action.offset, action.stop))

    def restore_area(self, action: RestoreArea, start_done: int) -> None:
        writer = self._writer
        assert writer is not None
        assert self._at is not None
        stage, ai = self._at
        src_lo = action.source_offset + start_done
        src_hi = action.source_offset + action.length
        delta = action.offset - action.source_offset
        counted = self._area_chunks(action.area) is not None
        pieces = self._take_ahead(action.area, src_lo) or self._backup_pieces(action.area, src_lo)
        behind = self._read_behind(action, src_lo, src_hi)
        reached = src_lo
        try:
            for piece in pieces:
                if piece.offset >= src_hi:
                    break
                lo, hi = max(piece.offset, src_lo), min(piece.stop, src_hi)
                if behind is not None:
                    behind.will_write(piece)
                pos = lo
                step = WRITE_SLICE if piece.data is not None else ZERO_SLICE
                while pos < hi:
                    end = min(pos + step, hi)
                    with self._waiting("target"):
                        at, until = pos - piece.offset, end - piece.offset
                        if piece.data is None:
                            writer.zero(pos + delta, end - pos)
                        elif piece.block is not None:  # decoded into a block: sent as it is
                            writer.write_block(pos + delta, piece.block, at, until)
                        else:
                            writer.write(pos + delta, memoryview(piece.data)[at:until])
                    self._moved()
                    self._advance(end - pos if counted else end - reached)
                    reached = pos = end
                    self._after_slice(
                        stage, ai, end - action.source_offset, (lo + delta, end + delta)
                    )
                    if behind is not None:
                        with self._waiting("target"):
                            behind.written_to(end)
            if behind is not None:
                with self._waiting("target"):
                    behind.finish()
                self._moved()
                self._checked[(self._stage_index, ai)] = behind.checked
        except CorruptData as exc:
            self._stop_for_damage(stage, ai, action, reached, exc)
        except ReadBackMismatch as exc:
            self._read_back_failed(stage, action, exc.chunk)
        finally:
            pieces.close()
            if behind is not None:
                behind.close()
        if not counted:
            self._advance(src_hi - reached)

    def _read_behind(self, action: RestoreArea, src_lo: int, src_hi: int) -> ReadBehind | None:
        """The read-back of this area behind its writes, when chunks have digests."""
        chunks = self._area_chunks(action.area)
        writer, reader = self._writer, self._reader
        if not self.verify or chunks is None or writer is None or reader is None:
            return None
        return ReadBehind(
            reader,
            chunks,
            action.offset - action.source_offset,
            src_lo,
            src_hi,
            sparse_file=not writer.is_block_device,
            batch=VERIFY_BATCH,
            writes_under_way=writer.writes_under_way,
        )

    def _read_back_failed(self, stage: Stage, action: RestoreArea, chunk: Chunk) -> None:
        delta = action.offset - action.source_offset
        lo, hi = chunk.offset + delta, chunk.stop + delta
        assert self._writer is not None
        exact = self._compare_pieces(self._writer, action, lo, hi)
        raise self._verify_failed(stage, exact if exact is not None else lo)

    def _verify_failed(self, stage: Stage, byte: int) -> VerifyFailed:
        return VerifyFailed(
            f"after writing {stage.title!r}, byte {byte} of {self.target_path} read "
            "back different from what was written. The target disk may be failing; "
            "check it (for example with `smartctl -a`)",
            resumable=True,
        )

    def _stop_for_damage(
        self, stage: Stage, ai: int, action: RestoreArea, reached: int, exc: CorruptData
    ) -> None:
        # Everything before the damaged chunk is on the disk: record it so a
        # resume with a good copy goes on from exactly here.
        self._checkpoint(stage, ai, reached - action.source_offset, None)
        where = area_name(exc.partition if exc.partition is not None else action.area)
        raise DamagedBackup(
            f"the backup's data for {where} at byte {exc.offset} is damaged; nothing from it "
            f"was written — restore-tui stopped before writing it ({exc}). A damaged backup "
            "cannot be repaired: copy it again from where it came from, or use another copy "
            "of it (any copy of the same backup continues from here)",
            resumable=True,
        ) from exc

    # -- after the table stage ---------------------------------------------------------

    def _lock(self, writer: CheckedWriter) -> None:
        """Hold ``flock(LOCK_EX)`` on the whole target while writing it: udev (systemd's
        block-device locking contract) then does not probe or mount half-written partitions.
        The lock goes with the descriptor when the writer closes."""
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(writer.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                # udev holds a shared lock for a moment while it probes: wait that out.
                if time.monotonic() >= deadline:
                    raise WriteFailed(
                        f"another program holds {self.target_path} locked (another restore, or "
                        "a partitioning tool); close it and try again. Nothing was written"
                    ) from None
                time.sleep(0.2)

    def _reread_table(self) -> None:
        """Tell the kernel and udev about the table on a block-device target."""
        if not Path(self.target_path).is_block_device():
            return
        try:
            fd = os.open(self.target_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            fcntl.ioctl(fd, BLKRRPART)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                self._note(
                    "reread-busy",
                    "the kernel could not re-read the new partition table now (the disk is "
                    "busy); it will after a restart. The restore itself is not affected",
                )
            elif exc.errno != errno.EINVAL:
                # EINVAL: a loop device without partition scanning; we write through the
                # whole disk, so that does not matter and is not worth a word.
                self._note(
                    "reread-failed", f"the kernel could not re-read the partition table: {exc}"
                )
        finally:
            os.close(fd)
        if shutil.which("udevadm"):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(
                    ["udevadm", "settle", "--timeout=30"],
                    capture_output=True,
                    timeout=60,
                    check=False,
                )

    def _after_table(self, writer: CheckedWriter) -> None:
        self._flush(writer)
        self._reread_table()
        sector = self.plan.after.sector_size
        writer.drop_cache(0, writer.size)
        try:
            with self._waiting("target"):
                parsed = read_table(writer.read, writer.size, sector)
            self._moved()
        except TableError as exc:
            raise TableMismatch(
                f"the partition table read back from {self.target_path} is damaged ({exc}). "
                "The disk did not keep what was written; check the disk",
                resumable=True,
            ) from exc
        problems = table_differences(self.plan.after, parsed.table if parsed else None)
        if problems:
            raise TableMismatch(
                "the partition table read back does not match the plan: "
                + "; ".join(problems)
                + ". Nothing more was written. Check the disk",
                resumable=True,
            )

    # -- verification ------------------------------------------------------------------

    def _left_to_check(self, stage: Stage) -> list[list[tuple[int, int]]]:
        """Per action of ``stage``, the target ranges its end check has to read back."""
        to_check: list[list[tuple[int, int]]] = []
        for ai, action in enumerate(stage.actions):
            # A later action of the stage (a hidden-sectors patch) may overwrite part
            # of this one: its bytes are checked against that action instead. What was
            # read back behind the writes in this run is not read again.
            later = [(a.offset, a.stop) for a in stage.actions[ai + 1 :]]
            done = self._checked.pop((self._stage_index, ai), [])
            to_check.append(subtract([(action.offset, action.stop)], later + done))
        return to_check

    def _rereads_backup(self, stage: Stage, to_check: list[list[tuple[int, int]]]) -> bool:
        """Whether the end check decodes the backup again to compare bytes: copies from a
        format without chunk digests (a second pipeline of decoded chunks, besides any
        decoded ahead). With digests it reads back and hashes; at most a chunk cut by a
        range's edge is decoded again."""
        for action, ranges in zip(stage.actions, to_check, strict=True):
            if ranges and isinstance(action, RestoreArea):
                chunks = self._area_chunks(action.area)
                if chunks is None or any(c.kind == "data" and c.digest is None for c in chunks):
                    return True
        return False

    def _verify_stage(
        self, stage: Stage, to_check: list[list[tuple[int, int]]], writer: CheckedWriter
    ) -> None:
        for ranges in to_check:
            for lo, hi in ranges:
                self._settle(lo, hi - lo)
        for action, ranges in zip(stage.actions, to_check, strict=True):
            for lo, hi in ranges:
                try:
                    bad = self._mismatch_in(writer, action, lo, hi)
                except CorruptData as exc:
                    raise DamagedBackup(
                        f"while checking what was written, the backup's data for "
                        f"{area_name(exc.partition)} at byte {exc.offset} turned out damaged "
                        f"({exc}). The backup file or the disk it is on is failing; copy the "
                        "backup to another disk",
                        resumable=True,
                    ) from exc
                if bad is not None:
                    raise self._verify_failed(stage, bad)
            self._emit("verify", f"checked {action.description}")

    def _settle(self, offset: int, length: int) -> None:
        """Written bytes of the range are to be read from the medium next (MediumReader)."""
        assert self._reader is not None
        with self._waiting("target"):
            self._reader.settle(offset, length)
        self._moved()

    def _mismatch_in(self, writer: CheckedWriter, action: Action, lo: int, hi: int) -> int | None:
        """First byte of target [lo, hi) (inside ``action``) that does not read back as the
        action wrote it (``action.first_mismatch`` picks the check below)."""
        assert writer is self._writer
        return action.first_mismatch(self, lo, hi)

    # The checks of the actions (layout.plan.ActionChecker).

    def bytes_mismatch(self, action: WriteBytes, lo: int, hi: int) -> int | None:
        assert self._writer is not None
        return self._compare(self._writer, lo, hi, action.payload, action.offset)

    def zeros_mismatch(self, action: ZeroRange, lo: int, hi: int) -> int | None:
        assert self._writer is not None
        return self._compare(self._writer, lo, hi, None, lo)

    def filesystem_mismatch(self, action: GrowFilesystem, lo: int, hi: int) -> int | None:
        """A grown filesystem is checked by its own checker (read-only), not byte by byte."""
        with self._waiting("target"):
            clean = growing.check(self.target_path, action)
        self._moved()
        return None if clean else action.offset

    def area_mismatch(self, action: RestoreArea, lo: int, hi: int) -> int | None:
        """For copies only stored pieces are checked: bytes the archive does not hold were
        never written."""
        writer, reader = self._writer, self._reader
        assert writer is not None and reader is not None
        delta = action.offset - action.source_offset
        chunks = self._area_chunks(action.area)
        if chunks is not None:
            # Whole chunks are checked against the manifest's digests: no second
            # decompression; the byte comparison below handles the rest. A batch at a
            # time, ascending, so the first bad byte found is the lowest.
            for a, b in chunk_batches(chunks, lo - delta, hi - delta, VERIFY_BATCH):
                with self._waiting("target"):
                    bad = check_copy(
                        reader,
                        chunks,
                        delta,
                        a,
                        b,
                        lambda x, y: self._compare_pieces(writer, action, x, y),
                        sparse_file=not writer.is_block_device,
                    )
                self._moved()
                if bad is not None:
                    return bad
            return None
        return self._compare_pieces(writer, action, lo, hi)

    def _compare_pieces(
        self, writer: CheckedWriter, action: RestoreArea, lo: int, hi: int
    ) -> int | None:
        """Byte comparison of target [lo, hi) with the archive's decompressed pieces."""
        delta = action.offset - action.source_offset
        for p_start, p_stop, data in self._pieces_between(action, lo - delta, hi - delta):
            p_lo, p_hi = max(p_start + delta, lo), min(p_stop + delta, hi)
            bad = self._compare(writer, p_lo, p_hi, data, p_start + delta)
            if bad is not None:
                return bad
        return None

    def _pieces_between(
        self, action: RestoreArea, src_lo: int, src_hi: int
    ) -> Iterator[tuple[int, int, bytes | memoryview | None]]:
        pieces = self._backup_pieces(action.area, src_lo)
        try:
            for piece in pieces:
                if piece.offset >= src_hi:
                    break
                if piece.stop <= src_lo:
                    continue
                yield piece.offset, piece.stop, piece.data
        finally:
            pieces.close()

    def _decode_ahead(self, stage_index: int) -> None:
        """Start decoding the backup for stage ``stage_index`` if it begins with a copy:
        its first chunks are read, decompressed and checked while the stage before is
        flushed to the disk, which leaves the processors idle. Nothing is written; damage
        found here is met again, and reported, when the stage itself gets there."""
        stages = self.plan.stages
        if stage_index >= len(stages) or not stages[stage_index].actions:
            return
        first = stages[stage_index].actions[0]
        if not isinstance(first, RestoreArea):
            return
        pieces = self._backup_pieces(first.area, first.source_offset)
        try:
            head = next(pieces)  # starts the archive's pipeline: the rest decodes meanwhile
        except Exception:  # decoding ahead is only a head start: the stage meets it again
            pieces.close()
            return
        self._ahead = (first.area, first.source_offset, _prepend(head, pieces))

    def _take_ahead(self, area: Area, start: int) -> Generator[Piece, None, None] | None:
        """The pieces decoded ahead for ``area`` from ``start``, if those are the ones."""
        if self._ahead is not None and self._ahead[:2] == (area, start):
            pieces, self._ahead = self._ahead[2], None
            return pieces
        self._drop_ahead()
        return None

    def _drop_ahead(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead[2].close()

    def _backup_pieces(self, area: Area, start: int) -> Generator[Piece, None, None]:
        """The archive's pieces of ``area`` from ``start``; the time spent getting each
        (reading and decompressing the backup) is waiting on the backup's disk."""
        pieces = self.archive.pieces(area, start)
        source = iter(pieces)
        try:
            while True:
                with self._waiting("backup"):
                    piece = next(source, None)
                if piece is None:
                    return
                self._moved()
                yield piece
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()

    def _compare(
        self,
        writer: CheckedWriter,
        lo: int,
        hi: int,
        data: bytes | memoryview | None,
        data_start: int,
    ) -> int | None:
        assert self._reader is not None
        pos = lo
        while pos < hi:
            n = min(VERIFY_BLOCK, hi - pos)
            at = pos - data_start
            want = None if data is None else memoryview(data)[at : at + n]
            with self._waiting("target"), self._reader.view(pos, n) as got:
                if not (all_zeros(got) if want is None else same_bytes(got, want)):
                    return pos + _first_difference(got, bytes(n) if want is None else want)
            self._moved()
            pos += n
        return None

    # -- resume ------------------------------------------------------------------------

    def _reverify_last(self, stage: Stage, start: _Position, writer: CheckedWriter) -> bool:
        """Re-check the extent written last before the checkpoint; False: redo the stage."""
        if start.last_extent is None or start.action_index >= len(stage.actions):
            return True
        action = stage.actions[start.action_index]
        lo, hi = start.last_extent
        lo, hi = max(lo, action.offset), min(hi, action.stop)
        if lo >= hi:
            return True
        self._settle(lo, hi - lo)
        try:
            bad = self._mismatch_in(writer, action, lo, hi)
        except ArchiveError:
            bad = lo  # cannot confirm it: rewrite rather than trust it
        if bad is None:
            self._note(
                "last-part-good",
                f"the last part written before the stop reads back correctly ({stage.title})",
            )
            return True
        self._note(
            "last-part-rewritten",
            f"the last part written before the stop did not read back the same (byte {bad}); "
            f"writing {stage.title!r} again from its start",
            byte=bad,
        )
        return False

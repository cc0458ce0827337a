"""The checkpoint journal: how far a restore got, kept where it survives a reboot.

Written durably (temp file, fsync, rename, directory fsync) only after the data it
vouches for was flushed; `resume` and the wizard read it to continue a restore.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from layout.models import DiskIdentity, Frozen
from layout.plan import Plan
from layout.probe import MountEntry, read_mounts
from restore_tui.progress import percent

JOURNAL_SUFFIX = ".restore-journal.json"
JOURNAL_VERSION = 1


class JournalError(Exception):
    """A journal that cannot be read or written; the message says what to do."""


class Checkpoint(Frozen):
    """One durable record. Everything before (stage, action, position) is on the target."""

    journal_version: Literal[1] = 1
    plan_digest: str
    plan: Plan
    plan_path: str | None = None
    archive_path: str
    target_path: str
    target_identity: DiskIdentity
    started: datetime
    updated: datetime
    completed_stages: tuple[str, ...] = ()
    current_stage: str | None = None
    # Inside ``current_stage``: actions before ``action_index`` are complete, and the
    # target bytes [action.offset, action.offset + done_in_action) of that action too.
    action_index: int = Field(default=0, ge=0)
    done_in_action: int = Field(default=0, ge=0)
    # Target byte range written last before this record: re-verified on resume.
    last_extent: tuple[int, int] | None = None
    finished: bool = False
    # The engine's own progress units at this record (stored bytes for copies, so what
    # really moves): the percent the progress screen and lines showed, for the resume
    # offer to repeat. Absent in records of older versions (then ``bytes_done`` is used).
    done_units: int | None = Field(default=None, ge=0)
    total_units: int | None = Field(default=None, ge=0)

    @property
    def started_writing(self) -> bool:
        """True once this plan may have changed the target (the table stage comes first)."""
        return bool(self.completed_stages) or self.current_stage is not None

    def bytes_done(self) -> int:
        """Bytes of the plan known to be on the target."""
        done = 0
        for stage in self.plan.stages:
            if stage.name in self.completed_stages:
                done += stage.bytes_to_write
            elif stage.name == self.current_stage:
                done += sum(a.length for a in stage.actions[: self.action_index])
                done += self.done_in_action
        return done

    def percent_done(self) -> int:
        """How far the restore is, as every front-end shows it (100 only when finished)."""
        if self.finished:
            return 100
        if self.done_units is not None and self.total_units:
            done, total = self.done_units, self.total_units
        else:
            done, total = self.bytes_done(), sum(s.bytes_to_write for s in self.plan.stages)
        return min(99, percent(done, total))


@dataclass(frozen=True)
class JournalSummary:
    """What the wizard and `resume` show about an unfinished restore."""

    path: Path
    archive_path: str
    target_path: str
    target_description: str
    stage_number: int  # 1-based stage being worked on (the next one after a boundary)
    stage_count: int
    stage_title: str
    percent: int
    updated: datetime
    finished: bool

    def describe(self) -> str:
        archive = Path(self.archive_path).name
        if self.finished:
            return f"Restoring {archive} onto {self.target_description} finished"
        return (
            f"Resume restoring {archive} onto {self.target_description} "
            f"(stage {self.stage_number} of {self.stage_count}, {self.percent} %)"
        )


def describe_disk(record: Checkpoint) -> str:
    """The disk a restore was writing, by its one name, and the /dev name it had then
    (which may belong to another disk after a restart)."""
    target = record.plan.target
    if target.identity.bus == "image":
        return f"{target.name} at {record.target_path}"
    return f"{target.name} (it was {record.target_path} then)"


def summarize(record: Checkpoint, path: Path) -> JournalSummary:
    stages = record.plan.stages
    number = len(stages)
    for i, stage in enumerate(stages, start=1):
        if stage.name not in record.completed_stages:
            number = i
            break
    title = stages[number - 1].title if stages else ""
    return JournalSummary(
        path=path,
        archive_path=record.archive_path,
        target_path=record.target_path,
        target_description=describe_disk(record),
        stage_number=number,
        stage_count=len(stages),
        stage_title=title,
        percent=record.percent_done(),
        updated=record.updated,
        finished=record.finished,
    )


# -- where journals live -----------------------------------------------------------------


def state_dir() -> Path:
    """``$XDG_STATE_HOME/restore-tui`` (default ``~/.local/state/restore-tui``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "restore-tui"


def beside_path(archive_path: str | os.PathLike[str]) -> Path:
    """The journal beside the archive: ``<archive>.restore-journal.json``.

    Beside the backup is where it survives a reboot of rescue media, whose own
    filesystem is usually a RAM disk. (A Clonezilla image directory gets its
    journal next to the directory.)
    """
    archive = Path(os.path.abspath(archive_path))
    return archive.with_name(archive.name + JOURNAL_SUFFIX)


def state_path(archive_path: str | os.PathLike[str]) -> Path:
    """The fallback journal in the state directory, named after the archive's full path."""
    archive = Path(os.path.abspath(archive_path))
    tag = hashlib.sha256(str(archive).encode()).hexdigest()[:12]
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", archive.name)[:80]
    return state_dir() / f"{safe}-{tag}{JOURNAL_SUFFIX}"


# Filesystems whose contents are gone after a restart: a rescue system's own files.
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
# A live system's root is often an overlay whose writable layer is in memory.
LIVE_FILESYSTEMS = frozenset({"overlay", "aufs"})


def lost_at_restart(path: Path, mounts: Iterable[MountEntry] | None = None) -> str | None:
    """Why a journal at ``path`` would not survive a restart, in plain words (None: it would)."""
    try:
        st = os.stat(path.parent if not path.is_dir() else path)
    except OSError:
        return None
    devno = (os.major(st.st_dev), os.minor(st.st_dev))
    entries = read_mounts() if mounts is None else mounts
    fstype = next((m.fstype for m in entries if m.devno == devno), None)
    if fstype in MEMORY_FILESYSTEMS:
        why = f"it is in memory ({fstype})"
    elif fstype in LIVE_FILESYSTEMS:
        why = f"it is on the live system's own files ({fstype}), usually kept in memory"
    else:
        return None
    return (
        f"the record of this restore is kept in {path.parent}, but {why}: it is lost if the "
        "computer restarts, and the restore would then start over. To be able to resume after "
        "a restart, keep the backup on a writable disk: the record is kept beside it"
    )


def candidate_paths(archive_path: str | os.PathLike[str]) -> list[Path]:
    return [beside_path(archive_path), state_path(archive_path)]


# -- durable writing ---------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so a crash leaves either the old or the new file whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        data = text.encode()
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Journal:
    """The journal of one restore: load, save checkpoints, finish.

    The file is chosen once: beside the archive when that directory takes a
    file, else the state directory. :attr:`path` says where, for the user.
    """

    def __init__(self, path: Path, record: Checkpoint) -> None:
        self.path = path
        self.record = record

    @classmethod
    def create(
        cls,
        plan: Plan,
        *,
        archive_path: str | os.PathLike[str],
        target_path: str,
        target_identity: DiskIdentity,
        plan_path: str | None = None,
        location: Path | None = None,
    ) -> Journal:
        now = datetime.now(UTC)
        record = Checkpoint(
            plan_digest=plan.digest(),
            plan=plan,
            plan_path=plan_path,
            archive_path=os.path.abspath(archive_path),
            target_path=target_path,
            target_identity=target_identity,
            started=now,
            updated=now,
        )
        candidates = [location] if location is not None else candidate_paths(archive_path)
        problems: list[str] = []
        for path in candidates:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                journal = cls(path, record)
                journal._write()
                return journal
            except OSError as exc:
                problems.append(f"{path.parent}: {exc.strerror or exc}")
        raise JournalError(
            "cannot record restore progress anywhere (" + "; ".join(problems) + "). Free some "
            "space or make the backup's folder writable, then try again."
        )

    @classmethod
    def load(cls, path: Path) -> Journal:
        try:
            text = path.read_text()
        except OSError as exc:
            raise JournalError(f"cannot read the restore record {path}: {exc.strerror}") from exc
        try:
            record = Checkpoint.model_validate_json(text)
        except ValidationError as exc:
            raise JournalError(
                f"the restore record {path} is damaged or from another version of restore-tui "
                f"({exc.error_count()} problems); delete it to start the restore from the "
                "beginning"
            ) from exc
        return cls(path, record)

    def _write(self) -> None:
        write_durably(self.path, self.record.model_dump_json(indent=1))

    def save(self, **changes: object) -> None:
        """Record progress. Call only after the data it vouches for was flushed."""
        self.record = self.record.model_copy(update={**changes, "updated": datetime.now(UTC)})
        # model_copy does not validate; round-trip through validation catches bad updates.
        self.record = Checkpoint.model_validate(self.record.model_dump())
        self._write()

    def summary(self) -> JournalSummary:
        return summarize(self.record, self.path)


# -- finding unfinished restores ---------------------------------------------------------


def _journals_in(directory: Path) -> Iterator[Path]:
    with contextlib.suppress(OSError):
        yield from sorted(directory.glob("*" + JOURNAL_SUFFIX))


def _try_load(path: Path) -> Journal | None:
    try:
        return Journal.load(path)
    except JournalError:
        return None


def find_for_archive(archive_path: str | os.PathLike[str]) -> Journal | None:
    """The newest unfinished journal for this archive (beside it or in the state dir)."""
    wanted = os.path.abspath(archive_path)
    found = [j for j in map(_try_load, candidate_paths(archive_path)) if j is not None]
    found = [j for j in found if not j.record.finished and j.record.archive_path == wanted]
    return max(found, key=lambda j: j.record.updated, default=None)


def default_search_dirs() -> list[Path]:
    """Where journals are looked for without an archive: the state directory, the current
    directory, and the top two folder levels of removable-media mount points."""
    dirs = [state_dir(), Path.cwd()]
    for root in (Path("/media"), Path("/mnt"), Path("/run/media")):
        with contextlib.suppress(OSError):
            for first in sorted(root.iterdir()) if root.is_dir() else []:
                dirs.append(first)
                with contextlib.suppress(OSError):
                    dirs.extend(sorted(d for d in first.iterdir() if d.is_dir()))
    return dirs


def find_unfinished(
    archive_paths: Iterable[str | os.PathLike[str]] = (),
    search_dirs: Iterable[Path] | None = None,
) -> list[JournalSummary]:
    """Every unfinished restore recorded beside the given archives or in ``search_dirs``
    (default: :func:`default_search_dirs`), newest first."""
    paths: list[Path] = [beside_path(a) for a in archive_paths]
    paths.extend(state_path(a) for a in archive_paths)
    for directory in default_search_dirs() if search_dirs is None else search_dirs:
        paths.extend(_journals_in(directory))
    seen: set[Path] = set()
    out: list[JournalSummary] = []
    for path in paths:
        if path in seen or not path.exists():
            continue
        seen.add(path)
        journal = _try_load(path)
        if journal is not None and not journal.record.finished:
            out.append(journal.summary())
    out.sort(key=lambda s: s.updated, reverse=True)
    return out

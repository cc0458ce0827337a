"""Step 1 of the wizard: choose the backup (found on attached media, browsed, or typed).

An unfinished restore found at start is offered first, so a person whose computer
restarted half-way through continues instead of starting over.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DirectoryTree, Footer, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from archive import open_archive
from archive.base import Archive
from archive.errors import ArchiveError
from restore_tui.screens.common import Step, StepHeader, human_size

NATIVE_MAGIC = b"RTUI-ARC"
NATIVE_SUFFIX = ".rtui"
# Bounds on the scan of attached media: a few levels, a few thousand entries, so a
# huge disk full of photos never makes the first screen wait.
SCAN_DEPTH = 2
SCAN_MAX_ENTRIES = 20_000
SKIP_TOP = {"/proc", "/sys", "/dev", "/run", "/tmp", "/var/lib", "/usr", "/boot", "/snap"}


@dataclass(frozen=True)
class FoundBackup:
    path: Path
    kind: str  # "restore-tui archive" / "Clonezilla image"
    size: int


@dataclass(frozen=True)
class ResumeOffer:
    """An unfinished restore: the sentence shown, and what the app needs to continue it."""

    text: str
    payload: Any


@dataclass(frozen=True)
class BackupChosen:
    archive: Archive


@dataclass(frozen=True)
class ResumeChosen:
    offer: ResumeOffer


ChooseResult = BackupChosen | ResumeChosen


def media_roots(mounts_file: str = "/proc/self/mounts") -> list[Path]:
    """Mount points of real media (a /dev source), where a backup disk would be mounted."""
    roots: list[Path] = []
    try:
        with open(mounts_file, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return [Path(p) for p in ("/media", "/mnt", "/run/media") if Path(p).is_dir()]
    for line in lines:
        parts = line.split()
        if len(parts) < 2 or not parts[0].startswith("/dev/"):
            continue
        # /proc/mounts escapes spaces as \040.
        point = Path(parts[1].replace("\\040", " "))
        if point not in roots:
            roots.append(point)
    for extra in ("/media", "/mnt", "/run/media"):
        p = Path(extra)
        if p.is_dir() and p not in roots:
            roots.append(p)
    return roots


def backup_kind(path: Path) -> str | None:
    """ "restore-tui archive" / "Clonezilla image" when ``path`` looks like one, else None."""
    try:
        if path.is_file():
            with open(path, "rb") as f:
                if f.read(len(NATIVE_MAGIC)) == NATIVE_MAGIC:
                    return "restore-tui archive"
            return None
        if path.is_dir() and (
            (path / "clonezilla-img").exists()
            or ((path / "disk").is_file() and (path / "parts").is_file())
        ):
            return "Clonezilla image"
    except OSError:
        return None
    return None


def _walk(root: Path, depth: int, budget: list[int]) -> Iterator[Path]:
    if depth < 0 or budget[0] <= 0:
        return
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        budget[0] -= 1
        if budget[0] <= 0:
            return
        path = Path(entry.path)
        if str(path) in SKIP_TOP or entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            continue
        if entry.name.endswith(NATIVE_SUFFIX) or (is_dir and backup_kind(path)):
            yield path
        elif is_dir:
            yield from _walk(path, depth - 1, budget)


def find_backups(
    roots: Iterable[Path], *, depth: int = SCAN_DEPTH, max_entries: int = SCAN_MAX_ENTRIES
) -> list[FoundBackup]:
    """Backups in ``roots`` and up to ``depth`` folders below them, in a stable order."""
    found: dict[Path, FoundBackup] = {}
    budget = [max_entries]
    for root in roots:
        for path in _walk(Path(root), depth, budget):
            kind = backup_kind(path)
            if kind is None or path in found:
                continue
            if path.is_file():
                size = path.stat().st_size
            else:
                size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
            found[path] = FoundBackup(path, kind, size)
    return sorted(found.values(), key=lambda b: str(b.path))


class BrowseScreen(ModalScreen[Path | None]):
    """A file browser for picking a backup file or folder by hand."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss_none", "Cancel")]

    def __init__(self, start: Path) -> None:
        super().__init__()
        self.start = start

    def compose(self) -> ComposeResult:
        with Vertical(id="browse-box"):
            yield Label("Pick the backup file (or a Clonezilla image folder), then press Enter.")
            yield DirectoryTree(str(self.start), id="browse-tree")
            with Horizontal(classes="buttons"):
                yield Button("Use this folder", id="use-folder")
                yield Button("Cancel", id="cancel")

    @on(DirectoryTree.FileSelected)
    def _file(self, event: DirectoryTree.FileSelected) -> None:
        self.dismiss(Path(event.path))

    @on(Button.Pressed, "#use-folder")
    def _folder(self) -> None:
        node = self.query_one(DirectoryTree).cursor_node
        if node is not None and node.data is not None:
            self.dismiss(Path(node.data.path))

    @on(Button.Pressed, "#cancel")
    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class ChooseBackupScreen(Screen[ChooseResult]):
    """Where is the backup? Found ones first, then a path field and a browser."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+o", "browse", "Browse files"),
    ]

    class Opened(Message):
        def __init__(self, archive: Archive | None, error: str | None) -> None:
            super().__init__()
            self.archive = archive
            self.error = error

    def __init__(
        self,
        step: Step,
        *,
        roots: Callable[[], list[Path]] = media_roots,
        resume_offers: Iterable[ResumeOffer] = (),
        initial_path: str | None = None,
        error: str | None = None,
        dry_run: bool = False,
    ) -> None:
        super().__init__()
        self.step = step
        self.roots = roots
        self.resume_offers = list(resume_offers)
        self.initial_path = initial_path
        self.initial_error = error
        self.dry_run = dry_run
        self.found: list[FoundBackup] = []

    def compose(self) -> ComposeResult:
        yield StepHeader(
            self.step,
            "Which backup do you want to restore? Pick one found on the attached disks, "
            "or type where it is.",
            dry_run=self.dry_run,
        )
        with VerticalScroll(id="body"):
            if self.resume_offers:
                yield Static(
                    "[b]An unfinished restore was found.[/b] Continue it from where it stopped:",
                    classes="notice",
                )
                for i, offer in enumerate(self.resume_offers):
                    yield Button(offer.text, id=f"resume-{i}", classes="resume")
            yield Label("Backups found on the attached disks:", classes="section")
            yield OptionList(id="found")
            yield Static("Looking at the attached disks…", id="scan-status", classes="hint")
            yield Label(
                "Or type the path of the backup file or Clonezilla folder:", classes="section"
            )
            with Horizontal(classes="path-row"):
                yield Input(
                    value=self.initial_path or "", placeholder="/media/usb/backup.rtui", id="path"
                )
                yield Button("Open", id="open", variant="primary")
            yield Static(self.initial_error or "", id="error", classes="error")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#found", OptionList).display = False
        if self.resume_offers:
            self.query_one("#resume-0", Button).focus()
        self.scan()

    @work(thread=True, exit_on_error=False, group="scan")
    def scan(self) -> None:
        found = find_backups(self.roots())
        self.app.call_from_thread(self._show_found, found)

    def _show_found(self, found: list[FoundBackup]) -> None:
        self.found = found
        options = self.query_one("#found", OptionList)
        status = self.query_one("#scan-status", Static)
        options.clear_options()
        for backup in found:
            options.add_option(
                Option(
                    f"{backup.path.name}  ·  {backup.kind}, {human_size(backup.size)}\n"
                    f"   in {backup.path.parent}",
                    id=str(backup.path),
                )
            )
        options.display = bool(found)
        status.update(
            ""
            if found
            else "None found on the attached disks. Plug in the disk that holds "
            "the backup, or type its path below."
        )
        status.display = not found
        if found and not self.resume_offers and not self.initial_path:
            options.focus()
            options.highlighted = 0
        elif not found and not self.resume_offers:
            self.query_one("#path", Input).focus()

    @on(Button.Pressed, ".resume")
    def _resume(self, event: Button.Pressed) -> None:
        index = int((event.button.id or "resume-0").split("-")[1])
        self.dismiss(ResumeChosen(self.resume_offers[index]))

    @on(OptionList.OptionSelected, "#found")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.open_path(event.option.id or "")

    @on(Input.Submitted, "#path")
    @on(Button.Pressed, "#open")
    def _typed(self) -> None:
        self.open_path(self.query_one("#path", Input).value)

    def action_browse(self) -> None:
        typed = Path(self.query_one("#path", Input).value or "/")
        start = typed if typed.is_dir() else typed.parent if typed.parent.is_dir() else Path("/")

        def chosen(path: Path | None) -> None:
            if path is not None:
                self.query_one("#path", Input).value = str(path)
                self.open_path(str(path))

        self.app.push_screen(BrowseScreen(start), chosen)

    def open_path(self, text: str) -> None:
        text = text.strip()
        if not text:
            self._error("Type the path of the backup first (for example /media/usb/backup.rtui).")
            return
        self._error(f"Opening {text}…")
        self._open(Path(text).expanduser())

    @work(thread=True, exit_on_error=False, group="open", exclusive=True)
    def _open(self, path: Path) -> None:
        try:
            archive = open_archive(path)
        except ArchiveError as exc:
            self.post_message(self.Opened(None, str(exc)))
        except OSError as exc:
            self.post_message(self.Opened(None, f"cannot read {path}: {exc.strerror or exc}"))
        else:
            self.post_message(self.Opened(archive, None))

    @on(Opened)
    def _opened(self, message: Opened) -> None:
        if message.archive is not None:
            self.dismiss(BackupChosen(message.archive))
        else:
            self._error(message.error or "that backup could not be opened")

    def _error(self, text: str) -> None:
        self.query_one("#error", Static).update(text)

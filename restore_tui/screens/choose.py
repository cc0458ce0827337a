"""Step 1 of the wizard: choose the backup (found on attached disks, browsed, or typed).

Backups are found on every attached disk, also on disks that are not mounted (each
partition is looked inside read-only, see ``restore_tui.finding``). An unfinished
restore found at start is offered first, so a person whose computer restarted
half-way through continues instead of starting over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import (
    Button,
    DirectoryTree,
    Footer,
    Input,
    Label,
    OptionList,
    Select,
    Static,
)
from textual.widgets.option_list import Option

from archive import open_archive
from archive.base import Archive
from archive.errors import ArchiveError
from layout.probe import Probe, probe_for
from restore_tui.finding import (
    NATIVE_MAGIC,
    NATIVE_SUFFIX,
    RECORD_FILESYSTEMS,
    SCAN_DEPTH,
    SKIP_TOP,
    FindError,
    FoundBackup,
    OpenedBackup,
    Place,
    ReadOnlyMount,
    Scan,
    backup_kind,
    find,
    find_backups,
    keeps_record_beside,
    media_roots,
    nothing_found_text,
)
from restore_tui.screens.common import Step, StepHeader, TextField, human_size

#: shown when a backup found is on a disk opened read-only (rescue media mount nothing)
READ_ONLY_WORDS = (
    "Disks that are not mounted are looked at read-only. When you choose a backup on one, "
    "restore-tui asks whether it may keep the restore's progress record beside it: "
    "otherwise the record is kept in this computer's memory, and if the computer restarts "
    "during the restore, it starts again from the beginning."
)

__all__ = [
    "NATIVE_MAGIC",
    "NATIVE_SUFFIX",
    "SCAN_DEPTH",
    "SKIP_TOP",
    "BackupChosen",
    "BrowseScreen",
    "Browsed",
    "ChooseBackupScreen",
    "FoundBackup",
    "ResumeChosen",
    "ResumeOffer",
    "backup_kind",
    "find_backups",
    "media_roots",
]


@dataclass(frozen=True)
class ResumeOffer:
    """An unfinished restore: the sentence shown, and what the app needs to continue it."""

    text: str
    payload: Any


@dataclass(frozen=True)
class BackupChosen:
    """The backup to restore from.

    ``cleanup`` is set when the backup lives on a partition that was not mounted: that
    partition stays mounted read-only while the archive is in use; ``cleanup()`` (once,
    when done with the archive) closes the archive and unmounts the partition.
    """

    archive: Archive
    cleanup: Callable[[], None] | None = None


@dataclass(frozen=True)
class ResumeChosen:
    offer: ResumeOffer


ChooseResult = BackupChosen | ResumeChosen


@dataclass(frozen=True)
class Browsed:
    """What the file browser picked, and the read-only mount it lies on (if it made one)."""

    path: Path
    mount: ReadOnlyMount | None = None


class KeepRecordScreen(ModalScreen[bool]):
    """A backup on a disk that is not mounted: may the restore's record go beside it?

    On rescue media the computer's own files are in memory: a progress record kept there
    is lost if the computer restarts, and the restore could not continue. Beside the
    backup it survives — but that needs the backup's disk opened for writing, which is
    asked, never assumed.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "read_only", "Read-only")]

    def __init__(self, backup: FoundBackup) -> None:
        super().__init__()
        self.backup = backup

    def compose(self) -> ComposeResult:
        with Vertical(id="browse-box"):
            yield Static(
                f"[b]{escape(self.backup.name)}[/b] is on {escape(self.backup.disk)}, which "
                "is not mounted.",
                id="browse-title",
            )
            yield Static(
                "While it restores, restore-tui keeps a small progress record so that a "
                "restore cut off by a restart continues where it stopped. On this rescue "
                "system that record is lost at a restart unless it is kept beside the "
                "backup, which needs its disk opened for writing. Only that record is "
                "written there; the backup itself is never changed.",
                classes="hint",
            )
            with Horizontal(classes="buttons"):
                yield Button("Keep the record beside it", id="writable", variant="primary")
                yield Button("Read-only", id="read-only")

    def on_mount(self) -> None:
        self.query_one("#writable", Button).focus()

    @on(Button.Pressed, "#writable")
    def _writable(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#read-only")
    def action_read_only(self) -> None:
        self.dismiss(False)


class PlainDirectoryTree(DirectoryTree):
    """Folder and file marks a rescue console's font can draw (not emoji)."""

    ICON_NODE = "▸ "
    ICON_NODE_EXPANDED = "▾ "
    ICON_FILE = "  "


class BrowseScreen(ModalScreen[Browsed | None]):
    """A file browser for picking a backup file or folder by hand, on any attached disk.

    ``places`` are the filesystems of the attached disks: picking one that is not mounted
    mounts it read-only (unmounted again when another is picked or the browser closes
    without a choice; a choice hands its mount to the caller).
    """

    DEFAULT_CSS = """
    #browse-title { height: auto; }
    #browse-status { height: auto; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss_none", "Cancel")]
    TITLE_TEXT = "Pick the backup file or Clonezilla folder, then press Enter."

    def __init__(
        self, start: Path | None, places: Sequence[Place] = (), place: int | None = None
    ) -> None:
        super().__init__()
        self.start = start
        self.places = list(places)
        self.place = place
        #: the folder the tree shows now (None while a disk is being mounted)
        self.root: Path | None = start if place is None else None
        self.held: ReadOnlyMount | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="browse-box"):
            yield Static(self.TITLE_TEXT, id="browse-title")
            if self.places:
                yield Select(
                    [(p.words, i) for i, p in enumerate(self.places)],
                    prompt="Look on another disk…",
                    value=self.place if self.place is not None else Select.NULL,
                    id="browse-place",
                )
            yield Static("", id="browse-status", classes="hint")
            yield PlainDirectoryTree(str(self.root or "/"), id="browse-tree")
            with Horizontal(classes="buttons"):
                yield Button("Use this folder", id="use-folder")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        if self.place is not None:
            self._open_place(self.place)
        self.query_one(DirectoryTree).focus()

    @on(Select.Changed, "#browse-place")
    def _place_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, int) and (event.value != self.place or self.root is None):
            self.place = event.value
            self._open_place(event.value)

    def _open_place(self, index: int) -> None:
        place = self.places[index]
        if place.mounted_at is not None:
            self._show(Path(place.mounted_at), None)
            return
        self.query_one("#browse-status", Static).update(f"Opening {place.words} read-only…")
        self._mount_place(place)

    @work(thread=True, exit_on_error=False, group="browse-mount", exclusive=True)
    def _mount_place(self, place: Place) -> None:
        try:
            mount = ReadOnlyMount(place.device, place.filesystem, place.label or "")
        except FindError as exc:
            self.app.call_from_thread(self._status, f"Cannot look inside {place.words}: {exc}")
            return
        self.app.call_from_thread(self._show, mount.point, mount)

    def _status(self, text: str) -> None:
        if self.is_attached:
            self.query_one("#browse-status", Static).update(text)

    def _show(self, root: Path, mount: ReadOnlyMount | None) -> None:
        if not self.is_attached:  # closed meanwhile: give the mount back
            if mount is not None:
                mount.close()
            return
        old, self.held = self.held, mount
        self.root = root
        self.query_one(DirectoryTree).path = root
        self._status("")
        if old is not None and old is not mount:
            old.close()

    def _pick(self, path: Path) -> None:
        mount = self.held
        if mount is not None and not path.is_relative_to(mount.point):
            mount.close()
            mount = None
        self.held = None
        self.dismiss(Browsed(path, mount))

    @on(DirectoryTree.FileSelected)
    def _file(self, event: DirectoryTree.FileSelected) -> None:
        self._pick(Path(event.path))

    @on(Button.Pressed, "#use-folder")
    def _folder(self) -> None:
        node = self.query_one(DirectoryTree).cursor_node
        if node is not None and node.data is not None:
            self._pick(Path(node.data.path))

    @on(Button.Pressed, "#cancel")
    def action_dismiss_none(self) -> None:
        self._release()
        self.dismiss(None)

    def _release(self) -> None:
        if self.held is not None:
            self.held.close()
            self.held = None

    def on_unmount(self) -> None:
        self._release()


class ChooseBackupScreen(Screen[ChooseResult]):
    """Where is the backup? Found ones first, then a path field and a browser.

    The attached disks are looked inside (read-only) when ``probe`` is given, or when the
    screen looks at the default places (``roots`` is :func:`media_roots`: then this
    computer's disks are probed); otherwise only the folders ``roots()`` are searched
    (the demo). Disks in ``exclude`` are never looked inside.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+o", "browse", "Browse files", key_display="Ctrl+O"),
    ]

    class Opened(Message):
        def __init__(
            self,
            archive: Archive | None,
            error: str | None,
            cleanup: Callable[[], None] | None = None,
        ) -> None:
            super().__init__()
            self.archive = archive
            self.error = error
            self.cleanup = cleanup

    def __init__(
        self,
        step: Step,
        *,
        roots: Callable[[], list[Path]] = media_roots,
        probe: Probe | None = None,
        look_inside: bool | None = None,
        exclude: Iterable[str] = (),
        resume_offers: Iterable[ResumeOffer] = (),
        initial_path: str | None = None,
        error: str | None = None,
        dry_run: bool = False,
    ) -> None:
        super().__init__()
        self.step = step
        self.roots = roots
        self.probe = probe
        if look_inside is None:
            look_inside = probe is not None or roots is media_roots
        self.look_inside = look_inside
        self.exclude = list(exclude)
        self.resume_offers = list(resume_offers)
        self.initial_path = initial_path
        self.initial_error = error
        self.dry_run = dry_run
        self.found: list[FoundBackup] = []
        self.scanned: Scan | None = None
        #: a disk the file browser mounted, until the backup on it is handed over
        self._browse_mount: ReadOnlyMount | None = None

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
            yield Static(READ_ONLY_WORDS, id="read-only", classes="hint")
            yield Label(
                "Or type the path of the backup file or Clonezilla folder:", classes="section"
            )
            with Horizontal(classes="path-row"):
                yield TextField(
                    value=self.initial_path or "", placeholder="/media/usb/backup.rtui", id="path"
                )
                yield Button("Open", id="open", variant="primary")
            yield Static(self.initial_error or "", id="error", classes="error")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#found", OptionList).display = False
        self.query_one("#read-only", Static).display = False
        if self.resume_offers:
            self.query_one("#resume-0", Button).focus()
        self.scan()

    def on_unmount(self) -> None:
        if self._browse_mount is not None:
            self._browse_mount.close()
            self._browse_mount = None

    # -- finding -------------------------------------------------------------------

    @work(thread=True, exit_on_error=False, group="scan")
    def scan(self) -> None:
        probe = self.probe
        skipped: tuple[str, ...] = ()
        if probe is None and self.look_inside:
            try:
                probe = probe_for()
            except Exception as exc:  # a rescue system without udev or sysfs
                skipped = (f"the disks could not be listed ({exc})",)
        try:
            result = find(
                probe, roots=self.roots(), exclude=self.exclude, progress=self._looking
            )
        except Exception as exc:  # never leave step 1 saying "Looking…" for ever
            result = Scan(skipped=(f"the search stopped ({exc})",))
        if skipped:
            result = Scan(
                result.backups, result.disks, result.folders, skipped + result.skipped,
                result.places,
            )  # fmt: skip
        self.app.call_from_thread(self._show_found, result)

    def _looking(self, words: str) -> None:
        """From the scan's thread: which filesystem is being looked inside now."""
        self.app.call_from_thread(self._scan_status, f"Looking inside {words}…")

    def _scan_status(self, text: str) -> None:
        if self.is_attached and self.scanned is None:
            self.query_one("#scan-status", Static).update(text)

    def _show_found(self, scan: Scan) -> None:
        self.scanned = scan
        found = list(scan.backups)
        self.found = found
        options = self.query_one("#found", OptionList)
        status = self.query_one("#scan-status", Static)
        options.clear_options()
        for i, backup in enumerate(found):
            # On a disk: the disk on one line, the partition and folder on the next.
            where = (
                f"   on {backup.disk}\n   {backup.place}, {backup.folder}"
                if backup.device is not None
                else f"   {backup.where}"
            )
            options.add_option(
                Option(
                    f"{backup.name}  ·  {backup.kind}, {human_size(backup.size)}\n{where}",
                    id=f"found-{i}",
                )
            )
        options.display = bool(found)
        self.query_one("#read-only", Static).display = not all(map(keeps_record_beside, found))
        if found:
            text = "Could not look inside: " + "; ".join(scan.skipped) + "." if scan.skipped else ""
        else:
            text = nothing_found_text(scan)
        status.update(text)
        status.display = bool(text)
        if found and not self.resume_offers and not self.initial_path:
            options.focus()
            options.highlighted = 0
        elif not found and not self.resume_offers:
            self.query_one("#path", Input).focus()

    # -- choosing ------------------------------------------------------------------

    @on(Button.Pressed, ".resume")
    def _resume(self, event: Button.Pressed) -> None:
        index = int((event.button.id or "resume-0").split("-")[1])
        self.dismiss(ResumeChosen(self.resume_offers[index]))

    @on(OptionList.OptionSelected, "#found")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        index = int((event.option.id or "found-0").split("-")[1])
        backup = self.found[index]
        if backup.path is not None:
            self.open_path(str(backup.path))
            return
        if self.dry_run or backup.filesystem not in RECORD_FILESYSTEMS:
            self._open_read_only_or_not(backup, False)
            return
        # Its disk is not mounted: ask whether the restore's record may be kept on it.
        self.app.push_screen(
            KeepRecordScreen(backup), lambda ok: self._open_read_only_or_not(backup, bool(ok))
        )

    def _open_read_only_or_not(self, backup: FoundBackup, writable: bool) -> None:
        doing = "so the restore's record can be kept on it" if writable else "changing nothing"
        self._error(f"Opening {backup.name} ({doing})…")
        self._open_found(backup, writable)

    @work(thread=True, exit_on_error=False, group="open", exclusive=True)
    def _open_found(self, backup: FoundBackup, writable: bool = False) -> None:
        try:
            opened = OpenedBackup(backup, writable=writable)
        except FindError as exc:
            self.post_message(self.Opened(None, f"cannot open {backup.text}: {exc}"))
        except ArchiveError as exc:
            self.post_message(self.Opened(None, str(exc)))
        except OSError as exc:
            self.post_message(
                self.Opened(None, f"cannot read {backup.text}: {exc.strerror or exc}")
            )
        else:
            self.post_message(self.Opened(opened.archive, None, opened.close))

    @on(Input.Submitted, "#path")
    @on(Button.Pressed, "#open")
    def _typed(self) -> None:
        self.open_path(self.query_one("#path", Input).value)

    def browse_start(self) -> tuple[Path | None, int | None]:
        """Where the file browser opens: (folder, None), or (None, index of a disk place).

        The folder typed, else the filesystem of the first backup found, else the first
        filesystem of a removable (USB) disk, else of any attached disk, else a folder
        root other than ``/``; ``/`` only when there is nothing else.
        """
        typed_text = self.query_one("#path", Input).value.strip()
        if typed_text:
            typed = Path(typed_text).expanduser()
            for candidate in (typed, typed.parent):
                if candidate.is_dir():
                    return candidate, None
        places = list(self.scanned.places) if self.scanned else []
        for backup in self.found:
            for i, place in enumerate(places):
                if place.device == backup.device:
                    return None, i
            if backup.mounted_at is not None:
                return Path(backup.mounted_at), None
        for want_removable in (True, False):
            for i, place in enumerate(places):
                if place.removable == want_removable and place.mounted_at != "/":
                    return None, i
        for root in self.roots():
            if str(root) != "/" and Path(root).is_dir():
                return Path(root), None
        return Path("/"), None

    def action_browse(self) -> None:
        start, place = self.browse_start()
        places = list(self.scanned.places) if self.scanned else []

        def chosen(picked: Browsed | None) -> None:
            if picked is None:
                return
            self._keep_browse_mount(picked.mount)
            self.query_one("#path", Input).value = str(picked.path)
            self.open_path(str(picked.path))

        self.app.push_screen(BrowseScreen(start, places, place), chosen)

    def _keep_browse_mount(self, mount: ReadOnlyMount | None) -> None:
        if self._browse_mount is not None and self._browse_mount is not mount:
            self._browse_mount.close()
        self._browse_mount = mount

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
        if message.archive is None:
            self._error(message.error or "that backup could not be opened")
            return
        archive, cleanup = message.archive, message.cleanup
        mount, self._browse_mount = self._browse_mount, None
        if mount is not None:
            if cleanup is None and archive.path.resolve().is_relative_to(mount.point.resolve()):
                # Opened from a disk the browser mounted: it stays mounted with the archive.
                def release(archive: Archive = archive, mount: ReadOnlyMount = mount) -> None:
                    archive.close()
                    mount.close()

                cleanup = release
            else:
                mount.close()
        self.dismiss(BackupChosen(archive, cleanup))

    def _error(self, text: str) -> None:
        self.query_one("#error", Static).update(text)

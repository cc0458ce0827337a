"""Step 2 of the wizard: what the backup holds, and "Check the backup".

Shows the source disk and every partition in plain words; checking reads the whole
backup in a worker thread with a progress bar, and can be skipped or cancelled.
"""

from __future__ import annotations

import threading
import time
from typing import ClassVar, Literal

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, ProgressBar, Static

from archive.base import Archive, VerifyReport
from archive.manifest import Role
from archive.roles import plain_name
from layout.probe import disk_words
from restore_tui.screens.common import (
    TERMS,
    Step,
    StepHeader,
    bus_words,
    human_size,
    when,
)

BackupResult = Literal["next", "back", "look"]
# Progress reaches the screen at most this often; the archive reports per chunk.
PROGRESS_INTERVAL = 0.1


class VerifyCancelled(Exception):
    """Raised inside the progress callback to stop a check the user cancelled."""


def partition_rows(archive: Archive) -> list[tuple[str, str, str, str, str]]:
    """(number, what it is, size, used, filesystem and label) for each partition."""
    manifest = archive.manifest
    rows = []
    for entry in manifest.table.partitions:
        try:
            image = manifest.image(entry.number)
            role = plain_name(image.role, entry.filesystem)
            used = human_size(image.used_bytes) if image.used_bytes is not None else "—"
        except KeyError:
            role = plain_name(Role.EXTENDED) if entry.kind == "extended" else "not in the backup"
            used = "—"
        fs = " ".join(x for x in (entry.filesystem, f"“{entry.label}”" if entry.label else "") if x)
        if entry.kind == "logical":
            role += " (inside the extended partition)"
        rows.append(
            (
                str(entry.number),
                role,
                human_size(entry.length_lba * manifest.table.sector_size),
                used,
                fs or "—",
            )
        )
    return rows


def partition_text(archive: Archive) -> str:
    """Two lines per partition: what it is, then its size, use and filesystem."""
    lines = ["[b]Partitions in the backup:[/b]"]
    for number, role, size, used, fs in partition_rows(archive):
        used_words = f", {used} used" if used != "—" else ""
        fs_words = f" · {fs}" if fs != "—" else ""
        lines.append(f" {number}. {role}")
        lines.append(f"    {size}{used_words}{fs_words}")
    return "\n".join(lines)


class BackupScreen(Screen[BackupResult]):
    """The backup's source disk, its partitions, and an optional full check."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("l", "look", "Look inside"),
    ]

    class Progress(Message):
        def __init__(self, done: int, total: int) -> None:
            super().__init__()
            self.done = done
            self.total = total

    class Checked(Message):
        def __init__(self, report: VerifyReport | None, error: str | None) -> None:
            super().__init__()
            self.report = report
            self.error = error

    def __init__(self, step: Step, archive: Archive, *, dry_run: bool = False) -> None:
        super().__init__()
        self.step = step
        self.archive = archive
        self.dry_run = dry_run
        self.cancel_check = threading.Event()
        self.checking = False
        self.report: VerifyReport | None = None

    def compose(self) -> ComposeResult:
        m = self.archive.manifest
        ident = m.source.identity
        yield StepHeader(self.step, "This is what the backup holds.", dry_run=self.dry_run)
        with VerticalScroll(id="body"):
            scheme = "MBR (the older kind)" if m.table.scheme == "msdos" else "GPT (the newer kind)"
            yield Static(
                f"[b]Backed-up disk:[/b] {disk_words(ident)}\n"
                f"Connection: {bus_words(ident.bus)} · partition table: {scheme}\n"
                f"[b]Made:[/b] {when(m.created)} by {m.creator} · {self.archive.format_name}\n"
                f"[b]File:[/b] {self.archive.path}",
                id="source",
            )
            yield Static(TERMS["table"], classes="hint", id="table-hint")
            yield Static(partition_text(self.archive), id="partitions")
            if any(p.kind != "primary" for p in m.table.partitions):
                yield Static(TERMS["extended"], classes="hint")
            yield Static(TERMS["verify"], classes="hint", id="verify-hint")
            yield ProgressBar(id="verify-bar", show_eta=False)
            yield Static("", id="verify-status")
        with Horizontal(classes="buttons"):
            yield Button("Check it (recommended)", id="check", variant="primary")
            yield Button("Skip the check", id="next")
            yield Button("Look inside", id="look")
            yield Button("Back", id="back")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#verify-bar", ProgressBar).display = False
        self.query_one("#check", Button).focus()

    # -- checking ------------------------------------------------------------------------

    @on(Button.Pressed, "#check")
    def _check_pressed(self) -> None:
        if self.checking:
            self.cancel_check.set()
            return
        self.checking = True
        self.cancel_check.clear()
        bar = self.query_one("#verify-bar", ProgressBar)
        bar.display = True
        self.call_after_refresh(
            self.query_one("#body", VerticalScroll).scroll_to_widget,
            self.query_one("#verify-status", Static),
            animate=False,
        )
        bar.update(total=max(1, self.archive.manifest.stored_bytes()), progress=0)
        self.query_one("#check", Button).label = "Stop checking"
        self.query_one("#next", Button).disabled = True
        self.query_one("#verify-status", Static).update("Checking every piece of the backup…")
        self.run_check()

    @work(thread=True, exit_on_error=False, group="verify", exclusive=True)
    def run_check(self) -> None:
        last = [0.0]

        def progress(done: int, total: int) -> None:
            if self.cancel_check.is_set():
                raise VerifyCancelled
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL or done >= total:
                last[0] = now
                self.post_message(self.Progress(done, total))

        try:
            report = self.archive.verify(progress)
        except VerifyCancelled:
            self.post_message(
                self.Checked(None, "Checking was stopped. You can check again or continue.")
            )
        except Exception as exc:  # shown to the user, never a crash
            self.post_message(self.Checked(None, f"The check could not finish: {exc}"))
        else:
            self.post_message(self.Checked(report, None))

    @on(Progress)
    def _progress(self, message: Progress) -> None:
        self.query_one("#verify-bar", ProgressBar).update(
            total=max(1, message.total), progress=message.done
        )

    @on(Checked)
    def _checked(self, message: Checked) -> None:
        self.checking = False
        status = self.query_one("#verify-status", Static)
        # At 80x24 the verdict may be below the partitions: bring it into view.
        self.call_after_refresh(
            self.query_one("#body", VerticalScroll).scroll_to_widget, status, animate=False
        )
        check = self.query_one("#check", Button)
        nxt = self.query_one("#next", Button)
        check.label = "Check again"
        nxt.disabled = False
        if message.report is None:
            status.update(message.error or "")
            return
        self.report = message.report
        if message.report.ok:
            status.update(
                f"[b]The backup is intact.[/b] {human_size(message.report.checked_bytes)} in "
                f"{message.report.checked_chunks} pieces checked; nothing is damaged."
            )
            nxt.label = "Continue"
            nxt.variant = "primary"
            check.variant = "default"
            nxt.focus()
        else:
            lines = [
                "[b]The backup is damaged.[/b] Restoring it would write broken data, so it "
                "cannot be used. Use another copy of the backup if you have one."
            ]
            for d in message.report.damage[:5]:
                where = f"partition {d.partition}" if d.partition is not None else "start of disk"
                lines.append(f" • {where}, byte {d.offset}: {d.message}")
            if len(message.report.damage) > 5:
                lines.append(f" • … and {len(message.report.damage) - 5} more damaged places")
            status.update("\n".join(lines))
            status.add_class("error")
            nxt.disabled = True
            self.query_one("#back", Button).focus()

    # -- leaving -------------------------------------------------------------------------

    @on(Button.Pressed, "#next")
    def _next(self) -> None:
        if not self.checking:
            self.dismiss("next")

    @on(Button.Pressed, "#look")
    def action_look(self) -> None:
        if not self.checking:
            self.dismiss("look")

    @on(Button.Pressed, "#back")
    def action_back(self) -> None:
        self.cancel_check.set()
        self.dismiss("back")

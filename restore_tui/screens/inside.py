"""Step 2's "Look inside": the backup's partitions as folders and files, read-only, and
a file or folder copied out to a disk the person picks.

The backup is mounted privately and read-only for as long as this screen is open
(restore_tui.looking); links inside it are shown as links and never followed — a link
to /etc in a backup is not this computer's /etc. Listing and copying run in threads,
so a slow USB disk never freezes the screen.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Input, Static, Tree
from textual.widgets.tree import TreeNode

from layout.probe import read_mounts
from restore_tui.errors import UserError
from restore_tui.journal import LIVE_FILESYSTEMS, MEMORY_FILESYSTEMS
from restore_tui.looking import Entry, copy_out, list_folder, look_inside
from restore_tui.screens.common import Step, StepHeader, TextField, human_size

# Filesystems that are not a place to keep copied files (gone at a restart, or pseudo).
NOT_A_DESTINATION = MEMORY_FILESYSTEMS | LIVE_FILESYSTEMS | {
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup2", "securityfs", "debugfs", "fuse",
    "fuse.restore-tui", "squashfs", "iso9660", "efivarfs", "mqueue", "hugetlbfs", "pstore",
    "bpf", "tracefs", "configfs", "fusectl", "autofs", "binfmt_misc", "nsfs", "rpc_pipefs",
}  # fmt: skip


def writable_places() -> list[str]:
    """Mounted folders a copy could go to and survive a restart (USB disks, mostly)."""
    out = []
    for m in read_mounts():
        point = m.mount_point
        if m.fstype in NOT_A_DESTINATION or (m.fstype.startswith("fuse.") and "restore" in point):
            continue
        if point.startswith(("/run/restore-tui", "/proc", "/sys", "/dev")) or point == "/":
            continue
        if os.access(point, os.W_OK):
            out.append(point)
    return sorted(set(out))


def entry_label(entry: Entry) -> str:
    if entry.kind == "folder":
        return f"{entry.name}/"
    if entry.kind == "link":
        return f"{entry.name} → {entry.target}"
    return f"{entry.name}  ({human_size(entry.size)})"


class CopyTo(ModalScreen[Path | None]):
    """Where to copy the chosen file or folder."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def compose(self) -> ComposeResult:
        places = writable_places()
        with Vertical(id="browse-box"):
            yield Static(f"Copy {self.what} into which folder?", id="browse-title")
            yield Static(
                "Disks mounted for writing: " + ", ".join(places)
                if places
                else "No disk is mounted for writing. Plug in a USB disk and mount it from "
                "the shell (Alt+F2: mount /dev/sdX1 /mnt), then type that folder here.",
                classes="hint",
            )
            yield TextField(value=places[0] if places else "", placeholder="/mnt", id="dest")
            yield Static("", id="dest-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Copy here", id="copy", variant="primary")
                yield Button("Cancel", id="cancel")

    @on(Input.Submitted, "#dest")
    @on(Button.Pressed, "#copy")
    def _copy(self) -> None:
        text = self.query_one("#dest", Input).value.strip()
        folder = Path(text)
        if not text or not folder.is_dir():
            self.query_one("#dest-error", Static).update(f"{text or 'Nothing'} is not a folder.")
            return
        self.dismiss(folder)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class LookInsideScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("c", "copy", "Copy out"),
    ]

    def __init__(self, step: Step, archive_path: Path) -> None:
        super().__init__()
        self.step = step
        self.archive_path = archive_path
        self._mounted = contextlib.ExitStack()
        self.root: Path | None = None
        self.copied: list[Path] = []  # what was copied out, for the person (and tests)

    def compose(self) -> ComposeResult:
        yield StepHeader(
            self.step,
            "What the backup holds, read-only: open a folder with Enter. A file or folder "
            "can be copied out (c) to another disk.",
        )
        yield Static("Opening the backup…", id="inside-status", classes="hint")
        tree: Tree[Path] = Tree("Backup", id="inside-tree")
        tree.show_root = False
        yield tree
        with Horizontal(classes="buttons"):
            yield Button("Copy out…", id="copy", disabled=True)
            yield Button("Back", id="back", variant="primary")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#inside-tree", Tree).focus()
        self._open()

    def _status(self, text: str) -> None:
        self.query_one("#inside-status", Static).update(text)

    @work(thread=True, exclusive=True, group="inside")
    def _open(self) -> None:
        try:
            root = self._mounted.enter_context(look_inside(self.archive_path))
            entries = list_folder(root)
        except (UserError, OSError) as exc:
            self.app.call_from_thread(self._status, f"Cannot look inside: {exc}")
            return
        self.root = root
        self.app.call_from_thread(self._show, None, root, entries)

    def _show(self, node: TreeNode[Path] | None, folder: Path, entries: list[Entry]) -> None:
        tree: Tree[Path] = self.query_one("#inside-tree", Tree)
        parent = node if node is not None else tree.root
        parent.remove_children()
        for e in entries:
            path = folder / e.name
            if e.kind == "folder":
                parent.add(entry_label(e), data=path, allow_expand=True)
            else:
                parent.add_leaf(entry_label(e), data=path)
        if node is None:
            tree.root.expand()
            self._status("")
            self.query_one("#copy", Button).disabled = False
        elif not entries:
            parent.add_leaf("(empty)")

    @on(Tree.NodeExpanded, "#inside-tree")
    def _expanded(self, event: Tree.NodeExpanded[Path]) -> None:
        if event.node.data is not None and not event.node.children:
            self._list(event.node, event.node.data)

    @work(thread=True, group="inside-list")
    def _list(self, node: TreeNode[Path], folder: Path) -> None:
        try:
            entries = list_folder(folder)
        except (UserError, OSError) as exc:
            self.app.call_from_thread(self._status, f"Cannot open {folder.name}: {exc}")
            return
        self.app.call_from_thread(self._show, node, folder, entries)

    @on(Button.Pressed, "#copy")
    def action_copy(self) -> None:
        node = self.query_one("#inside-tree", Tree).cursor_node
        if node is None or node.data is None or self.root is None:
            return
        source: Path = node.data

        def chosen(dest: Path | None) -> None:
            if dest is not None:
                self._copy(source, dest)

        self.app.push_screen(CopyTo(f"“{source.name}”"), chosen)

    @work(thread=True, exclusive=True, group="inside-copy")
    def _copy(self, source: Path, dest: Path) -> None:
        def progress(done: int, total: int) -> None:
            self.app.call_from_thread(
                self._status, f"Copying {source.name}: {human_size(done)} of {human_size(total)}"
            )

        try:
            result = copy_out(source, dest, progress)
        except (UserError, OSError) as exc:
            self.app.call_from_thread(self._status, f"Not copied: {exc}")
            return
        self.copied.append(result.path)
        skipped = f"; {len(result.skipped)} skipped" if result.skipped else ""
        self.app.call_from_thread(
            self._status,
            f"Copied to {result.path}: {result.files} file{'s' if result.files != 1 else ''}, "
            f"{human_size(result.bytes)}"
            f"{skipped}.",
        )

    @on(Button.Pressed, "#back")
    def action_back(self) -> None:
        self.dismiss(None)

    def on_unmount(self) -> None:
        # Unmounting waits for nothing of ours: workers that still read are cancelled
        # by the screen going away; a busy mount is retried by `unmount` itself.
        self._mounted.close()

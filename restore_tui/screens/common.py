"""Shared pieces of the wizard's screens: the step header, plain-word formatting, key hints.

Every screen shows where the user is ("Step 2 of 7") and says things in plain
words; the helpers here keep sizes, disks and terms worded the same everywhere.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Input, Label, Static

from layout.units import human_size
from restore_tui.progress import human_duration as progress_duration

#: One-line explanations of words a person restoring a backup may not know.
TERMS: dict[str, str] = {
    "mbr": "MBR and track 0: the start of the disk that tells the computer how to boot "
    "and where the partitions are.",
    "track0": "Track 0: the start of the disk; its boot code and partition table tell the "
    "computer how to start and where the partitions are.",
    "table": "Partition table: the list at the start of the disk that says where each "
    "partition is. MBR is the older kind (most Windows 7 and older PCs), GPT the newer one.",
    "extended": "Extended partition: on an MBR disk, a container that holds more partitions "
    "(logical partitions), because MBR has room for only four.",
    "gpt": "GPT: the modern kind of partition table; it keeps a second copy at the end "
    "of the disk.",
    "partition": "Partition: a part of the disk that holds one filesystem, like C: in Windows.",
    "free": "Free space (unallocated): part of the disk that no partition uses yet.",
    "checkpoint": "Checkpoint: a saved point; if the computer stops, the restore continues "
    "from there instead of starting over.",
    "verify": "Checking reads the whole backup and makes sure every piece is intact, so a "
    "damaged backup is found before anything is written.",
    "ids": "Disk signature, GUID, UUID: numbers that name a disk and its partitions.",
    "serial": "Serial number: a number printed on the disk's label; it does not change "
    "when the computer renames its disks.",
}


@dataclass(frozen=True)
class Step:
    """Where a screen sits in the walk-through: "Step 3 of 7"."""

    number: int
    total: int
    title: str

    @property
    def words(self) -> str:
        return f"Step {self.number} of {self.total} · {self.title}"


def human_rate(bytes_per_second: float | None) -> str:
    if not bytes_per_second or bytes_per_second <= 0:
        return "—"
    return f"{human_size(int(bytes_per_second))}/s"


def human_duration(seconds: float | None) -> str:
    """An estimate in minutes and seconds, or that it is not known yet."""
    if seconds is None or seconds < 0:
        return "working it out…"
    return progress_duration(seconds)


def short_serial(serial: str | None, digits: int = 4) -> str:
    if not serial:
        return "no serial number"
    return f"serial …{serial[-digits:]}" if len(serial) > digits else f"serial {serial}"


def bus_words(bus: str | None) -> str:
    return {
        "sata": "SATA (inside the computer)",
        "ata": "SATA (inside the computer)",
        "nvme": "NVMe (inside the computer)",
        "usb": "USB (plugged in)",
        "virtio": "virtual disk",
        "loop": "loop device",
        "image": "disk image file",
        "scsi": "SCSI/SAS",
        "mmc": "memory card",
    }.get((bus or "").lower(), bus or "unknown connection")


def lower_first(text: str) -> str:
    """ "Everything on …" -> "everything on …", to continue a sentence."""
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def when(moment: datetime) -> str:
    return moment.strftime("%d %B %Y, %H:%M")


class StepHeader(Widget):
    """ "Step 3 of 7 · What to do", with one line saying what this step is for."""

    DEFAULT_CSS = """
    StepHeader { height: auto; }
    """

    def __init__(self, step: Step, subtitle: str = "", *, dry_run: bool = False) -> None:
        super().__init__()
        self.step = step
        self.subtitle = subtitle
        self.dry_run = dry_run

    def compose(self) -> ComposeResult:
        mode = "  (preview only — nothing is written)" if self.dry_run else ""
        yield Static(
            f"[b]{self.step.words}[/b]{mode}",
            classes="step-title",
        )
        if self.subtitle:
            yield Static(self.subtitle, classes="step-subtitle")


def on_serial_console() -> bool:
    """Whether the wizard is drawn on a serial line (the rescue image's ttyS0)."""
    try:
        return os.ttyname(sys.stdin.fileno()).startswith("/dev/ttyS")
    except (OSError, ValueError):
        return False


class TextField(Input):
    """A text field whose cursor does not blink on a serial console: each blink redraws
    the field, which at 115200 baud floods the line."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if on_serial_console():
            self.cursor_blink = False


#: one line of an ItemList: its mark (" ✓ 1.") and its text
Item = tuple[str, str]


class ItemList(Vertical):
    """Marked lines ("✓ 1. Partition 2: System …") whose text, when it wraps on a
    narrow console, goes on under itself instead of under the mark."""

    DEFAULT_CSS = """
    ItemList { height: auto; }
    ItemList > Horizontal { height: auto; }
    ItemList .mark { width: auto; padding-right: 1; }
    ItemList .text { width: 1fr; height: auto; }
    """

    def __init__(self, items: Sequence[Item], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.items = list(items)

    def compose(self) -> ComposeResult:
        for mark, text in self.items:
            with Horizontal():
                yield Label(mark, classes="mark", markup=False)
                yield Static(text, classes="text", markup=False)

    def update(self, items: Sequence[Item]) -> None:
        """New marks and texts for the same lines."""
        self.items = list(items)
        for row, (mark, text) in zip(self.query(Horizontal), self.items, strict=True):
            row.query_one(".mark", Label).update(mark)
            row.query_one(".text", Static).update(text)

    @property
    def lines(self) -> list[str]:
        return [f"{mark} {text}" for mark, text in self.items]


class ButtonRow(Horizontal):
    """A row of buttons at the bottom of a screen."""

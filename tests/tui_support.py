"""Helpers for the wizard's tests: a demo folder, waiting for screens, checking restored bytes.

Waits are on conditions (a screen became active, a worker finished), each bounded,
so a broken flow fails with a message instead of hanging the suite.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from textual.geometry import Region
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Button, DataTable, Static

import archive.backup as backup_module
from archive import open_archive
from archive.base import TRACK0
from layout.blockio import DiskReader
from layout.plan import Plan
from layout.probe import ImageProbe
from layout.table_io import read_table
from restore_tui.app import RestoreWizard, WizardOptions
from restore_tui.demo import DemoSetup, build_demo
from restore_tui.engine import ProgressEvent
from restore_tui.screens.common import StepHeader

FIXED_DATE = datetime(2024, 3, 9, 14, 30, tzinfo=UTC)
WAIT_SECONDS = 60.0


class _FixedDatetime(datetime):
    @classmethod
    def now(cls, tz: object = None) -> _FixedDatetime:  # type: ignore[override]
        return cls.fromtimestamp(FIXED_DATE.timestamp(), tz=UTC)


@contextmanager
def fixed_backup_date() -> Iterator[None]:
    """Backups made inside get FIXED_DATE as their date, so screens show the same text."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backup_module, "datetime", _FixedDatetime)
        yield


def make_demo(folder: Path) -> DemoSetup:
    with fixed_backup_date():
        return build_demo(folder)


def clone_demo(master: DemoSetup, folder: Path) -> DemoSetup:
    """A private copy of a built demo: its own archives and target disks (which tests
    write to), and links to the read-only backed-up disks. Much faster than rebuilding."""
    folder.mkdir(parents=True)

    def copy(path: Path) -> Path:
        new = folder / path.name
        shutil.copyfile(path, new)
        return new

    def link(path: Path) -> Path:
        new = folder / path.name
        new.symlink_to(path)
        return new

    return dataclasses.replace(
        master,
        folder=folder,
        windows=dataclasses.replace(master.windows, path=link(master.windows.path)),
        linux=dataclasses.replace(master.linux, path=link(master.linux.path)),
        windows_archive=copy(master.windows_archive),
        linux_archive=copy(master.linux_archive),
        new_disk=copy(master.new_disk),
        spare_disk=copy(master.spare_disk),
        small_disk=copy(master.small_disk),
    )


def wizard(setup: DemoSetup, **changes: object) -> RestoreWizard:
    """The wizard as `restore-tui demo` opens it, with animations off."""
    options = WizardOptions(
        probe=ImageProbe([str(p) for p in setup.disk_images]),
        backup_roots=lambda: [setup.folder],
        journal_dirs=[setup.folder],
    )
    for name, value in changes.items():
        setattr(options, name, value)
    app = RestoreWizard(options)
    app.animation_level = "none"
    return app


async def until(pilot: Pilot[object], check: Callable[[], bool], what: str) -> None:
    """Let the app run until ``check()`` holds; fail after WAIT_SECONDS saying ``what``."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; screen is {pilot.app.screen!r}")
        await pilot.pause(0.02)


async def on_screen(pilot: Pilot[object], kind: type[Screen[object]]) -> Screen[object]:
    await until(pilot, lambda: isinstance(pilot.app.screen, kind), kind.__name__)
    await pilot.pause()
    return pilot.app.screen


def header(screen: Screen[object]) -> str:
    """ "Step 4 of 9 · The target disk": the step line of a wizard screen (as drawn while
    it is shown; from its step afterwards)."""
    drawn = screen.query(StepHeader)
    step = drawn.first().step if drawn else screen.step  # type: ignore[attr-defined]
    return str(step.words)


def screen_text(screen: Screen[object]) -> str:
    """Every word a screen shows in its texts and buttons, hidden parts included."""
    texts = [str(w.render()) for w in screen.query(Static) if not isinstance(w, Button)]
    texts += [str(b.label) for b in screen.query(Button)]
    return "\n".join(texts)


def _squeezed(text: str) -> str:
    return "".join(text.split())


def _drawn_text(widget: Widget) -> str:
    """What a widget draws at its size, all of it (also what is scrolled out of view)."""
    width, height = widget.outer_size
    strips = widget.render_lines(Region(0, 0, width, height))
    return "".join(strip.text for strip in strips)


def cut_widgets(screen: Screen[object]) -> list[str]:
    """Everything on a screen that is cut at the side or scrolls sideways, in words.

    Wrapping only moves words to the next line, so every letter of a widget's text must
    be among the letters it draws; a letter missing means the line was cut (an ellipsis,
    a clipped label or button). Widgets are also checked against what contains them
    (clipped at the right) and for content wider than their place (a horizontal
    scrollbar, or one hidden by the style).
    """
    out: list[str] = []
    # The compositor holds where each widget is drawn and where it is clipped; no public API.
    visible = screen._compositor.visible_widgets
    for widget, (region, clip) in visible.items():
        if region.x < clip.x or region.right > clip.right:
            out.append(f"{widget!r} is clipped at the side ({region} in {clip})")
        if widget.show_horizontal_scrollbar:
            out.append(f"{widget!r} shows a horizontal scrollbar")
        room = widget.scrollable_content_region.width
        if widget.is_scrollable and widget.virtual_size.width > room:
            out.append(f"{widget!r} holds {widget.virtual_size.width} columns in {room}")
        if isinstance(widget, DataTable) and widget.virtual_size.width > widget.size.width:
            out.append(f"{widget!r} is {widget.virtual_size.width} wide in {widget.size.width}")
        if isinstance(widget, Static | Button):
            wanted = str(widget.label if isinstance(widget, Button) else widget.render())
            if _squeezed(wanted) not in _squeezed(_drawn_text(widget)):
                out.append(f"{widget!r} cuts its text {wanted[:60]!r}")
    return out


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def assert_full_restore(target: Path, archive_path: Path) -> None:
    """The target holds the backup: boot code, the same table, track 0 and every stored piece."""
    with open_archive(archive_path) as arc:
        m = arc.manifest
        assert read(target, 0, 440) == m.boot_code, "boot code differs"
        with DiskReader(str(target)) as reader:
            parsed = read_table(reader.read, reader.size, m.table.sector_size)
        assert parsed is not None, "no partition table on the target"
        geometry = [(p.number, p.start_lba, p.length_lba, p.kind) for p in parsed.table.partitions]
        want = [(p.number, p.start_lba, p.length_lba, p.kind) for p in m.table.partitions]
        assert geometry == want
        areas: list[int | str] = [TRACK0, *(image.number for image in m.partitions)]
        checked = 0
        for area in areas:
            for piece in arc.pieces(area):  # type: ignore[arg-type]
                got = read(target, piece.offset, piece.length)
                expected = piece.data if piece.data is not None else bytes(piece.length)
                assert got == expected, f"bytes at {piece.offset} (area {area}) differ"
                checked += piece.length
        assert checked == m.stored_bytes()


def expected_partition_bytes(
    plan: Plan, archive_path: Path, number: int
) -> list[tuple[int, bytes]]:
    """(target offset, bytes) the one-partition plan puts on the target: the stored pieces
    moved to the new place, with the plan's patches (hidden-sectors fields) laid over them."""
    stage = next(s for s in plan.stages if s.name.startswith("partition-"))
    copy = next(a for a in stage.actions if a.kind == "restore-area")
    shift = copy.offset - (copy.source_offset or 0)
    out: list[tuple[int, bytes]] = []
    with open_archive(archive_path) as arc:
        for piece in arc.pieces(number):
            data = bytearray(piece.data if piece.data is not None else bytes(piece.length))
            for a in stage.actions:
                if a.kind == "write-bytes" and a.data is not None:
                    lo = max(a.offset, piece.offset + shift)
                    hi = min(a.stop, piece.stop + shift)
                    if lo < hi:
                        patch = bytes.fromhex(a.data)
                        data[lo - piece.offset - shift : hi - piece.offset - shift] = patch[
                            lo - a.offset : hi - a.offset
                        ]
            out.append((piece.offset + shift, bytes(data)))
    return out


def hold_engine_in_stage(
    monkeypatch: pytest.MonkeyPatch,
    stage_index: int,
    wait_s: float = 30.0,
    *,
    kind: str = "write",
) -> tuple[threading.Event, threading.Event]:
    """Make the wizard's engines stop inside stage ``stage_index`` (through their progress
    callback, at its first ``kind`` event) until released: (reached, release). A stop key
    pressed after ``reached`` then lands mid-stage every time."""
    import restore_tui.flow as flow_module

    reached, release = threading.Event(), threading.Event()
    real_engine = flow_module.RestoreEngine

    def held_engine(*args, progress, **kwargs):  # type: ignore[no-untyped-def]
        def hold(event: ProgressEvent) -> None:
            progress(event)
            if event.kind == kind and event.stage_index == stage_index and not reached.is_set():
                reached.set()
                release.wait(wait_s)

        return real_engine(*args, progress=hold, **kwargs)

    monkeypatch.setattr(flow_module, "RestoreEngine", held_engine)
    return reached, release

"""Snapshots of every screen of the wizard's jobs at 80x24 and 120x40
(pytest-textual-snapshot): the three jobs, a resume, a stop and a failure.

Each snapshot gets its own copy of the demo in one fixed folder, with a fixed backup
date, so every path and date on screen is the same on every run and a restore in one
snapshot does not change what the next one shows; animations and the cursor blink are
off. Before the picture is taken, the screen is checked for cut lines (tui_support's
``cut_widgets``): a snapshot that would show one fails.
Regenerate after an intended change with ``pytest tests/test_tui_snapshots.py --snapshot-update``
(the README's pictures are these files).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_tui_flow import start_and_stop_restore
from textual.pilot import Pilot
from textual.widgets import Input
from tui_support import (
    clone_demo,
    cut_widgets,
    hold_engine_in_stage,
    make_demo,
    on_screen,
    until,
    wizard,
)

from archive import open_archive
from restore_tui.demo import DemoSetup
from restore_tui.screens.backup import BackupScreen
from restore_tui.screens.choose import ChooseBackupScreen
from restore_tui.screens.confirm import ConfirmScreen
from restore_tui.screens.end import DoneScreen, FailureScreen
from restore_tui.screens.job import JobScreen
from restore_tui.screens.partition import PartitionScreen
from restore_tui.screens.preview import PreviewScreen
from restore_tui.screens.progress import ProgressScreen
from restore_tui.screens.replace import ReplaceScreen
from restore_tui.screens.target import TargetScreen
from restore_tui.screens.unfinished import UnfinishedScreen

# Fixed, so the folder shown on screen is the same on every machine and run.
SNAPSHOT_ROOT = Path("/tmp/restore-tui-snapshots")
SNAPSHOT_DEMO = SNAPSHOT_ROOT / "demo"
SIZES = {"80x24": (80, 24), "120x40": (120, 40)}


@pytest.fixture(scope="module")
def master() -> Iterator[DemoSetup]:
    shutil.rmtree(SNAPSHOT_ROOT, ignore_errors=True)
    try:
        yield make_demo(SNAPSHOT_ROOT / "master")
    finally:
        shutil.rmtree(SNAPSHOT_ROOT, ignore_errors=True)


@dataclass
class Held:
    """Engines held inside a stage for a picture of the progress screen; released (and
    their thread let finish) when the snapshot is taken."""

    reached: threading.Event | None = None
    release: threading.Event | None = None


@pytest.fixture
def held() -> Iterator[Held]:
    holder = Held()
    before = set(threading.enumerate())
    try:
        yield holder
    finally:
        if holder.release is not None:
            holder.release.set()
        # A released engine finishes its restore in its own thread: wait for it, so it
        # does not write into the next snapshot's copy of the demo.
        for thread in set(threading.enumerate()) - before:
            thread.join(60)


@pytest.fixture
def demo(master: DemoSetup) -> Iterator[DemoSetup]:
    shutil.rmtree(SNAPSHOT_DEMO, ignore_errors=True)
    try:
        yield clone_demo(master, SNAPSHOT_DEMO)
    finally:
        shutil.rmtree(SNAPSHOT_DEMO, ignore_errors=True)


Steps = Callable[[Pilot[object], DemoSetup], Awaitable[None]]


async def to_choose(pilot: Pilot[object], demo: DemoSetup) -> None:
    screen = await on_screen(pilot, ChooseBackupScreen)
    assert isinstance(screen, ChooseBackupScreen)
    await until(pilot, lambda: len(screen.found) == 2, "the demo backups")


async def to_backup(pilot: Pilot[object], demo: DemoSetup) -> None:
    await to_choose(pilot, demo)
    await pilot.press("down", "enter")  # windows-pc.rtui, the second in path order
    await on_screen(pilot, BackupScreen)


async def to_job(pilot: Pilot[object], demo: DemoSetup) -> None:
    await to_backup(pilot, demo)
    pilot.app.screen.query_one("#next").press()  # type: ignore[attr-defined]
    await on_screen(pilot, JobScreen)


async def _target(pilot: Pilot[object], demo: DemoSetup, job_keys: list[str]) -> TargetScreen:
    await to_job(pilot, demo)
    await pilot.press(*job_keys, "enter")
    screen = await on_screen(pilot, TargetScreen)
    assert isinstance(screen, TargetScreen)
    return screen


async def to_target(pilot: Pilot[object], demo: DemoSetup) -> None:
    await _target(pilot, demo, [])


async def _choose_disk(pilot: Pilot[object], screen: TargetScreen, device: Path) -> None:
    index = [c.device for c in screen.candidates].index(str(device))
    # The cursor starts on the recommended disk: count from the top.
    await pilot.press(*["up"] * len(screen.candidates), *["down"] * index, "enter")


async def to_partition(pilot: Pilot[object], demo: DemoSetup) -> None:
    screen = await _target(pilot, demo, ["down"])
    await _choose_disk(pilot, screen, demo.spare_disk)
    await on_screen(pilot, PartitionScreen)


async def to_preview(pilot: Pilot[object], demo: DemoSetup) -> None:
    screen = await _target(pilot, demo, [])
    await _choose_disk(pilot, screen, demo.new_disk)
    await on_screen(pilot, PreviewScreen)


async def to_exact(pilot: Pilot[object], demo: DemoSetup) -> None:
    await to_preview(pilot, demo)
    await pilot.press("x")  # the exact sectors too
    await pilot.pause()


async def to_confirm(pilot: Pilot[object], demo: DemoSetup) -> None:
    await to_preview(pilot, demo)
    await pilot.press("enter")
    screen = await on_screen(pilot, ConfirmScreen)
    screen.query_one(Input).cursor_blink = False
    await pilot.pause()


async def _start(pilot: Pilot[object], demo: DemoSetup) -> None:
    await to_confirm(pilot, demo)
    confirm = pilot.app.screen
    assert isinstance(confirm, ConfirmScreen)
    await pilot.press(*confirm.wanted.word, "enter")


async def to_done(pilot: Pilot[object], demo: DemoSetup) -> None:
    await _start(pilot, demo)
    await on_screen(pilot, DoneScreen)


async def to_one_done(pilot: Pilot[object], demo: DemoSetup) -> None:
    await to_partition(pilot, demo)
    # The system partition and the free space are preselected: "Put it here".
    pilot.app.screen.query_one("#use").press()  # type: ignore[attr-defined]
    screen = await on_screen(pilot, PreviewScreen)
    assert isinstance(screen, PreviewScreen)
    await pilot.press("enter")
    confirm = await on_screen(pilot, ConfirmScreen)
    assert isinstance(confirm, ConfirmScreen)
    await pilot.press(*confirm.wanted.word, "enter")
    await on_screen(pilot, DoneScreen)


async def to_dry_run(pilot: Pilot[object], demo: DemoSetup) -> None:
    await to_job(pilot, demo)
    await pilot.press("down", "down", "enter")  # "Only show what would change"
    screen = await on_screen(pilot, TargetScreen)
    assert isinstance(screen, TargetScreen)
    await _choose_disk(pilot, screen, demo.new_disk)
    await on_screen(pilot, PreviewScreen)


async def to_replace(pilot: Pilot[object], demo: DemoSetup) -> None:
    screen = await _target(pilot, demo, ["down", "down", "down"])  # put one partition back
    await _choose_disk(pilot, screen, demo.windows.path)
    await on_screen(pilot, ReplaceScreen)


async def to_unfinished(pilot: Pilot[object], demo: DemoSetup) -> None:
    await on_screen(pilot, UnfinishedScreen)


async def to_damaged(pilot: Pilot[object], demo: DemoSetup) -> None:
    await _start(pilot, demo)
    await on_screen(pilot, FailureScreen)


def damage_last_chunk(archive_path: Path) -> None:
    """Overwrite the middle of the backup's last stored chunk, as a failing disk would."""
    with open_archive(archive_path) as arc:
        last = arc.manifest.partitions[-1]
        chunk = [c for c in last.chunks if c.frame_offset is not None][-1]
    assert chunk.frame_offset is not None and chunk.frame_length is not None
    with open(archive_path, "r+b") as f:
        f.seek(chunk.frame_offset + chunk.frame_length // 2)
        f.write(b"\xff" * 16)


@dataclass(frozen=True)
class Shot:
    steps: Steps
    #: the wizard's options for this picture
    options: Callable[[DemoSetup], dict[str, object]] = lambda demo: {}
    #: what is done to the demo before the wizard starts
    prepare: Callable[[DemoSetup], None] = lambda demo: None
    #: hold the engine at the start of this stage (its index) for the progress screen
    hold_at_stage: int | None = None
    #: press Stop safely once the engine is held
    stop: bool = False


def named(demo: DemoSetup) -> dict[str, object]:
    return {"archive_path": str(demo.windows_archive)}


SHOTS: dict[str, Shot] = {
    "choose": Shot(to_choose),
    "backup": Shot(to_backup),
    "job": Shot(to_job),
    "target": Shot(to_target),
    "partition": Shot(to_partition),
    "preview": Shot(to_preview),
    "preview-exact": Shot(to_exact),
    "confirm": Shot(to_confirm),
    "progress": Shot(_start, hold_at_stage=2),
    "stopped": Shot(_start, hold_at_stage=2, stop=True),
    "done": Shot(to_done),
    "one-partition-done": Shot(to_one_done),
    "dry-run": Shot(to_dry_run),
    "replace": Shot(to_replace),
    "unfinished": Shot(to_unfinished, options=named, prepare=start_and_stop_restore),
    "damaged": Shot(to_damaged, prepare=lambda demo: damage_last_chunk(demo.windows_archive)),
}


async def _hold_or_stop(pilot: Pilot[object], shot: Shot, held: Held) -> None:
    """The progress screen at the start of a stage (as it stays while the engine works),
    or, stopped there, the screen that follows."""
    assert held.reached is not None
    await on_screen(pilot, ProgressScreen)
    await until(pilot, held.reached.is_set, "the engine reaching the held stage")
    await pilot.pause(0.1)
    if shot.stop:
        await pilot.press("escape")
        assert held.release is not None
        held.release.set()
        await on_screen(pilot, FailureScreen)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", SHOTS)
def test_screen_snapshot(  # type: ignore[no-untyped-def]
    snap_compare, demo: DemoSetup, held: Held, monkeypatch: pytest.MonkeyPatch, name: str, size: str
) -> None:
    shot = SHOTS[name]
    shot.prepare(demo)
    if shot.hold_at_stage is not None:
        held.reached, held.release = hold_engine_in_stage(
            monkeypatch, shot.hold_at_stage, kind="stage-start"
        )

    async def run_before(pilot: Pilot[object]) -> None:
        await shot.steps(pilot, demo)
        if shot.hold_at_stage is not None:
            await _hold_or_stop(pilot, shot, held)
        cut = cut_widgets(pilot.app.screen)
        assert not cut, f"{name} at {size}: {cut}"

    app = wizard(demo, **shot.options(demo))
    if held.release is not None:
        # The picture is taken, then the app exits: let the held engine finish then,
        # instead of the app waiting for its thread.
        release, exit_app = held.release, app.exit

        def exit_and_release(*args: object, **kwargs: object) -> None:
            release.set()
            exit_app(*args, **kwargs)  # type: ignore[arg-type]

        app.exit = exit_and_release  # type: ignore[method-assign]
    assert snap_compare(app, terminal_size=SIZES[size], run_before=run_before)

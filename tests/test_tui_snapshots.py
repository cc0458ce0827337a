"""Snapshots of the wizard's key screens at 80x24 and 120x40 (pytest-textual-snapshot).

The demo is built in a fixed folder with a fixed backup date, so every path and date
on screen is the same on every run; animations and the cursor blink are off.
Regenerate after an intended change with ``pytest tests/test_tui_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input
from tui_support import make_demo, on_screen, until, wizard

from restore_tui.demo import DemoSetup
from restore_tui.screens.backup import BackupScreen
from restore_tui.screens.choose import ChooseBackupScreen
from restore_tui.screens.confirm import ConfirmScreen
from restore_tui.screens.job import JobScreen
from restore_tui.screens.partition import PartitionScreen
from restore_tui.screens.preview import PreviewScreen
from restore_tui.screens.target import TargetScreen

# Fixed, so the folder shown on screen is the same on every machine and run.
SNAPSHOT_DEMO = Path("/tmp/restore-tui-snapshots/demo")
SIZES = {"80x24": (80, 24), "120x40": (120, 40)}


@pytest.fixture(scope="module")
def demo() -> DemoSetup:
    shutil.rmtree(SNAPSHOT_DEMO.parent, ignore_errors=True)
    try:
        yield make_demo(SNAPSHOT_DEMO)
    finally:
        shutil.rmtree(SNAPSHOT_DEMO.parent, ignore_errors=True)


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


async def to_confirm(pilot: Pilot[object], demo: DemoSetup) -> None:
    await to_preview(pilot, demo)
    await pilot.press("enter")
    screen = await on_screen(pilot, ConfirmScreen)
    screen.query_one(Input).cursor_blink = False
    await pilot.pause()


SCREENS: dict[str, Steps] = {
    "choose": to_choose,
    "backup": to_backup,
    "job": to_job,
    "target": to_target,
    "partition": to_partition,
    "preview": to_preview,
    "confirm": to_confirm,
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", SCREENS)
def test_screen_snapshot(snap_compare, demo: DemoSetup, name: str, size: str) -> None:  # type: ignore[no-untyped-def]
    steps = SCREENS[name]

    async def run_before(pilot: Pilot[object]) -> None:
        await steps(pilot, demo)

    assert snap_compare(wizard(demo), terminal_size=SIZES[size], run_before=run_before)

"""Every screen of the wizard's jobs fits 80×24: no line cut, no horizontal scrollbar, no
table wider than its place. Walked as the person would, at the size of a rescue console."""

from __future__ import annotations

import pytest
from test_tui_flow import SIZE, built_demo, choose_backup, demo, pick_target
from textual.pilot import Pilot
from textual.screen import Screen
from tui_support import cut_widgets, on_screen, wizard

from restore_tui.demo import DemoSetup
from restore_tui.screens.backup import BackupScreen
from restore_tui.screens.confirm import ConfirmScreen
from restore_tui.screens.end import DoneScreen
from restore_tui.screens.job import JobScreen
from restore_tui.screens.partition import PartitionScreen
from restore_tui.screens.preview import PreviewScreen

pytestmark = pytest.mark.asyncio
__all__ = ["built_demo", "demo"]


async def seen(pilot: Pilot[object], kind: type[Screen[object]]) -> Screen[object]:
    screen = await on_screen(pilot, kind)
    assert not cut_widgets(screen), f"{kind.__name__}: {cut_widgets(screen)}"
    return screen


async def test_the_whole_disk_job_fits(demo: DemoSetup) -> None:
    app = wizard(demo)
    async with app.run_test(size=SIZE) as pilot:
        await choose_backup(pilot, demo.windows_archive)
        backup = await seen(pilot, BackupScreen)
        backup.query_one("#next").press()  # type: ignore[attr-defined]
        await seen(pilot, JobScreen)
        await pilot.press("enter")
        target = await pick_target(pilot, demo.new_disk)
        assert not cut_widgets(target)
        await seen(pilot, PreviewScreen)
        await pilot.press("x")  # the exact sectors too
        await pilot.pause()
        assert not cut_widgets(app.screen)
        await pilot.press("enter")
        confirm = await seen(pilot, ConfirmScreen)
        assert isinstance(confirm, ConfirmScreen)
        await pilot.press(*confirm.wanted.word, "enter")
        await seen(pilot, DoneScreen)
        await pilot.press("enter")


async def test_the_one_partition_job_fits(demo: DemoSetup) -> None:
    app = wizard(demo)
    async with app.run_test(size=SIZE) as pilot:
        await choose_backup(pilot, demo.windows_archive)
        backup = await seen(pilot, BackupScreen)
        backup.query_one("#next").press()  # type: ignore[attr-defined]
        await seen(pilot, JobScreen)
        await pilot.press("down", "enter")
        target = await pick_target(pilot, demo.spare_disk)
        assert not cut_widgets(target)
        part = await seen(pilot, PartitionScreen)
        assert isinstance(part, PartitionScreen)
        chosen = part._chosen_partition()
        # The system partition (C:) is preselected, not System Reserved.
        assert chosen is not None and chosen.number == 2 and chosen.label == "Windows"
        await pilot.press("ctrl+q")


async def test_the_preview_job_fits(demo: DemoSetup) -> None:
    app = wizard(demo, dry_run=True)
    async with app.run_test(size=SIZE) as pilot:
        await choose_backup(pilot, demo.linux_archive)
        backup = await seen(pilot, BackupScreen)
        backup.query_one("#next").press()  # type: ignore[attr-defined]
        await seen(pilot, JobScreen)
        await pilot.press("enter")
        target = await pick_target(pilot, demo.new_disk)
        assert not cut_widgets(target)
        await seen(pilot, PreviewScreen)
        await pilot.press("ctrl+q")


async def test_the_resume_screens_fit(demo: DemoSetup) -> None:
    from test_tui_flow import start_and_stop_restore

    from restore_tui.screens.choose import ChooseBackupScreen
    from restore_tui.screens.unfinished import UnfinishedScreen

    start_and_stop_restore(demo)
    app = wizard(demo)
    async with app.run_test(size=SIZE) as pilot:
        await seen(pilot, ChooseBackupScreen)
    again = wizard(demo, archive_path=str(demo.windows_archive))
    async with again.run_test(size=SIZE) as pilot:
        await seen(pilot, UnfinishedScreen)
        await pilot.press("enter")
        await seen(pilot, DoneScreen)
        await pilot.press("enter")

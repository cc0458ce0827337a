"""Resume is offered however the backup is chosen, and the half-restored disk says so.

A restore of the demo's Windows backup is stopped after stage 2; then the wizard is
started on that backup by name, or the backup is picked from the list.
"""

from __future__ import annotations

import threading

import pytest
from test_tui_flow import SIZE, built_demo, demo, pick_target, start_and_stop_restore
from textual.pilot import Pilot
from textual.widgets import Input
from tui_support import (
    assert_full_restore,
    header,
    hold_engine_in_stage,
    on_screen,
    screen_text,
    until,
    wizard,
)

from restore_tui.demo import DemoSetup
from restore_tui.journal import find_unfinished
from restore_tui.screens.backup import BackupScreen
from restore_tui.screens.choose import ChooseBackupScreen
from restore_tui.screens.confirm import ConfirmScreen
from restore_tui.screens.end import DoneScreen, FailureScreen
from restore_tui.screens.job import JobScreen
from restore_tui.screens.preview import PreviewScreen
from restore_tui.screens.progress import ProgressScreen
from restore_tui.screens.target import TargetScreen
from restore_tui.screens.unfinished import UnfinishedScreen

pytestmark = pytest.mark.asyncio
__all__ = ["built_demo", "demo"]  # fixtures used by name below


async def stop_a_restore(
    pilot: Pilot[object], demo: DemoSetup, reached: threading.Event, release: threading.Event
) -> FailureScreen:
    """From step 2 of the Windows backup: a whole-disk restore onto the new disk, stopped
    (Esc) once the held engine is reached; the stopped screen that follows."""
    backup = await on_screen(pilot, BackupScreen)
    backup.query_one("#next").press()  # type: ignore[attr-defined]
    await on_screen(pilot, JobScreen)
    await pilot.press("enter")
    await pick_target(pilot, demo.new_disk)
    await on_screen(pilot, PreviewScreen)
    await pilot.press("enter")
    confirm = await on_screen(pilot, ConfirmScreen)
    assert isinstance(confirm, ConfirmScreen)
    await pilot.press(*confirm.wanted.word, "enter")
    await on_screen(pilot, ProgressScreen)
    await until(pilot, reached.is_set, "the engine reaching the held stage")
    await pilot.press("escape")
    release.set()
    failure = await on_screen(pilot, FailureScreen)
    assert isinstance(failure, FailureScreen)
    return failure


async def test_a_backup_named_at_start_offers_its_unfinished_restore(demo: DemoSetup) -> None:
    start_and_stop_restore(demo)
    app = wizard(demo, archive_path=str(demo.windows_archive))
    async with app.run_test(size=SIZE) as pilot:
        offer = await on_screen(pilot, UnfinishedScreen)
        shown = screen_text(offer)
        assert "A restore of this backup did not finish" in shown
        assert "stage 3 of 3" in shown and "new-disk-80MiB.img" in shown
        assert header(offer) == "Step 2 of 8 · The backup"
        await pilot.press("enter")  # "Continue the restore" has the focus
        done = await on_screen(pilot, DoneScreen)
        assert isinstance(done, DoneScreen)
        await pilot.press("enter")
    assert app.return_value == 0
    assert_full_restore(demo.new_disk, demo.windows_archive)
    assert find_unfinished([], [demo.folder]) == []


async def test_starting_over_marks_the_half_restored_disk(demo: DemoSetup) -> None:
    start_and_stop_restore(demo)
    app = wizard(demo)
    async with app.run_test(size=SIZE) as pilot:
        # Typed on step 1 (the resume button there has the focus, so not Enter on it).
        choose = await on_screen(pilot, ChooseBackupScreen)
        assert isinstance(choose, ChooseBackupScreen)
        choose.query_one("#path", Input).value = str(demo.windows_archive)
        choose.open_path(str(demo.windows_archive))
        offer = await on_screen(pilot, UnfinishedScreen)
        offer.query_one("#start-over").press()  # type: ignore[attr-defined]
        backup = await on_screen(pilot, BackupScreen)
        backup.query_one("#next").press()  # type: ignore[attr-defined]
        await on_screen(pilot, JobScreen)
        await pilot.press("enter")
        target = await on_screen(pilot, TargetScreen)
        assert isinstance(target, TargetScreen)
        (half,) = [c for c in target.candidates if any("half restored" in n for n in c.notes)]
        assert half.device == str(demo.new_disk)
        await pilot.press("ctrl+q")


async def test_a_stopped_restore_is_no_dead_end(
    demo: DemoSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stopped screen offers to choose the disk again; the list is read anew and the
    half-restored disk is marked there."""
    reached, release = hold_engine_in_stage(monkeypatch, 2)
    app = wizard(demo, archive_path=str(demo.windows_archive))
    async with app.run_test(size=SIZE) as pilot:
        failure = await stop_a_restore(pilot, demo, reached, release)
        assert "restore-tui resume" not in screen_text(failure)
        failure.query_one("#start-over").press()  # type: ignore[attr-defined]
        target = await on_screen(pilot, TargetScreen)
        assert isinstance(target, TargetScreen)
        (half,) = [c for c in target.candidates if any("half restored" in n for n in c.notes)]
        assert half.device == str(demo.new_disk)
        await pilot.press("ctrl+q")


async def test_another_backup_goes_back_to_the_first_step_with_the_resume_offer(
    demo: DemoSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a stop, "Another backup" is step 1 again, and the restore just stopped is
    offered there for resuming."""
    reached, release = hold_engine_in_stage(monkeypatch, 2)
    app = wizard(demo, archive_path=str(demo.windows_archive))
    async with app.run_test(size=SIZE) as pilot:
        failure = await stop_a_restore(pilot, demo, reached, release)
        failure.query_one("#other-backup").press()  # type: ignore[attr-defined]
        choose = await on_screen(pilot, ChooseBackupScreen)
        assert header(choose) == "Step 1 of 8 · Choose the backup"
        offers = [str(b.label) for b in choose.query("Button.resume")]  # type: ignore[attr-defined]
        assert any("new-disk-80MiB.img" in o for o in offers), offers
        await pilot.press("ctrl+q")


async def test_stopped_before_the_first_byte_says_the_disk_is_untouched(
    demo: DemoSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tui_support import sha256_of


    before = sha256_of(demo.new_disk)
    reached, release = hold_engine_in_stage(monkeypatch, 0, kind="stage-start")
    app = wizard(demo, archive_path=str(demo.windows_archive))
    async with app.run_test(size=SIZE) as pilot:
        failure = await stop_a_restore(pilot, demo, reached, release)
        said = screen_text(failure)
        assert "Nothing was written to new-disk-80MiB.img" in said
        assert "the disk will not work" not in said
        await pilot.press("ctrl+q")
    assert sha256_of(demo.new_disk) == before

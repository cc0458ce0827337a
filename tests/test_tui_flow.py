"""The wizard driven by keys (Textual's Pilot) through each job, on demo disk image files.

Every test checks bytes on the image files: a full restore leaves the backup's data on
the target, a one-partition restore leaves the other partition unchanged, and a preview
or a refused disk writes nothing at all.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from tui_support import (
    assert_full_restore,
    clone_demo,
    expected_partition_bytes,
    make_demo,
    on_screen,
    read,
    sha256_of,
    until,
    wizard,
)

from archive import open_archive
from layout.blockio import DiskReader
from layout.matching import match_disks
from layout.planner import plan_full_disk
from layout.probe import ImageProbe
from layout.table_io import read_table
from restore_tui.demo import DemoSetup
from restore_tui.engine import ProgressEvent, RestoreCancelled, RestoreEngine, manifest_digest
from restore_tui.journal import find_unfinished
from restore_tui.screens.backup import BackupScreen
from restore_tui.screens.choose import ChooseBackupScreen
from restore_tui.screens.confirm import ConfirmScreen
from restore_tui.screens.end import DoneScreen
from restore_tui.screens.job import JobScreen
from restore_tui.screens.partition import PartitionScreen
from restore_tui.screens.preview import PreviewScreen
from restore_tui.screens.target import TargetScreen

pytestmark = pytest.mark.asyncio
SIZE = (80, 24)


@pytest.fixture(scope="module")
def built_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoSetup:
    return make_demo(tmp_path_factory.mktemp("tui-flow") / "demo")


@pytest.fixture
def demo(built_demo: DemoSetup, tmp_path: Path) -> DemoSetup:
    return clone_demo(built_demo, tmp_path / "demo")


async def choose_backup(pilot, archive: Path) -> None:  # type: ignore[no-untyped-def]
    screen = await on_screen(pilot, ChooseBackupScreen)
    assert isinstance(screen, ChooseBackupScreen)
    await until(pilot, lambda: bool(screen.found), "the backups found in the demo folder")
    index = [b.path for b in screen.found].index(archive)
    await pilot.press(*["down"] * index, "enter")


async def pick_target(pilot, device: Path) -> TargetScreen:  # type: ignore[no-untyped-def]
    screen = await on_screen(pilot, TargetScreen)
    assert isinstance(screen, TargetScreen)
    table = screen.query_one("#disks")
    start = table.cursor_row  # type: ignore[attr-defined]
    index = [c.device for c in screen.candidates].index(str(device))
    moves = ["down"] * (index - start) if index >= start else ["up"] * (start - index)
    await pilot.press(*moves, "enter")
    return screen


async def test_full_disk_restore_puts_the_backup_on_the_target(demo: DemoSetup) -> None:
    app = wizard(demo)
    async with app.run_test(size=SIZE) as pilot:
        await choose_backup(pilot, demo.windows_archive)
        backup = await on_screen(pilot, BackupScreen)
        assert isinstance(backup, BackupScreen)
        await pilot.press("enter")  # "Check the backup first" has the focus
        await until(pilot, lambda: backup.report is not None, "the backup check")
        assert backup.report is not None and backup.report.ok
        await pilot.press("enter")  # "Continue" has the focus once the check passed
        await on_screen(pilot, JobScreen)
        await pilot.press("enter")  # restore the whole disk
        await pick_target(pilot, demo.new_disk)
        preview = await on_screen(pilot, PreviewScreen)
        assert isinstance(preview, PreviewScreen)
        assert preview.plan.target.device == str(demo.new_disk)
        await pilot.press("enter")  # Continue
        confirm = await on_screen(pilot, ConfirmScreen)
        assert isinstance(confirm, ConfirmScreen)
        await pilot.press("enter")  # nothing typed: Enter must not start anything
        assert app.screen is confirm
        await pilot.press(*confirm.word, "enter")
        await on_screen(pilot, DoneScreen)
        await pilot.press("enter")
    assert app.return_value == 0
    assert_full_restore(demo.new_disk, demo.windows_archive)
    assert find_unfinished([], [demo.folder]) == []


async def test_one_partition_restore_leaves_the_other_partition_alone(demo: DemoSetup) -> None:
    spare = demo.spare_disk
    with DiskReader(str(spare)) as reader:
        before = read_table(reader.read, reader.size, 512)
    assert before is not None
    photos = before.table.partition(1)
    photos_hash = sha256_of_range(spare, photos.start_lba * 512, photos.length_lba * 512)
    app = wizard(demo)
    async with app.run_test(size=SIZE) as pilot:
        await choose_backup(pilot, demo.windows_archive)
        await on_screen(pilot, BackupScreen)
        app.screen.query_one("#next").press()  # type: ignore[attr-defined]
        await on_screen(pilot, JobScreen)
        await pilot.press("down", "enter")  # restore one partition
        await pick_target(pilot, spare)
        part = await on_screen(pilot, PartitionScreen)
        assert isinstance(part, PartitionScreen)
        await pilot.press("enter")  # partition 1, System Reserved; focus moves to the regions
        await pilot.press("enter")  # the first free region
        preview = await on_screen(pilot, PreviewScreen)
        assert isinstance(preview, PreviewScreen)
        plan = preview.plan
        assert plan.job == "one-partition"
        await pilot.press("enter")
        confirm = await on_screen(pilot, ConfirmScreen)
        assert isinstance(confirm, ConfirmScreen)
        await pilot.press(*confirm.word, "enter")
        await on_screen(pilot, DoneScreen)
        await pilot.press("enter")
    assert app.return_value == 0
    assert sha256_of_range(spare, photos.start_lba * 512, photos.length_lba * 512) == photos_hash
    with DiskReader(str(spare)) as reader:
        after = read_table(reader.read, reader.size, 512)
    assert after is not None
    assert after.table.partition(1) == photos
    assert len(after.table.data_partitions) == 2
    for offset, data in expected_partition_bytes(plan, demo.windows_archive, 1):
        assert read(spare, offset, len(data)) == data, f"restored bytes at {offset} differ"


def sha256_of_range(path: Path, offset: int, length: int) -> str:
    import hashlib

    return hashlib.sha256(read(path, offset, length)).hexdigest()


@pytest.mark.parametrize("how", ["--dry-run", "only-show"])
async def test_preview_writes_nothing(demo: DemoSetup, how: str) -> None:
    hashes = {p: sha256_of(p) for p in demo.disk_images}
    app = wizard(demo, dry_run=how == "--dry-run")
    async with app.run_test(size=SIZE) as pilot:
        await choose_backup(pilot, demo.linux_archive)
        await on_screen(pilot, BackupScreen)
        app.screen.query_one("#next").press()  # type: ignore[attr-defined]
        await on_screen(pilot, JobScreen)
        # In preview-only mode the first choice is the whole-disk preview; otherwise the
        # third choice is "Only show what would change".
        await pilot.press(*([] if how == "--dry-run" else ["down", "down"]), "enter")
        await pick_target(pilot, demo.new_disk)
        preview = await on_screen(pilot, PreviewScreen)
        assert isinstance(preview, PreviewScreen)
        assert preview.dry_run
        assert not preview.query("#go")  # there is no way on to writing from here
        await pilot.press("x")  # exact sectors on request
        assert preview.query_one("#exact").display
        await pilot.press("enter")  # Done
    assert app.return_value == 0
    assert {p: sha256_of(p) for p in demo.disk_images} == hashes


async def test_a_refused_disk_cannot_be_chosen(demo: DemoSetup) -> None:
    small = str(demo.small_disk)
    small_hash = sha256_of(demo.small_disk)
    app = wizard(demo)
    async with app.run_test(size=SIZE) as pilot:
        await choose_backup(pilot, demo.windows_archive)
        await on_screen(pilot, BackupScreen)
        app.screen.query_one("#next").press()  # type: ignore[attr-defined]
        await on_screen(pilot, JobScreen)
        await pilot.press("enter")
        screen = await pick_target(pilot, demo.small_disk)
        await pilot.pause()
        assert app.screen is screen  # Enter on the refused disk went nowhere
        refused = screen.by_device[small]
        assert refused.blocked and "too small" in refused.blockers[0]
        assert screen.query_one("#use").disabled  # type: ignore[attr-defined]
        screen.query_one("#use").press()  # type: ignore[attr-defined]
        await pilot.pause()
        assert app.screen is screen
        detail = str(screen.query_one("#disk-detail").render())  # type: ignore[attr-defined]
        assert "cannot be the target" in detail and "too small" in detail
        # A usable disk still goes on to the preview.
        await pick_target(pilot, demo.new_disk)
        await on_screen(pilot, PreviewScreen)
        await pilot.press("ctrl+q")
    assert app.return_value != 0
    assert sha256_of(demo.small_disk) == small_hash


def start_and_stop_restore(demo: DemoSetup) -> None:
    """Restore the Windows backup onto the new disk and stop it after stage 2, as a
    power cut would; the journal beside the archive is what the wizard finds."""
    probe = ImageProbe([str(p) for p in demo.disk_images])
    with open_archive(demo.windows_archive) as arc:
        disks = probe.disks()
        target = next(
            m.disk
            for m in match_disks(arc.manifest, disks, None)
            if m.disk.device == str(demo.new_disk)
        )
        plan = plan_full_disk(arc.manifest, manifest_digest(arc.manifest), str(arc.path), target)
        cancel = threading.Event()

        def progress(event: ProgressEvent) -> None:
            if event.kind == "stage-done" and event.stage_index == 1:
                cancel.set()

        engine = RestoreEngine(plan, arc, str(demo.new_disk), progress=progress, cancel=cancel)
        with pytest.raises(RestoreCancelled):
            engine.run()


async def test_an_unfinished_restore_is_offered_first_and_finishes(demo: DemoSetup) -> None:
    start_and_stop_restore(demo)
    unfinished = find_unfinished([], [demo.folder])
    assert len(unfinished) == 1
    app = wizard(demo)
    async with app.run_test(size=SIZE) as pilot:
        screen = await on_screen(pilot, ChooseBackupScreen)
        assert isinstance(screen, ChooseBackupScreen)
        button = screen.query_one("#resume-0")
        label = str(button.label)  # type: ignore[attr-defined]
        assert label.startswith("Resume restoring windows-pc.rtui onto")
        assert "stage 3 of 3" in label
        assert app.focused is button
        await pilot.press("enter")
        done = await on_screen(pilot, DoneScreen)
        assert isinstance(done, DoneScreen)
        await pilot.press("enter")
    assert app.return_value == 0
    assert_full_restore(demo.new_disk, demo.windows_archive)
    assert find_unfinished([], [demo.folder]) == []

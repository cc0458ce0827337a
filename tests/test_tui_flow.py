"""The wizard driven by keys (Textual's Pilot) through each job, on demo disk image files.

Every test checks bytes on the image files: a full restore leaves the backup's data on
the target, a one-partition restore leaves the other partition unchanged, and a preview
or a refused disk writes nothing at all.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from test_engine_helpers import SECTOR, MemoryArchive, full_disk_plan, sample_source
from textual.app import App
from textual.widgets import DataTable, Static
from tui_support import (
    assert_full_restore,
    clone_demo,
    expected_partition_bytes,
    header,
    make_demo,
    on_screen,
    read,
    screen_text,
    sha256_of,
    until,
    wizard,
)

import restore_tui.app
from archive import open_archive
from layout.blockio import DiskReader
from layout.probe import ImageProbe, RecordedProbe
from layout.table_io import read_table
from restore_tui.app import candidate_for
from restore_tui.demo import DemoSetup
from restore_tui.engine import ProgressEvent, RestoreCancelled, RestoreEngine
from restore_tui.journal import Journal, find_unfinished
from restore_tui.matching import match_disks
from restore_tui.planner import plan_full_disk
from restore_tui.screens.backup import BackupScreen
from restore_tui.screens.choose import ChooseBackupScreen
from restore_tui.screens.common import ItemList, Step
from restore_tui.screens.confirm import ConfirmScreen
from restore_tui.screens.end import DoneScreen, FailureScreen
from restore_tui.screens.job import JobChoice, JobScreen
from restore_tui.screens.partition import PartitionScreen
from restore_tui.screens.preview import PreviewScreen, offers_new_ids, wizard_words
from restore_tui.screens.progress import Outcome, ProgressScreen, RestoreJob
from restore_tui.screens.target import TargetScreen
from restore_tui.writer import CheckedWriter

pytestmark = pytest.mark.asyncio
SIZE = (80, 24)
WAIT = 30.0  # the most a held engine waits for the test to press the stop key
MACHINES = Path(__file__).parent / "data" / "machines"


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


async def to_job(pilot, archive: Path) -> None:  # type: ignore[no-untyped-def]
    """Step 1 to step 3: ``archive`` chosen, its check skipped, the job step shown."""
    await choose_backup(pilot, archive)
    await on_screen(pilot, BackupScreen)
    pilot.app.screen.query_one("#next").press()
    await on_screen(pilot, JobScreen)


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
        # Before the job is chosen the steps of the usual job are counted.
        assert header(backup) == "Step 2 of 8 · The backup"
        assert "Partition table: the list at the start of the disk" in screen_text(backup)
        await pilot.press("enter")  # "Check it" has the focus
        await until(pilot, lambda: backup.report is not None, "the backup check")
        assert backup.report is not None and backup.report.ok
        await pilot.press("enter")  # "Continue" has the focus once the check passed
        assert header(await on_screen(pilot, JobScreen)) == "Step 3 of 8 · What to do"
        await pilot.press("enter")  # restore the whole disk
        assert header(await pick_target(pilot, demo.new_disk)) == "Step 4 of 8 · The target disk"
        preview = await on_screen(pilot, PreviewScreen)
        assert isinstance(preview, PreviewScreen)
        assert header(preview) == "Step 5 of 8 · What will change"
        # The words a person may not know are explained where they first appear.
        assert "Track 0: the start of the disk" in screen_text(preview)
        assert preview.plan.target.device == str(demo.new_disk)
        await pilot.press("enter")  # Continue
        confirm = await on_screen(pilot, ConfirmScreen)
        assert isinstance(confirm, ConfirmScreen)
        assert header(confirm) == "Step 6 of 8 · Confirm"
        # The backed-up disk is attached too: the last check says so again.
        assert "Two disks would share an identity" in screen_text(confirm)
        await pilot.press("enter")  # nothing typed: Enter must not start anything
        assert app.screen is confirm
        await pilot.press(*confirm.wanted.word, "enter")
        done = await on_screen(pilot, DoneScreen)
        assert header(done) == "Step 8 of 8 · Done"
        # The backed-up disk is still attached: the note says what to do about it now,
        # not a choice that was on the preview ("key n").
        said = screen_text(done)
        assert "Two disks now share an identity" in said and "Unplug that disk" in said
        assert "key n" not in said
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
        await to_job(pilot, demo.windows_archive)
        await pilot.press("down", "enter")  # restore one partition
        target = await pick_target(pilot, spare)
        assert header(target) == "Step 4 of 9 · The target disk"
        # Disks with room are offered (the empty ones get a new table); the backed-up
        # disks, full to the brim, are not.
        offered = [c.device for c in target.candidates if c.recommended]
        assert str(spare) in offered and str(demo.new_disk) in offered
        assert str(demo.windows.path) not in offered
        part = await on_screen(pilot, PartitionScreen)
        assert isinstance(part, PartitionScreen)
        assert header(part) == "Step 5 of 9 · Which partition, and where"
        chosen = part._chosen_partition()
        assert chosen is not None and chosen.number == 2  # the system partition, preselected
        # Partition 1, System Reserved, one row up; Enter moves the focus to the regions.
        await pilot.press("up", "enter")
        await pilot.press("enter")  # the first free region
        preview = await on_screen(pilot, PreviewScreen)
        assert isinstance(preview, PreviewScreen)
        assert header(preview) == "Step 6 of 9 · What will change"
        assert "Nothing is erased" in screen_text(preview)
        plan = preview.plan
        assert plan.job == "one-partition"
        await pilot.press("enter")
        confirm = await on_screen(pilot, ConfirmScreen)
        assert isinstance(confirm, ConfirmScreen)
        assert header(confirm) == "Step 7 of 9 · Confirm"
        await pilot.press(*confirm.wanted.word, "enter")
        assert header(await on_screen(pilot, DoneScreen)) == "Step 9 of 9 · Done"
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
        await to_job(pilot, demo.linux_archive)
        # In preview-only mode the first choice is the whole-disk preview; otherwise the
        # third choice is "Only show what would change".
        await pilot.press(*([] if how == "--dry-run" else ["down", "down"]), "enter")
        target_screen = await on_screen(pilot, TargetScreen)
        # Only a preview: the target step must not say the disk will be replaced.
        words = screen_text(target_screen)
        assert "Nothing is written" in words and "will be replaced" not in words
        await pick_target(pilot, demo.new_disk)
        preview = await on_screen(pilot, PreviewScreen)
        assert isinstance(preview, PreviewScreen)
        assert preview.dry_run
        # The preview is the last step of this job.
        assert header(preview) == "Step 5 of 5 · What would change"
        assert not preview.query("#go")  # there is no way on to writing from here
        # Started for previews only, nothing leads on to a restore; a preview chosen as
        # the job can become the restore it shows.
        assert bool(preview.query("#restore-now")) == (how == "only-show")
        await pilot.press("x")  # exact sectors on request
        assert preview.query_one("#exact").display
        assert str(preview.query_one("#exact-toggle").label) == "Hide sectors"  # type: ignore[attr-defined]
        await pilot.press("enter")  # Done (preview-only wizard) / Back to the start
        if how == "only-show":
            # A preview chosen as the job goes back to step 1, not out of the program.
            await on_screen(pilot, ChooseBackupScreen)
            await pilot.press("ctrl+q")
    assert app.return_value == (0 if how == "--dry-run" else 1)
    assert {p: sha256_of(p) for p in demo.disk_images} == hashes


async def test_a_preview_can_become_the_restore_it_shows(demo: DemoSetup) -> None:
    app = wizard(demo)
    async with app.run_test(size=SIZE) as pilot:
        await to_job(pilot, demo.windows_archive)
        await pilot.press("down", "down", "enter")  # "Only show what would change"
        await pick_target(pilot, demo.new_disk)
        preview = await on_screen(pilot, PreviewScreen)
        assert isinstance(preview, PreviewScreen) and preview.dry_run
        shown = preview.plan
        preview.query_one("#restore-now").press()  # type: ignore[attr-defined]
        confirm = await on_screen(pilot, ConfirmScreen)
        assert isinstance(confirm, ConfirmScreen)
        # The restore's own steps from here, and the very plan that was shown.
        assert header(confirm) == "Step 6 of 8 · Confirm"
        assert confirm.plan == shown
        await pilot.press(*confirm.wanted.word, "enter")
        await on_screen(pilot, DoneScreen)
        await pilot.press("enter")
    assert app.return_value == 0
    assert_full_restore(demo.new_disk, demo.windows_archive)


async def test_a_refused_disk_cannot_be_chosen(demo: DemoSetup) -> None:
    small = str(demo.small_disk)
    small_hash = sha256_of(demo.small_disk)
    app = wizard(demo)
    async with app.run_test(size=SIZE) as pilot:
        await to_job(pilot, demo.windows_archive)
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
        plan = plan_full_disk(arc.manifest, arc.identity(), str(arc.path), target)
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


async def test_new_identifiers_are_a_choice_on_the_preview_and_reach_the_disk(
    demo: DemoSetup,
) -> None:
    """The backed-up disk is still attached, so a copy would share its disk signature: the
    preview offers new identifiers (in its own words, not the command line's --new-ids),
    plans again, and the restore writes the new signature."""
    app = wizard(demo)
    async with app.run_test(size=SIZE) as pilot:
        await to_job(pilot, demo.windows_archive)
        await pilot.press("enter")
        await pick_target(pilot, demo.new_disk)
        first = await on_screen(pilot, PreviewScreen)
        assert isinstance(first, PreviewScreen)
        assert not first.plan.new_ids
        assert any("share an identity" in w.text for w in first.plan.warnings)
        shown = screen_text(first)
        assert "Give the restored disk new identifiers" in shown
        assert "--new-ids" not in shown
        await pilot.press("n")
        await until(
            pilot,
            lambda: isinstance(app.screen, PreviewScreen) and app.screen is not first,
            "the preview planned again",
        )
        again = app.screen
        assert isinstance(again, PreviewScreen)
        plan = again.plan
        assert plan.new_ids
        signature = plan.after.mbr_signature
        assert signature and signature != "7490A9A7"
        shown = screen_text(again)
        assert "--new-ids" not in shown
        assert f"new disk signature {signature}" in shown
        assert "drive letters" in shown  # what new identifiers affect, from the planner
        assert "Keep the backed-up identifiers" in shown
        await pilot.press("enter")
        confirm = await on_screen(pilot, ConfirmScreen)
        assert isinstance(confirm, ConfirmScreen)
        assert "gets new identifiers" in screen_text(confirm)
        await pilot.press(*confirm.wanted.word, "enter")
        done = await on_screen(pilot, DoneScreen)
        shown = screen_text(done)
        assert "New identifiers:" in shown and "--new-ids" not in shown
        await pilot.press("enter")
    assert app.return_value == 0
    # MBR disk signature: 4 bytes at 440, little-endian.
    assert read(demo.new_disk, 440, 4) == bytes.fromhex(signature)[::-1]
    with DiskReader(str(demo.new_disk)) as reader:
        parsed = read_table(reader.read, reader.size, 512)
    assert parsed is not None and parsed.table.mbr_signature == signature


@pytest.mark.parametrize("key", ["escape", "ctrl+q"])
async def test_stop_safely_leaves_a_checkpoint_that_the_next_start_resumes(
    demo: DemoSetup, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    """The engine is held inside the system partition's stage (through its progress
    callback) until the stop key has been pressed, so the stop lands mid-stage every time."""
    import restore_tui.flow as flow_module

    reached, release = threading.Event(), threading.Event()
    real_engine = flow_module.RestoreEngine

    def held_engine(*args, progress, **kwargs):  # type: ignore[no-untyped-def]
        def hold(event: ProgressEvent) -> None:
            progress(event)
            if event.kind == "write" and event.stage_index == 2 and not reached.is_set():
                reached.set()
                release.wait(WAIT)

        return real_engine(*args, progress=hold, **kwargs)

    monkeypatch.setattr(flow_module, "RestoreEngine", held_engine)
    app = wizard(demo)
    async with app.run_test(size=SIZE) as pilot:
        await to_job(pilot, demo.windows_archive)
        await pilot.press("enter")
        await pick_target(pilot, demo.new_disk)
        await on_screen(pilot, PreviewScreen)
        await pilot.press("enter")
        confirm = await on_screen(pilot, ConfirmScreen)
        assert isinstance(confirm, ConfirmScreen)
        await pilot.press(*confirm.wanted.word, "enter")
        progress_screen = await on_screen(pilot, ProgressScreen)
        assert header(progress_screen) == "Step 7 of 8 · Restoring"
        await until(pilot, reached.is_set, "the restore to reach the system partition")
        await pilot.press(key)
        assert progress_screen.cancel.is_set()
        release.set()
        failure = await on_screen(pilot, FailureScreen)
        shown = screen_text(failure)
        assert "stopped, safely" in shown and "Resume restoring" in shown
        await pilot.press("enter")
    assert app.return_value == 1
    unfinished = find_unfinished([], [demo.folder])
    assert len(unfinished) == 1
    journal = Journal.load(unfinished[0].path)
    # Stopped inside stage 3 with a checkpoint part-way through it, not at its start.
    assert journal.record.completed_stages == ("table", "reserved")
    assert journal.record.current_stage == "system"
    assert journal.record.done_in_action > 0

    monkeypatch.setattr(flow_module, "RestoreEngine", real_engine)
    again = wizard(demo)
    async with again.run_test(size=SIZE) as pilot:
        screen = await on_screen(pilot, ChooseBackupScreen)
        label = str(screen.query_one("#resume-0").label)  # type: ignore[attr-defined]
        assert label.startswith("Resume restoring windows-pc.rtui onto")
        assert "stage 3 of 3" in label
        await pilot.press("enter")
        done = await on_screen(pilot, DoneScreen)
        assert header(done) == "Step 3 of 3 · Done"
        await pilot.press("enter")
    assert again.return_value == 0
    assert_full_restore(demo.new_disk, demo.windows_archive)
    assert find_unfinished([], [demo.folder]) == []


class _TargetOnly(App[None]):
    """The target step on its own, on a recorded machine's disks."""

    CSS_PATH = Path(restore_tui.app.__file__).with_name("app.tcss")

    def __init__(self, screen: TargetScreen) -> None:
        super().__init__()
        self.target = screen

    def on_mount(self) -> None:
        self.push_screen(self.target)


@pytest.mark.parametrize("machine", ["forum-laptop.json", "gpt-nvme.json", "cloned-disks.json"])
async def test_the_disk_table_fits_80_columns(built_demo: DemoSetup, machine: str) -> None:
    """Real disks' long model names and serials stay inside 80 columns; the /dev name and
    the reasons are under the table, for the highlighted disk."""
    disks = RecordedProbe(MACHINES / machine).disks()
    with open_archive(built_demo.windows_archive) as arc:
        JobChoice("full-disk", dry_run=False)
        matches = match_disks(arc.manifest, disks, None)
        candidates = [candidate_for(m) for m in matches]
    screen = TargetScreen(Step(4, 8, "The target disk"), candidates, job_words="Which disk?")
    app = _TargetOnly(screen)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = screen.query_one("#disks", DataTable)
        assert table.virtual_size.width <= table.size.width, "the table scrolls sideways"
        for row, c in enumerate(candidates):
            table.move_cursor(row=row)
            await pilot.pause()
            detail = str(screen.query_one("#disk-detail", Static).render())
            assert f"Now called {c.device} (this name can change between boots)" in detail
            assert all(r in detail for r in c.reasons)


@pytest.mark.parametrize("which", ["windows", "linux"])
async def test_planner_warnings_in_wizard_words_never_name_the_command_line(
    built_demo: DemoSetup, which: str
) -> None:
    """Both identity warnings (MBR signature, GPT GUID) and both new-identifier notes, as
    the planner words them for the command line, read as the wizard's own choice."""
    archive_path = getattr(built_demo, f"{which}_archive")
    disks = ImageProbe([str(p) for p in built_demo.disk_images]).disks()
    target = next(d for d in disks if d.device == str(built_demo.new_disk))
    with open_archive(archive_path) as arc:
        digest = arc.identity()
        for new_ids in (False, True):
            plan = plan_full_disk(
                arc.manifest, digest, str(arc.path), target, new_ids=new_ids, other_disks=disks
            )
            cli = [w for w in plan.warnings if "--new-ids" in w.text]
            assert cli, "the planner no longer suggests --new-ids here: update offers_new_ids"
            assert offers_new_ids(plan)
            for warning in cli:
                words = wizard_words(warning, plan)
                assert "--new-ids" not in words
                if not new_ids:
                    assert "choose “Give the restored disk new identifiers” (key n)" in words
                else:
                    assert words.startswith("New identifiers:")


# -- the progress screen: a stall named, resumed stages done, one percent ----------------


class _ProgressOnly(App[None]):
    """The progress step on its own; ``outcome`` is what it ended with."""

    CSS_PATH = Path(restore_tui.app.__file__).with_name("app.tcss")

    def __init__(self, screen: ProgressScreen) -> None:
        super().__init__()
        self.progress_screen = screen
        self.outcome: Outcome | None = None

    def on_mount(self) -> None:
        self.push_screen(self.progress_screen, self._ended)

    def _ended(self, outcome: Outcome | None) -> None:
        self.outcome = outcome


class _HeldBackup(MemoryArchive):
    """A backup whose reading stops once, inside ``pieces()``, in partition 2."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.hold = threading.Event()
        self.release = threading.Event()

    def pieces(self, area, start=0):  # type: ignore[no-untyped-def]
        for piece in super().pieces(area, start):
            if area == 2 and not self.hold.is_set():
                self.hold.set()
                self.release.wait(WAIT)
            yield piece


class _StallingFlow:
    """Stands in for the flow: builds an engine on a held backup or target, with a small
    stall threshold; holds the engine after "moving" until the test looked at the screen."""

    def __init__(self, archive: MemoryArchive, journal: Path) -> None:
        self.archive = archive
        self.journal = journal
        self.moved, self.finish = threading.Event(), threading.Event()

    def engine(self, plan, device, *, journal, progress, cancel, verify):  # type: ignore[no-untyped-def]
        def hold(event: ProgressEvent) -> None:
            progress(event)
            if event.kind == "moving" and not self.moved.is_set():
                self.moved.set()
                self.finish.wait(WAIT)

        return RestoreEngine(
            plan,
            self.archive,
            device,
            journal=journal,
            journal_location=self.journal,
            progress=hold,
            cancel=cancel,
            verify=verify,
            stall_seconds=0.3,
            device_activity=None,
        )


@pytest.mark.parametrize("side", ["backup", "target"])
async def test_the_progress_screen_names_a_stall_and_clears_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: str
) -> None:
    disk, table = sample_source()
    archive = _HeldBackup(disk, table)
    if side == "backup":
        release = archive.release
    else:
        archive.hold.set()  # the backup reads on; the target stops taking writes
        release = threading.Event()
        real_write = CheckedWriter.write
        p2 = table.partition(2).start_lba * SECTOR

        def write(self: CheckedWriter, offset: int, data: bytes | memoryview) -> None:
            if offset >= p2 and not release.is_set():
                release.wait(WAIT)
            real_write(self, offset, data)

        monkeypatch.setattr(CheckedWriter, "write", write)
    target = tmp_path / "target.img"
    target.write_bytes(bytes(len(disk)))
    plan = full_disk_plan(archive, target, len(disk))
    flow = _StallingFlow(archive, tmp_path / "journal.json")
    job = RestoreJob(plan=plan, flow=flow, target_path=str(target))  # type: ignore[arg-type]
    screen = ProgressScreen(Step(7, 8, "Restoring"), job)
    app = _ProgressOnly(screen)
    try:
        async with app.run_test(size=SIZE) as pilot:
            stall = screen.query_one("#stall", Static)
            assert not stall.display, "a stall is shown before anything stalled"
            await until(pilot, lambda: stall.has_class("stalled"), "the stall to be shown")
            words = str(stall.render())
            assert words.startswith("Nothing has moved for ")
            if side == "backup":
                assert "waiting for the disk that holds the backup" in words
                assert "A USB disk may have gone to sleep, or its cable may be loose" in words
            else:
                assert "waiting for the disk being restored" in words
                assert "It may be failing, or its cable may be loose" in words
            assert words.endswith(
                "You can wait, or press Stop safely — the restore continues later from the "
                "last checkpoint."
            )
            assert stall.display
            # Laid out on the next refresh: wait for it rather than race it (a loaded CI).
            await until(pilot, lambda: stall.region.height > 0, "the stall words on screen")
            release.set()
            await until(pilot, flow.moved.is_set, "bytes to move again")
            await until(pilot, lambda: not stall.has_class("stalled"), "the stall to clear")
            assert not stall.display and str(stall.render()) == ""
            flow.finish.set()
            await until(pilot, lambda: app.outcome is not None, "the restore to end")
    finally:  # a failed check must not leave the engine held
        release.set()
        flow.finish.set()
    assert app.outcome is not None and app.outcome.ok, app.outcome


def stop_inside_the_system_stage(demo: DemoSetup) -> int:
    """Restore the Windows backup onto the new disk and stop it inside stage 3, after a
    checkpoint part-way through; the engine's overall percent at that checkpoint."""
    probe = ImageProbe([str(p) for p in demo.disk_images])
    with open_archive(demo.windows_archive) as arc:
        target = next(d for d in probe.disks() if d.device == str(demo.new_disk))
        plan = plan_full_disk(arc.manifest, arc.identity(), str(arc.path), target)
        cancel = threading.Event()
        writes = [0]
        last: list[ProgressEvent] = []

        def progress(event: ProgressEvent) -> None:
            if event.kind == "checkpoint":
                last[:] = [event]
            if event.kind == "write" and event.stage_index == 2:
                writes[0] += 1
                if writes[0] == 5:
                    cancel.set()

        engine = RestoreEngine(
            plan, arc, str(demo.new_disk), progress=progress, cancel=cancel, verify=True
        )
        with pytest.raises(RestoreCancelled):
            engine.run()
    assert last and last[0].stage_index == 2 and 0 < last[0].stage_done < last[0].stage_total
    return last[0].overall_percent


async def test_a_resumed_restore_shows_finished_stages_done_and_the_offers_percent(
    demo: DemoSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped inside stage 3: the offer, the journal and the engine say one percent, and the
    progress screen starts with stages 1 and 2 done, at that percent."""
    import re

    import restore_tui.flow as flow_module

    at_stop = stop_inside_the_system_stage(demo)
    [summary] = find_unfinished([], [demo.folder])
    assert summary.percent == at_stop
    record = Journal.load(summary.path).record
    assert record.done_units is not None and record.total_units is not None
    assert record.done_units < record.total_units

    first, go_on = threading.Event(), threading.Event()
    started, finish = threading.Event(), threading.Event()
    real_engine = flow_module.RestoreEngine

    def held_engine(*args, progress, **kwargs):  # type: ignore[no-untyped-def]
        def hold(event: ProgressEvent) -> None:
            if not first.is_set():  # before the screen hears anything from the engine
                first.set()
                go_on.wait(WAIT)
            progress(event)
            if event.kind == "stage-start" and not started.is_set():
                started.set()
                finish.wait(WAIT)

        return real_engine(*args, progress=hold, **kwargs)

    monkeypatch.setattr(flow_module, "RestoreEngine", held_engine)
    app = wizard(demo)
    try:
        async with app.run_test(size=SIZE) as pilot:
            choose = await on_screen(pilot, ChooseBackupScreen)
            label = str(choose.query_one("#resume-0").label)  # type: ignore[attr-defined]
            offered = re.search(r"(\d+) %", label)
            assert offered is not None and int(offered.group(1)) == at_stop, label
            await pilot.press("enter")
            screen = await on_screen(pilot, ProgressScreen)
            assert isinstance(screen, ProgressScreen)
            await until(pilot, first.is_set, "the resumed engine's first report")
            await pilot.pause()
            # What the screen shows before the engine said anything.
            lines = screen.query_one("#stages", ItemList).lines
            assert len(lines) == 3
            assert lines[0].startswith(" ✓ 1.") and lines[0].endswith("done, checked"), lines
            assert lines[1].startswith(" ✓ 2.") and lines[1].endswith("done, checked"), lines
            assert lines[2].startswith(" ▶ 3.") and "waiting" not in lines[2], lines
            overall = screen.query_one("#overall-label", Static)
            assert str(overall.render()) == f"Overall: {at_stop} %"
            go_on.set()
            await until(pilot, started.is_set, "the system stage to start again")
            await until(pilot, lambda: screen.current == 2, "the screen to hear of it")
            await pilot.pause()
            lines = screen.query_one("#stages", ItemList).lines
            assert [line[:3] for line in lines] == [" ✓ ", " ✓ ", " ▶ "]
            assert str(overall.render()) == f"Overall: {at_stop} %"
            finish.set()
            done = await on_screen(pilot, DoneScreen)
            await pilot.press("enter")
    finally:  # a failed check must not leave the engine held
        go_on.set()
        finish.set()
    assert app.return_value == 0
    assert isinstance(done, DoneScreen)
    assert_full_restore(demo.new_disk, demo.windows_archive)


async def test_going_back_to_the_target_step_keeps_the_disk_picked(demo: DemoSetup) -> None:
    """Back from the preview, the list starts on the disk he picked — not on the best
    match, where one Enter would plan for another disk."""
    app = wizard(demo)
    async with app.run_test(size=SIZE) as pilot:
        await to_job(pilot, demo.windows_archive)
        await pilot.press("enter")
        first = await pick_target(pilot, demo.new_disk)
        assert first.candidates[0].device != str(demo.new_disk)  # not the best match
        await on_screen(pilot, PreviewScreen)
        await pilot.press("escape")
        again = await on_screen(pilot, TargetScreen)
        assert isinstance(again, TargetScreen) and again is not first
        assert again._highlighted() is not None
        assert again._highlighted().device == str(demo.new_disk)  # type: ignore[union-attr]
        await pilot.press("ctrl+q")


async def test_a_preview_turned_restore_stays_a_restore_when_going_back(demo: DemoSetup) -> None:
    app = wizard(demo)
    async with app.run_test(size=SIZE) as pilot:
        await to_job(pilot, demo.windows_archive)
        await pilot.press("down", "down", "enter")  # "Only show what would change"
        await pick_target(pilot, demo.new_disk)
        preview = await on_screen(pilot, PreviewScreen)
        preview.query_one("#restore-now").press()  # type: ignore[attr-defined]
        await on_screen(pilot, ConfirmScreen)
        await pilot.press("escape")  # Go back: the preview of the restore, not of a preview
        real = await on_screen(pilot, PreviewScreen)
        assert isinstance(real, PreviewScreen) and not real.dry_run
        assert header(real) == "Step 5 of 8 · What will change"
        await pilot.press("escape")
        target = await on_screen(pilot, TargetScreen)
        assert isinstance(target, TargetScreen) and not target.dry_run
        assert header(target) == "Step 4 of 8 · The target disk"
        await pilot.press("ctrl+q")

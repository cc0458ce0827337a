"""Resume finds the disk by what it is after a restart gave the /dev names to other disks.

A restore onto loop disk X is killed mid-stage; X and a second disk Y are detached and
attached again with their names swapped (as a reboot does). With X absent, resume says
which disk to attach and writes nothing; with X back under Y's old name, resume says the
name changed, finishes on X byte-exact, and Y is byte-identical throughout.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import LOOP_SKIP_REASON
from test_crash_resume import busy_disk, file_hash, let_go, next_checkpoint, spawn
from tui_support import header, on_screen, screen_text

from archive.backup import backup
from layout.probe import SystemProbe
from restore_tui import sample
from restore_tui.app import RestoreWizard, WizardOptions
from restore_tui.cli import main
from restore_tui.journal import Checkpoint, beside_path
from restore_tui.screens.choose import ChooseBackupScreen
from restore_tui.screens.confirm import ConfirmScreen
from restore_tui.screens.end import DoneScreen

pytestmark = pytest.mark.skipif(LOOP_SKIP_REASON is not None, reason=LOOP_SKIP_REASON or "")


def attach_at(device: str, image: Path) -> None:
    """Attach ``image`` at exactly ``device`` (what a reboot's new order would give).

    A detached loop device is released only once nothing holds it open, and udev may
    still be probing it for a moment: wait for that instead of failing on "busy"."""
    deadline = time.monotonic() + 20
    while True:
        if shutil.which("udevadm"):
            subprocess.run(["udevadm", "settle", "--timeout=10"], capture_output=True)
        done = subprocess.run(["losetup", device, str(image)], capture_output=True, text=True)
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"could not attach {image} at {device}: {done.stderr}")
        time.sleep(0.2)


def attach_free(image: Path) -> str:
    return subprocess.run(
        ["losetup", "-f", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()


def detach(device: str) -> None:
    subprocess.run(["losetup", "-d", device], capture_output=True)


def run_cli(args: list[str]) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from restore_tui.cli import main; "
         "sys.exit(main(sys.argv[1:]))", *args],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent,
        stdin=subprocess.DEVNULL, timeout=600,
    )  # fmt: skip
    return done.returncode, done.stderr + done.stdout


def kill_after_the_table(target: str, archive: Path, journal: Path) -> None:
    """Restore onto ``target`` in lockstep and kill -9 once the table stage is done and a
    later stage is under way."""
    proc = spawn(["restore", str(archive), "--target", target])
    try:
        while next_checkpoint(proc, 120):
            record = Checkpoint.model_validate_json(journal.read_text())
            if "table" in record.completed_stages and record.done_in_action > 0:
                break
            let_go(proc)
    finally:
        proc.kill()
        proc.wait()


@dataclass
class Interrupted:
    """A restore onto X killed after its table stage, X and Y detached again."""

    archive: Path
    clean: Path  # the same restore, uninterrupted, onto an image file
    x_image: Path
    y_image: Path
    y_hash: str
    x_dev: str  # the names they had during the restore
    y_dev: str
    attached: list[str] = field(default_factory=list)

    def attach(self, device: str, image: Path) -> None:
        attach_at(device, image)
        self.attached.append(device)


@pytest.fixture
def interrupted(tmp_path: Path) -> Iterator[Interrupted]:
    if shutil.which("mkfs.vfat") is None:
        pytest.skip("needs mkfs.vfat for the sample disk")
    source = busy_disk(tmp_path / "src.img")
    archive = tmp_path / "src.rtui"
    backup(str(source.path), archive)
    clean = tmp_path / "clean.img"
    sample.build_blank(clean, 64)
    assert main(["restore", str(archive), "--target", str(clean), "--yes"]) == 0
    beside_path(archive).unlink()
    x_image, y_image = tmp_path / "x.img", tmp_path / "y.img"
    sample.build_blank(x_image, 64)
    sample.build_disk(
        y_image, 64, "msdos",
        [sample.SamplePartition(number=1, start_lba=2048, length_lba=60 * 2048, fs="ext4",
                                label="other", mbr_type=0x83, files={"y.txt": b"mine\n"})],
        seed=9, signature="0DDBA115",
    )  # fmt: skip
    state = Interrupted(archive, clean, x_image, y_image, file_hash(y_image), "", "")
    try:
        state.x_dev = attach_free(x_image)
        state.attached.append(state.x_dev)
        state.y_dev = attach_free(y_image)
        state.attached.append(state.y_dev)
        kill_after_the_table(state.x_dev, archive, beside_path(archive))
        for device in state.attached:
            detach(device)
        state.attached.clear()
        yield state
    finally:
        for device in reversed(state.attached):
            with contextlib.suppress(OSError):
                detach(device)


def test_resume_follows_the_disk_not_its_name(interrupted: Interrupted) -> None:
    s = interrupted
    # After the "reboot" only Y is back, under X's old name: nothing to find, nothing written.
    s.attach(s.x_dev, s.y_image)
    code, said = run_cli(["resume", str(s.archive), "--yes"])
    assert code == 1 and "is not attached" in said and "nothing was written" in said, said
    assert f"{s.x_dev} is another disk now: its partition table is not the one the restore" in said
    assert file_hash(s.y_image) == s.y_hash

    # X comes back under Y's old name.
    s.attach(s.y_dev, s.x_image)
    code, said = run_cli(["resume", str(s.archive), "--yes"])
    assert code == 0, said
    assert "The disk's name changed" in said and f"is now {s.y_dev}" in said
    assert f"{s.x_dev} is now" in said
    assert file_hash(s.x_image) == file_hash(s.clean)
    assert file_hash(s.y_image) == s.y_hash


@pytest.mark.asyncio
async def test_the_wizard_resumes_on_the_disk_under_its_new_name(
    interrupted: Interrupted,
) -> None:
    s = interrupted
    s.attach(s.x_dev, s.y_image)
    s.attach(s.y_dev, s.x_image)
    app = RestoreWizard(
        WizardOptions(
            probe=SystemProbe(),
            backup_roots=lambda: [s.archive.parent],
            journal_dirs=[s.archive.parent],
        )
    )
    app.animation_level = "none"
    async with app.run_test(size=(80, 24)) as pilot:
        choose = await on_screen(pilot, ChooseBackupScreen)
        label = str(choose.query_one("#resume-0").label)  # type: ignore[attr-defined]
        assert "src.rtui" in label and f"it was {s.x_dev} then" in label
        await pilot.press("enter")
        confirm = await on_screen(pilot, ConfirmScreen)
        assert isinstance(confirm, ConfirmScreen)
        shown = screen_text(confirm)
        assert f"{s.x_dev} is now" in shown and f"is now {s.y_dev}" in shown
        assert header(confirm) == "Step 2 of 4 · Continue"
        await pilot.press(*confirm.wanted.word, "enter")
        done = await on_screen(pilot, DoneScreen)
        assert header(done) == "Step 4 of 4 · Done"
        await pilot.press("enter")
    assert app.return_value == 0
    assert file_hash(s.x_image) == file_hash(s.clean)
    assert file_hash(s.y_image) == s.y_hash

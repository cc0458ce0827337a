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
from pathlib import Path

import pytest
from conftest import LOOP_SKIP_REASON
from test_crash_resume import busy_disk, file_hash, let_go, next_checkpoint, spawn

from archive.backup import backup
from restore_tui import sample
from restore_tui.cli import main
from restore_tui.journal import Checkpoint, beside_path

pytestmark = pytest.mark.skipif(LOOP_SKIP_REASON is not None, reason=LOOP_SKIP_REASON or "")


def attach_at(device: str, image: Path) -> None:
    """Attach ``image`` at exactly ``device`` (what a reboot's new order would give)."""
    subprocess.run(["losetup", device, str(image)], check=True, capture_output=True)


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


def test_resume_follows_the_disk_not_its_name(tmp_path: Path) -> None:
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
    y = sample.build_disk(
        y_image, 64, "msdos",
        [sample.SamplePartition(number=1, start_lba=2048, length_lba=60 * 2048, fs="ext4",
                                label="other", mbr_type=0x83, files={"y.txt": b"mine\n"})],
        seed=9, signature="0DDBA115",
    )  # fmt: skip
    y_hash = file_hash(y.path)
    attached: list[str] = []
    try:
        x_dev = attach_free(x_image)
        attached.append(x_dev)
        y_dev = attach_free(y_image)
        attached.append(y_dev)
        kill_after_the_table(x_dev, archive, beside_path(archive))
        for device in attached:
            detach(device)
        attached.clear()

        # After the "reboot" only Y is back, under X's old name: nothing to find, nothing written.
        attach_at(x_dev, y_image)
        attached.append(x_dev)
        code, said = run_cli(["resume", str(archive), "--yes"])
        assert code == 1 and "is not attached" in said and "nothing was written" in said, said
        assert file_hash(y.path) == y_hash

        # X comes back under Y's old name.
        attach_at(y_dev, x_image)
        attached.append(y_dev)
        code, said = run_cli(["resume", str(archive), "--yes"])
        assert code == 0, said
        assert "The disk's name changed" in said and f"is now {y_dev}" in said
        assert f"{x_dev} is now" in said
        assert file_hash(x_image) == file_hash(clean)
        assert file_hash(y.path) == y_hash
    finally:
        for device in reversed(attached):
            with contextlib.suppress(OSError):
                detach(device)

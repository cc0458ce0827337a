"""The target is locked while it is written: udev and other tools that follow systemd's
block-device locking contract (a shared `flock` before probing) keep their hands off."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import needs_loop
from test_crash_resume import busy_disk, let_go, next_checkpoint, spawn

from archive.backup import backup
from restore_tui import sample

pytestmark = [
    needs_loop,
    pytest.mark.skipif(shutil.which("flock") is None, reason="needs flock(1) from util-linux"),
]


def can_lock(device: str) -> bool:
    """Would a probe get its shared lock now (udev's own check, without waiting)?"""
    return subprocess.run(["flock", "--nonblock", "--shared", device, "true"]).returncode == 0


def test_the_disk_is_locked_from_first_write_to_the_end(tmp_path: Path, loop_device) -> None:  # type: ignore[no-untyped-def]
    if shutil.which("mkfs.vfat") is None:
        pytest.skip("needs mkfs.vfat for the sample disk")
    source = busy_disk(tmp_path / "src.img")
    archive = tmp_path / "src.rtui"
    backup(str(source.path), archive)
    target = tmp_path / "target.img"
    sample.build_blank(target, 64)
    device = loop_device(target)
    assert can_lock(device)
    proc = spawn(["restore", str(archive), "--target", device])
    seen = 0
    try:
        while next_checkpoint(proc, 120):
            seen += 1
            assert not can_lock(device), f"unlocked at checkpoint {seen}"
            let_go(proc)
    finally:
        proc.kill()
        proc.wait()
    assert seen >= 3 and proc.returncode == 0
    assert can_lock(device)

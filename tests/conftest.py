"""Shared fixtures: loop devices attached by the test itself, skip reasons, and a
filesystem that refuses direct I/O.

Only loop devices these fixtures attached are ever detached, in ``finally``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def _loop_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to attach loop devices"
    if not Path("/dev/loop-control").exists():
        return "no /dev/loop-control on this machine"
    if shutil.which("losetup") is None:
        return "losetup is not installed"
    return None


LOOP_SKIP_REASON = _loop_reason()
needs_loop = pytest.mark.skipif(LOOP_SKIP_REASON is not None, reason=LOOP_SKIP_REASON or "")


def no_direct_io(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every O_DIRECT open fail, as on tmpfs and some FUSE filesystems."""
    real_open = os.open

    def refusing(path: str | os.PathLike[str], flags: int, *args: int) -> int:
        if flags & os.O_DIRECT:
            raise OSError(22, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing)


def attach_loop(image: Path, *, read_only: bool = False) -> str:
    """Attach ``image`` to a free loop device and add partition nodes when it has a table."""
    cmd = ["losetup", "-f", "--show"]
    if read_only:
        cmd.append("-r")
    device = subprocess.run(
        [*cmd, str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    # This kernel does not scan tables itself; partx adds nodes via BLKPG. A disk
    # without a table makes partx fail, which is fine.
    subprocess.run(["partx", "-a", device], capture_output=True)
    return device


def detach_loop(device: str) -> None:
    subprocess.run(["partx", "-d", device], capture_output=True)
    subprocess.run(["losetup", "-d", device], capture_output=True)


@pytest.fixture
def loop_device() -> Iterator[Callable[..., str]]:
    """Factory: ``loop_device(image_path)`` -> /dev/loopN, detached after the test."""
    if LOOP_SKIP_REASON:
        pytest.skip(LOOP_SKIP_REASON)
    attached: list[str] = []

    def attach(image: Path, read_only: bool = False) -> str:
        device = attach_loop(image, read_only=read_only)
        attached.append(device)
        return device

    try:
        yield attach
    finally:
        for device in reversed(attached):
            detach_loop(device)

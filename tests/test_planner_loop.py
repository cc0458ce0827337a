"""`restore-tui plan` against real loop devices: the issue's three-disk scenario.

The backed-up disk, a larger blank disk and the disk holding the archive (mounted)
are attached in a shuffled order; plan must pick the backed-up disk, never the
archive's, and write nothing to any of them.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import needs_loop

from restore_tui import sample
from restore_tui.cli import main


def device_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@needs_loop
@pytest.mark.root
@pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="needs mkfs.ext4")
@pytest.mark.parametrize("order_seed", [1, 2])
def test_plan_picks_the_backed_up_disk_and_refuses_the_archive_disk(
    tmp_path: Path,
    loop_device: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
    order_seed: int,
) -> None:
    from archive.backup import backup

    source = sample.build_mbr_with_logicals(tmp_path / "source.img", 64, seed=order_seed)
    # A disk signature no other test's disk carries: other tests may have the same
    # sample attached right now, and two strong matches would (rightly) stop the choice.
    with open(source.path, "r+b") as handle:
        handle.seek(440)
        handle.write(struct.pack("<I", 0x5EED0000 + order_seed))
    blank = tmp_path / "blank.img"
    sample.build_blank(blank, 96, garbage=False)
    holder = tmp_path / "holder.img"
    with holder.open("wb") as handle:
        handle.truncate(64 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(holder)], check=True)

    images = {"source": Path(source.path), "blank": blank, "holder": holder}
    names = list(images)
    random.Random(order_seed).shuffle(names)
    devices = {name: loop_device(images[name]) for name in names}

    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    subprocess.run(["mount", devices["holder"], str(mount_point)], check=True)
    try:
        archive = mount_point / "backup.rtui"
        backup(devices["source"], archive)
        hashes = {name: device_hash(dev) for name, dev in devices.items() if name != "holder"}

        assert main(["plan", str(archive), "--json"]) == 0
        captured = capsys.readouterr()
        plan = json.loads(captured.out)
        assert plan["target"]["device"] == devices["source"]
        assert "same disk signature" in captured.err
        assert plan["stages"][0]["name"] == "table"
        assert all(
            a["offset"] + a["length"] <= 64 * 1024 * 1024
            for s in plan["stages"] for a in s["actions"]
        )

        assert main(["plan", str(archive), "--target", devices["holder"]]) == 1
        err = capsys.readouterr().err
        assert "holds the backup you are restoring from" in err

        assert main(["plan", str(archive), "--target", devices["blank"]]) == 0
        text = capsys.readouterr().out
        assert "Before (no partition table)" in text and "After (MBR" in text
        assert {name: device_hash(dev) for name, dev in devices.items()
                if name != "holder"} == hashes
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)

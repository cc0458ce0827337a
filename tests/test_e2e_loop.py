"""Native archives: one partition into free space of a loop device, with udev running.

This kernel does not parse partition tables itself; the engine writes through the
whole-disk device, so a restore must come out the same whether or not partition
nodes (/dev/loopNpM, added by ``partx -a``) exist.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import needs_loop

from layout.models import PartitionTable
from layout.table_io import read_table
from restore_tui import sample
from restore_tui.cli import main

SECTOR = 512
UDEVD = "/lib/systemd/systemd-udevd"

pytestmark = [
    pytest.mark.skipif(
        shutil.which("mkfs.ext4") is None or shutil.which("mkfs.vfat") is None,
        reason="needs mkfs.ext4 and mkfs.vfat to build sample disks",
    ),
    needs_loop,
    pytest.mark.root,
]


def _udev_up() -> bool:
    return subprocess.run(["udevadm", "control", "--ping"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def udev() -> Iterator[None]:
    """udev running; when it is not, started here in the foreground and stopped after."""
    if shutil.which("udevadm") is None:
        pytest.skip("udevadm is not installed")
    if _udev_up():
        yield
        return
    if not Path(UDEVD).exists():
        pytest.skip("systemd-udevd is not installed")
    # Not --daemon: a child we started ourselves can be stopped by its own pid.
    daemon = subprocess.Popen([UDEVD], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if _udev_up() or daemon.poll() is not None:
                break
            time.sleep(0.1)
        if not _udev_up():
            pytest.skip("systemd-udevd did not start")
        yield
    finally:
        if daemon.poll() is None:
            daemon.terminate()
            daemon.wait(timeout=30)


def read(path: str | Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def digest(path: str | Path, offset: int, length: int) -> str:
    return hashlib.sha256(read(path, offset, length)).hexdigest()


def table_of(path: str | Path, size: int) -> PartitionTable:
    parsed = read_table(lambda o, n: read(path, o, n), size)
    assert parsed is not None
    return parsed.table


def partition_nodes(device: str) -> list[Path]:
    return sorted(Path("/dev").glob(Path(device).name + "p*"))


def test_one_partition_into_free_space_with_and_without_partition_nodes(
    udev: None, tmp_path: Path, loop_device: Callable[..., str]
) -> None:
    source = sample.build_mbr_with_logicals(tmp_path / "src.img", 64, seed=51)
    archive = tmp_path / "src.rtui"
    assert main(["backup", str(source.path), str(archive)]) == 0
    moved = source.partition(5)  # FAT "SHARED", a logical partition

    # Two identical used disks with free space at the end of their extended partition.
    target = sample.build_mbr_with_logicals(tmp_path / "a.img", 96, seed=52)
    shutil.copyfile(target.path, tmp_path / "b.img")
    with_nodes = loop_device(target.path)
    without_nodes = loop_device(tmp_path / "b.img")
    subprocess.run(["udevadm", "settle", "--timeout=30"], check=True)
    assert partition_nodes(with_nodes), "partx -a made no partition nodes"
    subprocess.run(["partx", "-d", without_nodes], capture_output=True)
    assert not partition_nodes(without_nodes)
    present = {p.number for p in table_of(with_nodes, target.size_bytes).partitions}
    kept = {p.number: digest(with_nodes, p.offset, p.size) for p in target.data_partitions}

    for device in (with_nodes, without_nodes):
        rc = main(["restore", str(archive), "--target", device, "--partition", "5", "--yes"])
        assert rc == 0
        table = table_of(device, target.size_bytes)
        (new,) = [p for p in table.partitions if p.number not in present]
        assert new.kind == "logical" and new.length_lba == moved.length_lba
        offset, size = new.start_lba * SECTOR, new.length_lba * SECTOR
        ok, output = sample.fsck_clean("vfat", device, offset, size)
        assert ok, output
        assert sample.read_files("vfat", device, offset, size) == source.files[5]
        assert int.from_bytes(read(device, offset + 0x1C, 4), "little") == new.start_lba
        for p in target.data_partitions:
            assert digest(device, p.offset, p.size) == kept[p.number], f"partition {p.number}"

    # The restore did not depend on the nodes: both disks hold the same bytes.
    assert digest(with_nodes, 0, target.size_bytes) == digest(without_nodes, 0, target.size_bytes)

    # The kernel, told about the new table, finds the new partition where it was written.
    subprocess.run(["partx", "-u", with_nodes], capture_output=True)
    subprocess.run(["partx", "-a", with_nodes], capture_output=True)
    subprocess.run(["udevadm", "settle", "--timeout=30"], check=True)
    node = Path(f"{with_nodes}p{new.number}")
    assert node.exists(), [str(n) for n in partition_nodes(with_nodes)]
    assert digest(node, 0, size) == digest(with_nodes, offset, size)
    probe = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "LABEL", str(node)], capture_output=True, text=True
    )
    assert probe.stdout.strip() == "SHARED"

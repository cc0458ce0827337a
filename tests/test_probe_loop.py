"""The real probe on loop devices with udev running: identity, tables, what is in use.

Every loop device, mount, swap and device-mapper node here is created by the
test and removed in ``finally``; udev is started only when it is not running.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import attach_loop, detach_loop, needs_loop

from archive.manifest import ArchiveManifest, BootArea, SourceDisk
from layout.notices import codes
from layout.probe import ImageProbe, ProbedDisk, SystemProbe
from restore_tui.matching import match_disks

pytestmark = [needs_loop, pytest.mark.root]
MiB = 1024 * 1024
UDEVD = "/lib/systemd/systemd-udevd"


def _udev_up() -> bool:
    return subprocess.run(["udevadm", "control", "--ping"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def udev() -> None:
    """udev running; started here (and left running for others) when it is not."""
    if shutil.which("udevadm") is None:
        pytest.skip("udevadm is not installed")
    if not _udev_up():
        if not Path(UDEVD).exists():
            pytest.skip("systemd-udevd is not installed")
        subprocess.run([UDEVD, "--daemon"], check=True, capture_output=True)
        # --daemon returns once the daemon forked; ping until its control socket answers.
        for _ in range(50):
            if _udev_up():
                break
            subprocess.run(["udevadm", "settle", "--timeout=1"], capture_output=True)
        if not _udev_up():
            pytest.skip("systemd-udevd did not start")


def settle(device: str) -> None:
    """Let udev record the device (and its partitions) as it would at boot."""
    subprocess.run(["udevadm", "trigger", "--action=add", device], check=True)
    for part in sorted(Path("/dev").glob(Path(device).name + "p*")):
        subprocess.run(["udevadm", "trigger", "--action=add", str(part)], check=True)
    subprocess.run(["udevadm", "settle", "--timeout=30"], check=True)


def make_disk(path: Path, size_mib: int = 48, signature: str = "1badcafe") -> Path:
    """MBR disk: p1 ext4 "LOOPDATA", p2 ext4 "LOOPTWO", p3 Linux swap.

    Everything is written into the image file before it is attached: a write
    through a partition node would make udev's watch re-read the table, which
    on this kernel removes the partition nodes.
    """
    with path.open("wb") as f:
        f.truncate(size_mib * MiB)
    subprocess.run(
        ["sfdisk", "-q", str(path)],
        input=f"label: dos\nlabel-id: 0x{signature}\nstart=2048,size=16384,type=83\n"
        "start=18432,size=16384,type=83\nstart=34816,size=8192,type=82\n",
        text=True, check=True,
    )
    for start, label in ((2048, "LOOPDATA"), (18432, "LOOPTWO")):
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-L", label, "-E", f"offset={start * 512}",
             str(path), "8M"],
            check=True,
        )
    swap = path.with_suffix(".swap")
    with swap.open("wb") as f:
        f.truncate(8192 * 512)
    subprocess.run(["mkswap", "-q", str(swap)], check=True, capture_output=True)
    with path.open("r+b") as f:
        f.seek(34816 * 512)
        f.write(swap.read_bytes())
    swap.unlink()
    return path


@pytest.fixture
def mount_dir(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """Factory: mount(device, name) -> mount point; everything unmounted afterwards."""
    mounted: list[Path] = []

    def mount(device: str, name: str) -> Path:
        target = tmp_path / name
        target.mkdir()
        subprocess.run(["mount", device, str(target)], check=True, capture_output=True)
        mounted.append(target)
        return target

    try:
        yield mount
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", str(target)], capture_output=True)
        # Let udev finish with the devices before the loop fixture detaches them.
        subprocess.run(["udevadm", "settle", "--timeout=30"], capture_output=True)


def part_node(device: str, number: int) -> str:
    node = f"{device}p{number}"
    assert Path(node).exists(), f"{node} is missing: partx did not add it"
    return node


def test_loop_disk_through_udev(
    udev: None, tmp_path: Path, loop_device: Callable[..., str]
) -> None:
    image = make_disk(tmp_path / "disk.img")
    device = loop_device(image)
    settle(device)
    probe = SystemProbe()
    disk = probe.disk(device)
    assert disk.device == device
    assert disk.identity.bus == "loop"
    assert disk.backing_file == str(image)
    assert disk.identity.size_bytes == 48 * MiB
    assert disk.table is not None and disk.table.mbr_signature == "1BADCAFE"
    labels = {p.number: (p.filesystem, p.label) for p in disk.table.partitions}
    assert labels == {1: ("ext4", "LOOPDATA"), 2: ("ext4", "LOOPTWO"), 3: ("swap", None)}
    assert disk.in_use == () and disk.mounts == () and not disk.read_only
    assert disk.missing_facts == ()
    assert disk.headline == "disk.img · 48.0 MiB · loop device"

    listed = {d.device: d for d in probe.disks()}
    assert listed[device] == disk
    for d in listed.values():
        name = Path(d.device).name
        assert not name.startswith(("zram", "ram", "sr", "dm-", "md"))
        if name.startswith("loop"):
            assert d.backing_file, f"{d.device} has no backing file but was listed"

    # Without udev the same disk reads the same: loops carry no serial to miss.
    plain = SystemProbe(use_udev=False).disk(device)
    assert plain.identity == disk.identity and plain.table == disk.table


def test_partition_node_is_refused_as_a_disk(
    udev: None, tmp_path: Path, loop_device: Callable[..., str]
) -> None:
    device = loop_device(make_disk(tmp_path / "disk.img"))
    settle(device)
    from layout.probe import ProbeError

    with pytest.raises(ProbeError, match=f"is a partition, not a whole disk: choose {device}$"):
        SystemProbe().disk(part_node(device, 1))


def test_mounted_swap_and_mapped_partitions_are_in_use(
    udev: None,
    tmp_path: Path,
    loop_device: Callable[..., str],
    mount_dir: Callable[[str, str], Path],
) -> None:
    device = loop_device(make_disk(tmp_path / "disk.img"))
    settle(device)
    # A space in the mount point: /proc/self/mountinfo writes it as \040.
    mnt = mount_dir(part_node(device, 2), "usb stick")
    disk = SystemProbe().disk(device)
    assert disk.in_use == (f"partition 2 is mounted at {mnt}",)
    assert disk.mounts == (str(mnt),)
    # The image file behind the loop device is in use through it.
    image_disk = ImageProbe().disk(str(tmp_path / "disk.img"))
    assert image_disk.in_use == (
        f"attached as {device}: partition 2 is mounted at {mnt}",
    )

    backup = backup_like(disk)
    (m,) = match_disks(backup, [disk], None)
    assert m.strong
    assert [b.text for b in m.blockers] == [
        f"in use: partition 2 is mounted at {mnt} — close what uses it (or unmount it) and "
        "try again"
    ]

    # A device-mapper device on partition 1 (what LVM and dm-crypt build).
    dm_name = f"rtui-{uuid.uuid4().hex[:8]}"
    created = subprocess.run(
        ["dmsetup", "create", dm_name, "--table", f"0 16384 linear {part_node(device, 1)} 0"],
        capture_output=True, text=True,
    )
    swap_on = False
    try:
        if created.returncode == 0:
            disk = SystemProbe().disk(device)
            assert any(
                note.startswith("partition 1 is used by dm-") and f"({dm_name})" in note
                and note.endswith("(RAID/LVM/device-mapper)")
                for note in disk.in_use
            ), disk.in_use
        swapon = subprocess.run(["swapon", part_node(device, 3)], capture_output=True)
        swap_on = swapon.returncode == 0
        if swap_on:
            disk = SystemProbe().disk(device)
            assert "partition 3 is active swap" in disk.in_use
    finally:
        if swap_on:
            subprocess.run(["swapoff", part_node(device, 3)], capture_output=True)
            subprocess.run(["udevadm", "settle", "--timeout=30"], capture_output=True)
        if created.returncode == 0:
            subprocess.run(["dmsetup", "remove", dm_name], capture_output=True)
    if created.returncode != 0 and not swap_on:
        pytest.skip(
            f"neither device-mapper nor swap works here: {created.stderr.strip()}; "
            f"{swapon.stderr.decode(errors='replace').strip()}"
        )


def test_read_only_loop(udev: None, tmp_path: Path, loop_device: Callable[..., str]) -> None:
    device = loop_device(make_disk(tmp_path / "disk.img"), read_only=True)
    settle(device)
    disk = SystemProbe().disk(device)
    assert disk.read_only
    (m,) = match_disks(backup_like(disk), [disk], None)
    assert any(b.text.startswith("read-only: ") for b in m.blockers)


def test_disk_holding_a_file_through_loop_backing_files(
    udev: None,
    tmp_path: Path,
    loop_device: Callable[..., str],
    mount_dir: Callable[[str, str], Path],
) -> None:
    outer = loop_device(make_disk(tmp_path / "outer.img"))
    settle(outer)
    outer_mnt = mount_dir(part_node(outer, 1), "outer")
    # An image file on the outer disk's filesystem, with a filesystem of its own.
    inner_image = outer_mnt / "inner.img"
    with inner_image.open("wb") as f:
        f.truncate(4 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(inner_image)], check=True)
    # The inner loop sits on the outer filesystem, so it must be unmounted and
    # detached before the outer one can be unmounted: handled here, in order.
    inner = attach_loop(inner_image)
    inner_mnt = tmp_path / "inner"
    inner_mnt.mkdir()
    mounted = False
    try:
        settle(inner)
        subprocess.run(["mount", inner, str(inner_mnt)], check=True, capture_output=True)
        mounted = True
        archive_file = inner_mnt / "backup.rta"
        archive_file.write_bytes(b"not really an archive")

        probe = SystemProbe()
        assert probe.disk_holding(str(archive_file)) == inner
        chain = probe.disks_holding(str(archive_file))
        assert chain[:2] == [inner, outer]

        disks = [probe.disk(outer), probe.disk(inner)]
        matches = {m.device: m for m in match_disks(backup_like(disks[0]), disks, chain)}
        assert "holds-backup" in codes(matches[outer].blockers)
        assert "holds-backup" in codes(matches[inner].blockers)
        assert f"the whole disk is mounted at {inner_mnt}" in matches[inner].disk.in_use
        assert f"partition 1 is mounted at {outer_mnt}" in matches[outer].disk.in_use
    finally:
        if mounted:
            subprocess.run(["umount", str(inner_mnt)], capture_output=True)
        subprocess.run(["udevadm", "settle", "--timeout=30"], capture_output=True)
        detach_loop(inner)


def backup_like(disk: ProbedDisk) -> ArchiveManifest:
    """A manifest of a backup made from ``disk`` (identity and table only)."""
    assert disk.table is not None
    return ArchiveManifest(
        created=datetime(2024, 1, 1, tzinfo=UTC),
        creator="test",
        source=SourceDisk(identity=disk.identity, device=disk.device),
        table=disk.table,
        boot=BootArea(boot_code="00" * 440, sector0="00" * 512, track0_stop=2048 * 512),
    )


def test_match_picks_the_backed_up_loop_disk_and_refuses_the_archive_disk(
    udev: None,
    tmp_path: Path,
    loop_device: Callable[..., str],
    mount_dir: Callable[[str, str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json
    import random

    from archive.backup import backup
    from restore_tui.cli import main

    signature = f"{random.getrandbits(32) | 1:08x}"
    images = {
        "source": make_disk(tmp_path / "source.img", 48, signature),
        "blank": tmp_path / "blank.img",
        "holder": make_disk(tmp_path / "holder.img", 48),
    }
    with images["blank"].open("wb") as f:
        f.truncate(96 * MiB)
    order = list(images)
    random.shuffle(order)
    devices = {name: loop_device(images[name]) for name in order}
    for device in devices.values():
        settle(device)
    mnt = mount_dir(part_node(devices["holder"], 1), "backups")
    archive = mnt / "laptop.rta"
    backup(devices["source"], archive)

    assert main(["match", str(archive), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    mine = [m for m in listed if m["device"] in devices.values()]
    by_name = {name: next(m for m in mine if m["device"] == dev) for name, dev in devices.items()}
    assert mine[0]["device"] == devices["source"]
    assert mine[0]["strong"] and mine[0]["blockers"] == []
    assert f"same disk signature {signature.upper()} as the backed-up disk" in mine[0]["reasons"]
    assert "holds-backup" in by_name["holder"]["blocker_codes"]
    assert any("partition 1 is mounted at" in b for b in by_name["holder"]["blockers"])
    assert by_name["blank"]["blockers"] == []
    assert [m["device"] for m in mine] == [devices["source"], devices["blank"], devices["holder"]]

    assert main(["match", str(archive)]) == 0
    text = capsys.readouterr().out
    assert f"Chose source.img · 48.0 MiB · loop device ({devices['source']})" in text

"""Backups found on attached disks that are not mounted, looked inside read-only.

One loop disk with three unmounted partitions: ext4 "BACKUP" (needing journal recovery)
holding Backups/x.rtui, NTFS "WINDATA" holding win.rtui, FAT "USBKEY" holding a
Clonezilla folder in /home/partimag. Everything is written into the image file before
it is attached; every test checks that afterwards nothing is mounted and the image has
not changed by a byte (the ext4 still needs recovery: no journal replay).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from clonezilla_fixtures import MISSING_TOOLS, FsSpec, build_disk_and_image
from conftest import needs_loop
from textual.app import App
from textual.widgets import OptionList, Static
from tui_support import cut_widgets

from archive import open_archive
from archive.backup import backup
from layout.probe import ProbedDisk, SystemProbe, disks_holding
from restore_tui import finding, sample
from restore_tui.cli import main
from restore_tui.screens.choose import (
    BackupChosen,
    BrowseScreen,
    ChooseBackupScreen,
    KeepRecordScreen,
)
from restore_tui.screens.common import Step

MiB = 1024 * 1024
TOOLS = ("sfdisk", "mkfs.ext4", "debugfs", "dumpe2fs", "mkfs.ntfs", "ntfscp", "mkfs.vfat",
         "mmd", "mcopy", "ntfs-3g")  # fmt: skip
MISSING = [t for t in TOOLS if shutil.which(t) is None]

pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason=f"missing tools: {MISSING}"),
    needs_loop,
    pytest.mark.root,
]

# (number, start LBA, MiB, type)
LAYOUT = ((1, 2048, 24, "83"), (2, 2048 + 24 * 2048, 16, "7"), (3, 2048 + 40 * 2048, 16, "c"))
DISK_MIB = 60
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def run(*cmd: str | Path, env: dict[str, str] | None = None) -> None:
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True, env=env)


def fat_supported() -> str | None:
    """None when this system can read FAT, else why not."""
    try:
        with open("/proc/filesystems") as f:
            if "vfat" in f.read().split():
                return None
    except OSError:
        pass
    if shutil.which("fusefat"):
        return None
    return "this kernel has no FAT driver and fusefat is not installed"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def clonezilla_folder(work: Path) -> Path:
    """A real Clonezilla image folder when partclone is here, else one with its marker files."""
    work.mkdir()
    if not MISSING_TOOLS:
        _, image = build_disk_and_image(
            work, scheme="dos", disk_name="sda", specs=[FsSpec(1, "ext4", 6, "CZROOT")],
            disk_mib=10,
        )  # fmt: skip
        return image
    image = work / "img"
    image.mkdir()
    (image / "disk").write_text("sda\n")
    (image / "parts").write_text("sda1\n")
    (image / "clonezilla-img").write_text("marker only: partclone is not installed\n")
    return image


class Built:
    def __init__(self, disk: Path, archive: Path, clonezilla: Path) -> None:
        self.disk = disk
        self.archive = archive
        self.clonezilla = clonezilla
        self.hash = sha256_of(disk)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    work = tmp_path_factory.mktemp("find")
    sample_disk = sample.build_windows_mbr(work / "pc.img", 32, garbage=False)
    archive = backup(str(sample_disk.path), work / "x.rtui").path
    cz = clonezilla_folder(work / "cz")

    # ext4 "BACKUP": Backups/x.rtui, then marked as needing journal recovery, as after a
    # power cut: a mount without noload would write the disk.
    tree = work / "tree"
    (tree / "Backups").mkdir(parents=True)
    shutil.copyfile(archive, tree / "Backups" / "x.rtui")
    (tree / "photos").mkdir()
    for i in range(50):
        (tree / "photos" / f"img{i:03}.jpg").write_bytes(b"\xff\xd8" + bytes(100))
    ext = work / "p1.img"
    with ext.open("wb") as f:
        f.truncate(LAYOUT[0][2] * MiB)
    run("mkfs.ext4", "-q", "-F", "-L", "BACKUP", "-d", tree, ext)
    run("debugfs", "-w", "-R", "feature needs_recovery", ext)

    ntfs = work / "p2.img"
    with ntfs.open("wb") as f:
        f.truncate(LAYOUT[1][2] * MiB)
    run("mkfs.ntfs", "-q", "-F", "-f", "-Q", "-L", "WINDATA", ntfs)
    run("ntfscp", "-q", ntfs, archive, "win.rtui")

    fat = work / "p3.img"
    with fat.open("wb") as f:
        f.truncate(LAYOUT[2][2] * MiB)
    run("mkfs.vfat", "-n", "USBKEY", fat)
    run("mmd", "-i", fat, "::home", "::home/partimag", env=MTOOLS_ENV)
    run("mcopy", "-s", "-i", fat, cz, "::home/partimag/2024-05-01-img", env=MTOOLS_ENV)

    disk = work / "finddisk.img"
    with disk.open("wb") as f:
        f.truncate(DISK_MIB * MiB)
    script = "label: dos\nlabel-id: 0x5eedf00d\n" + "".join(
        f"start={start},size={mib * 2048},type={t}\n" for _, start, mib, t in LAYOUT
    )
    subprocess.run(["sfdisk", "-q", str(disk)], input=script, text=True, check=True)
    for (_, start, _, _), image in zip(LAYOUT, (ext, ntfs, fat), strict=True):
        run("dd", f"if={image}", f"of={disk}", "bs=1M", f"seek={start * 512}",
            "oflag=seek_bytes", "conv=notrunc", "status=none")  # fmt: skip
        image.unlink()
    return Built(disk, archive, cz)


def empty_disk(work: Path) -> Path:
    """A disk with one ext4 partition and no backup on it."""
    disk = work / "empty.img"
    with disk.open("wb") as f:
        f.truncate(16 * MiB)
    subprocess.run(["sfdisk", "-q", str(disk)], input="label: dos\nstart=2048,type=83\n",
                   text=True, check=True)  # fmt: skip
    run("mkfs.ext4", "-q", "-F", "-L", "NOTHING", "-E", "offset=1048576", disk, "14M")
    return disk


class OneDisk:
    """The real system probe, narrowed to the disks these tests attached."""

    def __init__(self, *devices: str) -> None:
        self.devices = devices
        self.system = SystemProbe(use_udev=False)

    def disks(self) -> list[ProbedDisk]:
        return [self.system.disk(d) for d in self.devices]

    def disk(self, device: str) -> ProbedDisk:
        return self.system.disk(device)

    def disk_holding(self, path: str) -> str | None:
        return self.system.disk_holding(path)


def part_devnos(device: str) -> set[str]:
    out = set()
    for node in Path("/dev").glob(Path(device).name + "p*"):
        rdev = node.stat().st_rdev
        out.add(f"{os.major(rdev)}:{os.minor(rdev)}")
    return out


def mounted_lines(device: str, runtime: Path) -> list[str]:
    """mountinfo lines for our runtime folder or for any partition of ``device``."""
    devnos = part_devnos(device)
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [
        line for line in lines
        if str(runtime) in line or line.split()[2] in devnos or f" {device}p" in line
    ]  # fmt: skip


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The private mount folder of these tests; whatever is left mounted there is
    unmounted afterwards (and fails the test)."""
    base = tmp_path / "run"
    monkeypatch.setattr(finding, "RUNTIME_BASE", base)
    yield base
    left = finding.live_mounts()
    finding._REGISTRY.close_all()
    assert not left, f"left mounted: {left}"


@pytest.fixture
def attached(built: Built, loop_device: Callable[..., str], runtime: Path) -> Iterator[str]:
    device = loop_device(built.disk)
    assert Path(f"{device}p3").exists(), "partx did not add the partition nodes"
    yield device
    assert mounted_lines(device, runtime) == []
    assert sha256_of(built.disk) == built.hash, "the scan changed the disk"


def by_name(scan: finding.Scan) -> dict[str, finding.FoundBackup]:
    return {b.name: b for b in scan.backups}


def test_find_lists_all_three_with_the_disk_in_words(
    built: Built, attached: str, runtime: Path
) -> None:
    fat_problem = fat_supported()
    scan = finding.find(OneDisk(attached))
    found = by_name(scan)
    disk = f"finddisk.img · {DISK_MIB}.0 MiB · loop device"
    assert scan.disks == (disk,)

    x = found["x.rtui"]
    assert x.text == f'x.rtui — on {disk}, partition 1 "BACKUP", folder Backups'
    assert (x.kind, x.size, x.inner_path) == (
        "restore-tui archive",
        built.archive.stat().st_size,
        "/Backups/x.rtui",
    )
    assert (x.device, x.partition, x.filesystem, x.label) == (f"{attached}p1", 1, "ext4", "BACKUP")
    assert x.mounted_at is None and x.path is None  # unmounted again after the look
    assert x.disk_device == attached

    win = found["win.rtui"]
    assert win.text == f'win.rtui — on {disk}, partition 2 "WINDATA", top folder'
    assert (win.device, win.filesystem) == (f"{attached}p2", "ntfs")

    if fat_problem:
        assert "2024-05-01-img" not in found
        assert any("partition 3" in s for s in scan.skipped), scan.skipped
    else:
        cz = found["2024-05-01-img"]
        assert cz.kind == "Clonezilla image"
        # fusefat shows the short names (HOME), the kernel's vfat the long ones (home).
        assert (
            cz.text.casefold()
            == (
                f'2024-05-01-img — on {disk}, partition 3 "USBKEY", folder home/partimag'
            ).casefold()
        )
        assert cz.size == sum(p.stat().st_size for p in built.clonezilla.iterdir())
    names = ["x.rtui", "win.rtui", *([] if fat_problem else ["2024-05-01-img"])]
    assert [b.name for b in scan.backups] == names  # each once, in partition order
    assert finding.live_mounts() == set()
    # The ext4 was not replayed: it still needs recovery.
    assert not list(runtime.iterdir()), "a mount folder was left behind"


def test_the_ext4_needs_journal_recovery(built: Built) -> None:
    """The test disk really is one that a read-only mount without noload would write to
    (the kernel replays the journal and clears this bit); the other tests check it stays."""
    with open(built.disk, "rb") as f:
        f.seek(LAYOUT[0][1] * 512 + 1024 + 0x60)  # the superblock's s_feature_incompat
        incompat = int.from_bytes(f.read(4), "little")
    assert incompat & 0x4, "EXT4_FEATURE_INCOMPAT_RECOVER should be set"


def test_backups_command_json_and_words(
    built: Built, attached: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backups", "--json", "--no-udev", "--disk", attached]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {row["name"]: row for row in data["backups"]}
    assert rows["x.rtui"]["device"] == f"{attached}p1"
    assert rows["x.rtui"]["partition"] == 1
    assert rows["x.rtui"]["path"] == "/Backups/x.rtui"
    assert rows["x.rtui"]["kind"] == "restore-tui archive"
    assert rows["x.rtui"]["size"] == built.archive.stat().st_size
    assert rows["x.rtui"]["label"] == "BACKUP"
    assert rows["x.rtui"]["disk"] == f"finddisk.img · {DISK_MIB}.0 MiB · loop device"
    assert rows["x.rtui"]["open_path"] is None
    assert rows["win.rtui"]["device"] == f"{attached}p2"
    assert (fat_supported() is None) == ("2024-05-01-img" in rows)
    assert data["looked_inside"] == [f"finddisk.img · {DISK_MIB}.0 MiB · loop device"]

    assert main(["backups", "--no-udev", "--disk", attached]) == 0
    text = capsys.readouterr().out
    disk = "finddisk.img · 60.0 MiB · loop device"
    assert f'on {disk}, partition 1 "BACKUP", folder Backups' in text
    assert f"mount -t ext4 -o ro,noload {attached}p1 /mnt  → /mnt/Backups/x.rtui" in text
    assert "Looked inside 1 disk: finddisk.img" in text


def test_an_excluded_disk_is_never_mounted(
    built: Built, attached: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = finding._mount_read_only

    def spy(device: str, fstype: str, name: str) -> Path:
        calls.append(device)
        return real(device, fstype, name)

    monkeypatch.setattr(finding, "_mount_read_only", spy)
    for exclude in ([attached], [f"{attached}p2"]):
        scan = finding.find(OneDisk(attached), exclude=exclude)
        assert scan.backups == () and scan.disks == ()
    assert calls == []
    scan = finding.find(OneDisk(attached))  # the spy sees mounts when not excluded
    assert f"{attached}p1" in calls and scan.backups


def test_a_mount_that_fails_is_skipped_with_its_reason(
    built: Built, attached: str, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = finding.mount_commands

    def wrong_for_ntfs(device: str, fstype: str, point: str) -> list[list[str]]:
        if fstype == "ntfs":  # as if the NTFS were damaged: the mount fails
            return [["mount", "-t", "ext4", "-o", "ro,noload,nodev,nosuid,noexec", device, point]]
        return real(device, fstype, point)

    monkeypatch.setattr(finding, "mount_commands", wrong_for_ntfs)
    scan = finding.find(OneDisk(attached))
    assert "win.rtui" not in by_name(scan) and "x.rtui" in by_name(scan)
    [reason] = [s for s in scan.skipped if "partition 2" in s]
    assert reason.startswith('finddisk.img · 60.0 MiB · loop device, partition 2 "WINDATA": ')
    assert "could not be mounted read-only" in reason
    assert not list(runtime.iterdir())


def test_opening_a_found_backup_mounts_it_until_cleanup(
    built: Built, attached: str, runtime: Path
) -> None:
    found = by_name(finding.find(OneDisk(attached)))
    for name in ("x.rtui", "win.rtui", "2024-05-01-img"):
        if name not in found:
            continue
        if name == "2024-05-01-img" and MISSING_TOOLS:
            continue  # a marker-only folder does not open
        archive, cleanup = finding.open_found(found[name])
        try:
            assert archive.path.is_relative_to(runtime)
            assert archive.manifest.partitions
            # Readable: the first stored piece of the first partition.
            number = archive.manifest.partitions[0].number
            assert next(iter(archive.pieces(number))).length > 0
            assert os.statvfs(archive.path.parent).f_flag & os.ST_RDONLY
            assert mounted_lines(attached, runtime), "the partition should be mounted now"
            # The flow refuses the disk holding the backup as target: it must be found.
            assert disks_holding(str(archive.path))[:1] == [attached]
        finally:
            cleanup()
        assert mounted_lines(attached, runtime) == []
        cleanup()  # twice is harmless
    with open_archive(built.archive) as original, finding.OpenedBackup(found["x.rtui"]) as o:
        assert o.archive.identity() == original.identity()
        assert o.keeps_mount
    assert finding.live_mounts() == set()


def test_a_backup_that_does_not_open_leaves_nothing_mounted(
    built: Built, attached: str, runtime: Path
) -> None:
    from dataclasses import replace

    from archive.errors import ArchiveError

    x = by_name(finding.find(OneDisk(attached)))["x.rtui"]
    with pytest.raises(ArchiveError):
        finding.open_found(replace(x, inner_path="/Backups"))  # a folder, not a backup
    assert finding.live_mounts() == set()
    assert mounted_lines(attached, runtime) == []


def test_mount_commands_are_read_only_without_replay() -> None:
    for fs in ("ext2", "ext3", "ext4", "ntfs", "vfat", "exfat", "xfs", "btrfs"):
        for argv in finding.mount_commands("/dev/sdz1", fs, "/x"):
            options = argv[argv.index("-o") + 1].split(",")
            assert options[0] == "ro" and "rw" not in options
            assert {"nodev", "nosuid", "noexec"} <= set(options)
    [ext] = finding.mount_commands("/dev/sdz1", "ext4", "/x")
    assert "noload" in ext[ext.index("-o") + 1]
    with pytest.raises(finding.FindError, match="BitLocker"):
        finding.mount_commands("/dev/sdz1", "BitLocker", "/x")


# ---------------------------------------------------------------- the wizard's step 1


class ChooseApp(App[None]):
    def __init__(self, screen: ChooseBackupScreen) -> None:
        super().__init__()
        self.choose = screen
        self.result: object = None

    def on_mount(self) -> None:
        def done(result: object) -> None:
            self.result = result

        self.push_screen(self.choose, done)


async def wait_for(pilot, check, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(1500):
        if check():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.asyncio
async def test_step_one_lists_a_backup_on_an_unmounted_partition_and_opens_it(
    built: Built, attached: str, runtime: Path
) -> None:
    screen = ChooseBackupScreen(
        Step(1, 8, "Choose the backup"), roots=lambda: [], probe=OneDisk(attached)
    )
    app = ChooseApp(screen)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: bool(screen.found), "the scan")
        options = screen.query_one("#found", OptionList)
        first = str(options.get_option_at_index(0).prompt)
        assert first.startswith("x.rtui  ·  restore-tui archive")
        assert first.splitlines()[1:] == [
            "   on finddisk.img · 60.0 MiB · loop device",
            '   partition 1 "BACKUP", folder Backups',
        ]
        assert mounted_lines(attached, runtime) == []  # the look is over: unmounted
        # Opened read-only, the restore's record cannot go beside it: he is told so.
        note = screen.query_one("#read-only", Static)
        assert note.display and "starts again from the beginning" in str(note.render())
        await pilot.press("enter")
        # Asked whether the record may go beside the backup; Esc keeps it read-only.
        await wait_for(pilot, lambda: isinstance(app.screen, KeepRecordScreen), "the question")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.result is not None, "the backup to open")
    chosen = app.result
    assert isinstance(chosen, BackupChosen)
    try:
        assert chosen.archive.path.name == "x.rtui"
        assert chosen.cleanup is not None
        assert mounted_lines(attached, runtime), "kept mounted while the archive is in use"
        assert chosen.archive.manifest.partitions
    finally:
        if chosen.cleanup is not None:
            chosen.cleanup()
    assert mounted_lines(attached, runtime) == []


@pytest.mark.asyncio
async def test_the_record_can_be_kept_beside_a_backup_on_an_unmounted_disk(
    built: Built, loop_device: Callable[..., str], runtime: Path, tmp_path: Path
) -> None:
    """Asked on step 1, he lets the record go beside the backup: its disk is opened for
    writing (so the record survives a restart of rescue media), and unmounted after.
    (Mounting for writing replays the ext4 journal: this test has its own copy.)"""
    copy = tmp_path / built.disk.name
    shutil.copyfile(built.disk, copy)
    attached = loop_device(copy)
    screen = ChooseBackupScreen(
        Step(1, 8, "Choose the backup"), roots=lambda: [], probe=OneDisk(attached)
    )
    app = ChooseApp(screen)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: bool(screen.found), "the scan")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, KeepRecordScreen), "the question")
        assert not cut_widgets(app.screen), cut_widgets(app.screen)
        await pilot.press("enter")  # "Keep the record beside it" has the focus
        await wait_for(pilot, lambda: app.result is not None, "the backup to open")
    chosen = app.result
    assert isinstance(chosen, BackupChosen) and chosen.cleanup is not None
    try:
        folder = chosen.archive.path.parent
        assert not os.statvfs(folder).f_flag & os.ST_RDONLY and os.access(folder, os.W_OK)
    finally:
        chosen.cleanup()
    assert mounted_lines(attached, runtime) == []


@pytest.mark.asyncio
async def test_ctrl_o_browses_the_backup_disk_not_the_root(
    built: Built, attached: str, runtime: Path
) -> None:
    screen = ChooseBackupScreen(
        Step(1, 8, "Choose the backup"), roots=lambda: [], probe=OneDisk(attached)
    )
    app = ChooseApp(screen)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: bool(screen.found), "the scan")
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, BrowseScreen), "the browser")
        browser = app.screen
        assert isinstance(browser, BrowseScreen)
        await wait_for(pilot, lambda: browser.root is not None, "the disk to be mounted")
        assert browser.root is not None and browser.root.is_relative_to(runtime)
        assert (browser.root / "Backups" / "x.rtui").is_file()
        title = str(browser.query_one("#browse-title", Static).render())
        assert len(title) <= 64, title  # fits the box at 80 columns
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen, "back on step 1")
        await wait_for(
            pilot, lambda: not mounted_lines(attached, runtime), "the browsed disk to unmount"
        )


@pytest.mark.asyncio
async def test_none_found_names_the_disks_looked_inside(
    tmp_path: Path, loop_device: Callable[..., str], runtime: Path
) -> None:
    device = loop_device(empty_disk(tmp_path))
    screen = ChooseBackupScreen(
        Step(1, 8, "Choose the backup"), roots=lambda: [], probe=OneDisk(device)
    )
    app = ChooseApp(screen)
    async with app.run_test(size=(80, 24)) as pilot:
        status = screen.query_one("#scan-status", Static)
        await wait_for(pilot, lambda: "Looked inside" in str(status.render()), "the scan")
        text = str(status.render())
    assert text.startswith(
        "Looked inside 1 disk (empty.img · 16.0 MiB · loop device); no backup found."
    )
    assert "Plug in the disk that holds the backup" in text
    assert mounted_lines(device, runtime) == []


def test_folder_roots_still_work_without_disks(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    (folder / "deeper").mkdir(parents=True)
    (folder / "a.rtui").write_bytes(b"RTUI-ARC" + bytes(10))
    (folder / "deeper" / "b.rtui").write_bytes(b"RTUI-ARC")
    (folder / "not.rtui").write_bytes(b"nope")
    scan = finding.find(None, roots=[folder])
    assert [b.path for b in scan.backups] == [folder / "a.rtui", folder / "deeper" / "b.rtui"]
    # A writable folder keeps the record beside the backup.
    assert all(finding.keeps_record_beside(b) for b in scan.backups)
    assert scan.backups[0].where == f"in {folder}"
    assert finding.nothing_found_text(finding.Scan(folders=(str(folder),))).startswith(
        f"No backup found in {folder}."
    )


def test_a_big_folder_neither_stalls_the_scan_nor_hides_its_neighbours(tmp_path: Path) -> None:
    photos = tmp_path / "a-photos"
    photos.mkdir()
    for i in range(3000):
        (photos / f"{i:05}.jpg").touch()
    (tmp_path / "b" / "c").mkdir(parents=True)
    (tmp_path / "b" / "c" / "deep.rtui").write_bytes(b"RTUI-ARC")
    (tmp_path / "top.rtui").write_bytes(b"RTUI-ARC")
    budget = finding._Budget(1000)
    found = finding._backups_below(tmp_path, depth=2, budget=budget, same_fs=True)
    assert [p.name for p, _, _ in found] == ["deep.rtui", "top.rtui"]
    assert budget.entries > 1000 - 300  # a quarter of it for the big folder, at most

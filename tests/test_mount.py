"""`restore-tui mount`, `umount` and `files` on real filesystems, through the real drivers.

A disk with NTFS (Unicode names, spaces, empty files, folders), ext4 (symlinks,
hard links, a sparse file), FAT32 and a partition of unknown contents is built
from folders, backed up with `restore-tui backup`, and mounted: every file's
type, size and SHA-256 must equal the folder it was made from; writing fails
read-only; umount leaves no mount, loop device or process behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import LOOP_SKIP_REASON

from archive.native import NativeArchive
from restore_tui.cli import main
from restore_tui.mounting import RUNTIME_BASE, MountState, alive, find_state

MIB = 1024 * 1024
TOOLS = ("mkntfs", "ntfs-3g", "mkfs.ext4", "mkfs.vfat", "mcopy", "fusefat", "sfdisk", "blkid")
MISSING = [t for t in TOOLS if shutil.which(t) is None]


def _fuse_reason() -> str | None:
    if LOOP_SKIP_REASON:
        return LOOP_SKIP_REASON
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse on this machine"
    if MISSING:
        return f"missing tools: {MISSING}"
    try:
        import pyfuse3  # noqa: F401
    except ImportError:
        return "pyfuse3 is not installed"
    return None


FUSE_SKIP = _fuse_reason()
pytestmark = [pytest.mark.skipif(FUSE_SKIP is not None, reason=FUSE_SKIP or ""), pytest.mark.root]

# ----------------------------------------------------------------------------- the disk

NTFS, EXT4, FAT, RAW = 1, 2, 3, 4


def run(*cmd: str | Path) -> None:
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True)


def ntfs_tree(root: Path, rng: random.Random) -> None:
    (root / "Users/Mike/Documents").mkdir(parents=True)
    (root / "Users/Mike/Documents/Résumé 2012 – final.docx").write_bytes(rng.randbytes(70_000))
    (root / "Users/Mike/Documents/日本語 メモ.txt").write_text("こんにちは\n")
    (root / "Users/Mike/empty file.txt").write_bytes(b"")
    (root / "Program Files").mkdir()
    (root / "Program Files/big.bin").write_bytes(rng.randbytes(3 * MIB + 77))
    (root / "pagefile.sys").write_bytes(bytes(300_000))


def ext4_tree(root: Path, rng: random.Random) -> None:
    (root / "etc").mkdir()
    (root / "etc/hostname").write_text("oldpc\n")
    (root / "home/mike").mkdir(parents=True)
    (root / "home/mike/song.ogg").write_bytes(rng.randbytes(400_000))
    (root / "home/mike/empty").write_bytes(b"")
    os.link(root / "home/mike/song.ogg", root / "home/mike/same song.ogg")
    os.symlink("song.ogg", root / "home/mike/link to song")
    os.symlink("/etc/passwd", root / "home/mike/absolute link")
    with open(root / "home/mike/sparse.img", "wb") as f:
        f.seek(6 * MIB)
        f.write(b"the end")
    (root / "big.bin").write_bytes(rng.randbytes(12 * MIB))


def fat_tree(root: Path, rng: random.Random) -> None:
    (root / "Photos/Holiday 2011").mkdir(parents=True)
    (root / "Photos/Holiday 2011/Beach Day.jpg").write_bytes(rng.randbytes(250_000))
    (root / "Notes about Ünïcode.txt").write_text("FAT32 with long names\n")
    (root / "Empty Document.txt").write_bytes(b"")


def make_fs(kind: int, image: Path, tree: Path, work: Path) -> None:
    if kind == NTFS:
        run("mkntfs", "-q", "-F", "-f", "-L", "Windows", image)
        point = work / "ntfs-rw"
        point.mkdir()
        run("ntfs-3g", image, point)  # read-write, only to fill the source
        try:
            for entry in tree.iterdir():
                subprocess.run(["cp", "-a", str(entry), str(point)], check=True)
        finally:
            run("umount", point)
    elif kind == EXT4:
        run("mkfs.ext4", "-q", "-F", "-L", "linux", "-d", tree, image)
    elif kind == FAT:
        run("mkfs.vfat", "-F", "32", "-s", "1", image)
        entries = sorted(tree.iterdir())
        env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
        subprocess.run(
            ["mcopy", "-s", "-m", "-i", str(image), *map(str, entries), "::/"],
            check=True, capture_output=True, env=env,
        )  # fmt: skip
    else:
        image.write_bytes(random.Random(4).randbytes(image.stat().st_size))


SPECS = {  # number: (MiB, MBR type, tree builder)
    NTFS: (24, "7", ntfs_tree),
    EXT4: (28, "83", ext4_tree),
    FAT: (40, "c", fat_tree),
    RAW: (2, "da", None),
}


def build_disk(work: Path) -> tuple[Path, dict[int, Path]]:
    """The source disk image and, per partition, the folder its files came from."""
    rng = random.Random(13)
    disk = work / "disk.img"
    with disk.open("wb") as f:
        f.truncate((2 + sum(s[0] for s in SPECS.values())) * MIB)
    lines, trees, lba = ["label: dos", "label-id: 0x5eed1e55"], {}, 2048
    for number, (mib, ptype, fill) in SPECS.items():
        lines.append(f"{number} : start={lba}, size={mib * 2048}, type={ptype}")
        fs_image = work / f"fs{number}.img"
        with fs_image.open("wb") as f:
            f.truncate(mib * MIB)
        tree = work / f"tree{number}"
        tree.mkdir()
        if fill is not None:
            fill(tree, rng)
        make_fs(number, fs_image, tree, work)
        with fs_image.open("rb") as src, disk.open("r+b") as dst:
            dst.seek(lba * 512)
            shutil.copyfileobj(src, dst)
        fs_image.unlink()
        trees[number] = tree
        lba += mib * 2048
    subprocess.run(
        ["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(disk)],
        input="\n".join(lines) + "\n", text=True, check=True, capture_output=True,
    )  # fmt: skip
    return disk, trees


def listing(root: Path, *, fold_case: bool = False) -> dict[str, tuple[str, int, str]]:
    """path -> (type, size, SHA-256 or link target) of everything under ``root``."""
    out: dict[str, tuple[str, int, str]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "lost+found" or folder != str(root)]
        for name in dirs + files:
            path = Path(folder, name)
            rel = path.relative_to(root).as_posix()
            rel = rel.casefold() if fold_case else rel
            st = path.lstat()
            if path.is_symlink():
                out[rel] = ("link", 0, os.readlink(path))
            elif path.is_dir():
                out[rel] = ("folder", 0, "")
            else:
                out[rel] = ("file", st.st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


@pytest.fixture(scope="module")
def backup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[int, Path]]:
    work = tmp_path_factory.mktemp("mount")
    disk, trees = build_disk(work)
    archive = work / "disk.rtui"
    assert main(["backup", str(disk), str(archive)]) == 0
    return disk, archive, trees


# ----------------------------------------------------------------------------- leftovers


def loops_on(runtime: str) -> list[str]:
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if backing.read_text().strip().startswith(runtime):
                found.append(backing.parent.parent.name)
        except OSError:
            pass
    return found


def mounts_under(*paths: str) -> list[str]:
    text = Path("/proc/self/mountinfo").read_text()
    points = [line.split()[4].replace("\\040", " ") for line in text.splitlines()]
    return [p for p in points if any(p == x or p.startswith(x.rstrip("/") + "/") for x in paths)]


def assert_nothing_left(state: MountState) -> None:
    assert not mounts_under(state.mountpoint, state.runtime)
    assert not loops_on(state.runtime)
    helpers = [p.helper for p in state.partitions if p.helper is not None]
    assert state.server is not None
    assert not [p.pid for p in [state.server, *helpers] if alive(p)]
    assert not Path(state.runtime).exists()


@pytest.fixture
def mounted(backup: tuple[Path, Path, dict[int, Path]], tmp_path: Path) -> Iterator[MountState]:
    _, archive, _ = backup
    point = tmp_path / "look"
    point.mkdir()
    assert main(["mount", str(archive), str(point)]) == 0
    state = find_state(point)
    assert state is not None
    try:
        yield state
    finally:
        if find_state(point) is not None:
            main(["umount", str(point)])


# ----------------------------------------------------------------------------- tests


def folders(state: MountState) -> dict[int, Path]:
    return {p.number: Path(p.folder) for p in state.partitions}


def test_every_file_of_every_filesystem_equals_the_source(
    backup: tuple[Path, Path, dict[int, Path]], mounted: MountState
) -> None:
    disk, _, trees = backup
    where = folders(mounted)
    assert sorted(p.name for p in Path(mounted.mountpoint).iterdir()) == [
        "1-Windows", "2-linux", "3-data", "4-data",
    ]  # fmt: skip
    assert listing(where[NTFS]) == listing(trees[NTFS])
    assert listing(where[EXT4]) == listing(trees[EXT4])
    # fusefat shows short names in capitals where Windows would set the lower-case flag.
    assert listing(where[FAT], fold_case=True) == listing(trees[FAT], fold_case=True)
    # Hard links stay one file, the sparse file stays sparse.
    song = where[EXT4] / "home/mike/song.ogg"
    assert song.stat().st_ino == (where[EXT4] / "home/mike/same song.ogg").stat().st_ino
    assert (where[EXT4] / "home/mike/sparse.img").stat().st_blocks * 512 < MIB
    # Unknown contents: the whole partition as one file, byte for byte.
    (raw,) = [p for p in mounted.partitions if p.number == RAW]
    assert raw.how == "image"
    image = where[RAW] / "partition.img"
    start = (1 + 24 + 28 + 40) * MIB  # after the three filesystems
    with disk.open("rb") as f:
        f.seek(start)
        assert image.read_bytes() == f.read(2 * MIB)


def test_nothing_can_be_written(mounted: MountState) -> None:
    where = folders(mounted)
    for number, folder in where.items():
        target = folder / "new.txt"
        with pytest.raises(OSError) as caught:
            target.write_text("x")
        assert caught.value.errno == errno.EROFS, f"partition {number}"
    with pytest.raises(OSError) as caught:
        (where[RAW] / "partition.img").open("r+b")
    assert caught.value.errno == errno.EROFS
    with pytest.raises(OSError) as caught:
        (where[EXT4] / "etc/hostname").unlink()
    assert caught.value.errno == errno.EROFS
    for p in mounted.partitions:
        options = mount_options(p.folder)
        assert {"ro", "nodev", "nosuid", "noexec"} <= options, (p.number, options)


def mount_options(point: str) -> set[str]:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4].replace("\\040", " ") == point:
            return set(fields[5].split(","))
    raise AssertionError(f"{point} is not mounted")


def test_umount_leaves_nothing_behind(mounted: MountState, tmp_path: Path) -> None:
    recorded = [(p.number, Path(p.loop).name) for p in mounted.partitions if p.loop]
    assert recorded == [(EXT4, name) for name in loops_on(mounted.runtime)]
    assert [p.number for p in mounted.partitions if p.helper] == [NTFS, FAT]
    assert main(["umount", mounted.mountpoint]) == 0
    assert_nothing_left(mounted)
    assert list(Path(mounted.mountpoint).iterdir()) == []  # the folder is as it was: empty
    assert main(["umount", mounted.mountpoint]) == 1  # nothing there any more


def test_a_busy_folder_is_named_and_nothing_is_forced(
    mounted: MountState, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = folders(mounted)[EXT4]
    with open(folder / "etc/hostname") as held:
        capsys.readouterr()
        assert main(["umount", mounted.mountpoint]) == 1
        assert "still in use" in capsys.readouterr().err
        assert held.read() == "oldpc\n"
    assert main(["umount", mounted.mountpoint]) == 0
    assert not mounts_under(mounted.mountpoint, mounted.runtime)


def test_foreground_mount_cleans_up_on_ctrl_c(
    backup: tuple[Path, Path, dict[int, Path]], tmp_path: Path
) -> None:
    _, archive, trees = backup
    point = tmp_path / "fg"
    # The command runs as from a terminal, where Ctrl+C is not ignored, even when the
    # suite itself was started with SIGINT ignored (a background job of a script): a
    # handled signal is SIG_DFL again in the child, an ignored one would stay ignored.
    old_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "restore_tui", "mount", str(archive), str(point),
             "--foreground"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, old_handler)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "Press Ctrl+C" in line:
                break
        state = find_state(point)
        assert state is not None
        assert listing(folders(state)[EXT4]) == listing(trees[EXT4])
        proc.send_signal(signal.SIGINT)  # what Ctrl+C sends to the foreground command
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            main(["umount", str(point)])
    assert proc.returncode == 0, err
    assert "Unmounted" in out
    assert_nothing_left(state)


def test_files_lists_and_extracts_without_leaving_a_mount(
    backup: tuple[Path, Path, dict[int, Path]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, archive, trees = backup
    looks = str(RUNTIME_BASE / "looks")
    capsys.readouterr()
    assert main(["files", str(archive), "Users\\Mike", "--partition", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {e["name"]: (e["type"], e["size"]) for e in out["entries"]}
    assert rows == {"Documents": ("folder", 0), "empty file.txt": ("file", 0)}
    assert out["path"] == "Users/Mike"

    assert main(["files", str(archive), "2/home/mike", "--json"]) == 0
    rows = {e["name"]: e for e in json.loads(capsys.readouterr().out)["entries"]}
    assert rows["link to song"]["type"] == "link" and rows["link to song"]["target"] == "song.ogg"
    assert rows["song.ogg"]["size"] == 400_000

    dest = tmp_path / "out"
    dest.mkdir()
    assert main(["files", str(archive), "--partition", "1", "--extract", "Users", str(dest)]) == 0
    assert listing(dest / "Users") == listing(trees[NTFS] / "Users")
    assert main(["files", str(archive), "--extract", "2-linux/home", str(dest)]) == 0
    assert listing(dest / "home") == listing(trees[EXT4] / "home")  # links copied as links
    assert (dest / "home/mike/sparse.img").stat().st_blocks * 512 < MIB
    # Never over an existing file.
    capsys.readouterr()
    assert main(["files", str(archive), "--extract", "2/home", str(dest)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert not mounts_under(looks) and not loops_on(looks)
    assert not [p for p in Path(looks).iterdir()] if Path(looks).exists() else True


def test_a_damaged_chunk_fails_that_file_only_with_a_clear_message(
    backup: tuple[Path, Path, dict[int, Path]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    disk, archive, trees = backup
    big = (trees[EXT4] / "big.bin").read_bytes()
    source = disk.read_bytes()
    with NativeArchive(archive) as arc:
        # A chunk that holds only bytes of big.bin (random bytes: found nowhere else).
        chunk = next(
            c for c in arc.manifest.image(EXT4).chunks
            if c.kind == "data" and c.length > 64 * 1024 and source[c.offset : c.stop] in big
        )  # fmt: skip
    assert chunk.frame_offset is not None and chunk.frame_length is not None
    damaged = tmp_path / "damaged.rtui"
    raw = bytearray(archive.read_bytes())
    raw[chunk.frame_offset + chunk.frame_length // 2] ^= 0x01
    damaged.write_bytes(bytes(raw))

    point = tmp_path / "look"
    assert main(["mount", str(damaged), str(point), "--partition", "2"]) == 0
    state = find_state(point)
    assert state is not None
    try:
        folder = folders(state)[EXT4]
        with pytest.raises(OSError) as caught:
            (folder / "big.bin").read_bytes()
        assert caught.value.errno == errno.EIO
        song = (folder / "home/mike/song.ogg").read_bytes()
        assert song == (trees[EXT4] / "home/mike/song.ogg").read_bytes()
        stats = json.loads((state.images / "stats.json").read_text())
        assert stats["damage"][0]["partition"] == EXT4
        assert stats["damage"][0]["offset"] == chunk.offset
        assert f"partition 2, byte offset {chunk.offset}" in stats["damage"][0]["message"]
        capsys.readouterr()
        assert main(["umount", str(point)]) == 0
        assert f"byte offset {chunk.offset}" in capsys.readouterr().err
    finally:
        if find_state(point) is not None:
            main(["umount", str(point)])
    assert_nothing_left(state)

    dest = tmp_path / "out"
    dest.mkdir()
    capsys.readouterr()
    assert main(["files", str(damaged), "--extract", "2/big.bin", str(dest)]) == 1
    err = capsys.readouterr().err
    assert "big.bin" in err and f"partition 2, byte offset {chunk.offset}" in err
    assert list(dest.iterdir()) == []  # nothing half-copied
    assert main(["files", str(damaged), "--extract", "2/etc/hostname", str(dest)]) == 0
    assert (dest / "hostname").read_text() == "oldpc\n"


# ----------------------------------------------------------------------------- a large one


def vm_hwm(pid: int) -> int:
    """Peak resident memory of a process, bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_a_file_near_the_end_of_a_4_gib_backup_reads_only_its_chunks(
    tmp_path: Path, loop_device: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    """64 MiB of data at the start, 8 MiB near the end of a 4 GiB disk, zeros between."""
    disk = tmp_path / "big.img"
    with disk.open("wb") as f:
        f.truncate(4 * 1024 * MIB)
    subprocess.run(
        ["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(disk)],
        input="label: dos\nstart=2048, type=83\n", text=True, check=True, capture_output=True,
    )  # fmt: skip
    device = loop_device(disk)
    part = f"{device}p1"
    run("mkfs.ext4", "-q", "-F", "-L", "big", part)
    rng = random.Random(21)
    late = rng.randbytes(8 * MIB)
    point = tmp_path / "rw"
    point.mkdir()
    run("mount", "-o", "noinit_itable", part, point)  # the source only, read-write
    try:
        (point / "early.bin").write_bytes(rng.randbytes(64 * MIB))
        st = os.statvfs(point)
        # Reserve (without writing) all but 32 MiB, so late.bin lands near the end.
        run("fallocate", "-l", str(st.f_bavail * st.f_frsize - 32 * MIB), point / "filler")
        (point / "late.bin").write_bytes(late)
        (point / "filler").unlink()
    finally:
        run("umount", point)
    bmap = subprocess.run(
        ["debugfs", "-R", "bmap /late.bin 0", part], capture_output=True, text=True, check=True
    )
    assert int(bmap.stdout.split()[0]) * 4096 > 3 * 1024 * MIB
    archive = tmp_path / "big.rtui"
    assert main(["backup", str(disk), str(archive)]) == 0

    look = tmp_path / "look"
    assert main(["mount", str(archive), str(look), "--partition", "1"]) == 0
    state = find_state(look)
    assert state is not None and state.server is not None
    try:
        before = json.loads((state.images / "stats.json").read_text())["partitions"]["1"]
        data = (look / "1-big/late.bin").read_bytes()
        after = json.loads((state.images / "stats.json").read_text())["partitions"]["1"]
        peak = vm_hwm(state.server.pid)
    finally:
        main(["umount", str(look)])
    assert data == late
    read_chunks = after["decompressed_chunks"] - before["decompressed_chunks"]
    with capsys.disabled():
        print(
            f"\n4 GiB backup: {after['data_chunks']} data chunks; mount decompressed "
            f"{before['decompressed_chunks']}, reading late.bin (8 MiB) {read_chunks}; "
            f"server peak RSS {peak / MIB:.1f} MiB"
        )
    # late.bin is two 4 MiB chunks (three when it straddles), plus its inode and folder.
    assert read_chunks <= 5
    # early.bin's 16 chunks were never decompressed: nothing before the wanted offset was.
    assert after["decompressed_chunks"] < 16 < after["data_chunks"]
    assert peak < 128 * MIB

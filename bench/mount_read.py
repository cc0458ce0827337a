"""Reading a large file from a mounted backup, against reading it from the source disk.

    sudo .venv/bin/python bench/mount_read.py [--size-mib 256] [--workdir DIR]

Builds an ext4 disk image holding one file of random bytes, backs it up, then
reads the file (1) from the source disk mounted read-only on a loop device and
(2) from `restore-tui mount` of the backup, both cold (the source image's page
cache dropped with fadvise; the backup's mount is new). Prints both times and
their ratio, measured in the same run; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from restore_tui.cli import main  # noqa: E402
from restore_tui.mounting import find_state  # noqa: E402

MIB = 1024 * 1024


def sh(*cmd: str | Path) -> str:
    return subprocess.run(
        [str(c) for c in cmd], check=True, capture_output=True, text=True
    ).stdout.strip()


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed_read(path: Path) -> float:
    start = time.perf_counter()
    with path.open("rb") as f:
        while f.read(4 * MIB):
            pass
    return time.perf_counter() - start


def build(work: Path, size_mib: int) -> Path:
    tree = work / "tree"
    tree.mkdir()
    rng = random.Random(5)
    with (tree / "big.bin").open("wb") as f:
        for _ in range(size_mib):
            f.write(rng.randbytes(MIB))
    fs = work / "fs.img"
    with fs.open("wb") as f:
        f.truncate((size_mib + 64) * MIB)
    sh("mkfs.ext4", "-q", "-F", "-L", "bench", "-d", tree, fs)
    disk = work / "disk.img"
    with disk.open("wb") as f:
        f.truncate((size_mib + 66) * MIB)
    subprocess.run(["sfdisk", "-q", str(disk)], input="start=2048, type=83\n", text=True,
                   check=True, capture_output=True)  # fmt: skip
    sh("dd", f"if={fs}", f"of={disk}", "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none")
    fs.unlink()
    return disk


def source_time(work: Path, disk: Path) -> float:
    point = work / "src"
    point.mkdir()
    loop = sh("losetup", "-f", "--show", "-r", "-o", str(MIB), disk)
    try:
        drop_cache(disk)
        sh("mount", "-t", "ext4", "-o", "ro,noload", loop, point)
        try:
            return timed_read(point / "big.bin")
        finally:
            sh("umount", point)
    finally:
        sh("losetup", "-d", loop)


def backup_time(work: Path, disk: Path) -> tuple[float, int]:
    archive = work / "disk.rtui"
    assert main(["backup", str(disk), str(archive)]) == 0
    drop_cache(archive)
    point = work / "look"
    assert main(["mount", str(archive), str(point), "--partition", "1"]) == 0
    try:
        seconds = timed_read(point / "1-bench" / "big.bin")
        state = find_state(point)
        assert state is not None and state.server is not None
        status = Path(f"/proc/{state.server.pid}/status").read_text()
        hwm = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmHWM"))
        return seconds, hwm * 1024
    finally:
        main(["umount", str(point)])


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("error: needs root (loop devices, mounts); run it with sudo", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        disk = build(work, args.size_mib)
        source = source_time(work, disk)
        mounted, peak = backup_time(work, disk)
    size = args.size_mib * MIB
    print(f"source disk (ext4 on a loop device): {source:.2f} s, {size / source / MIB:.0f} MiB/s")
    print(f"mounted backup (restore-tui mount):  {mounted:.2f} s, {size / mounted / MIB:.0f} MiB/s")
    print(f"server peak RSS: {peak / MIB:.1f} MiB")
    print(f"ratio mount-read/source-read = {mounted / source:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(run())

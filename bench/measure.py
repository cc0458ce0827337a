"""Run one contender (a command or a pipeline of commands) and measure it fairly.

Wall time includes flushing the target to the medium; CPU time and peak RSS come
from ``wait4`` of each child process, so the benchmark's own memory never counts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

MIB = 1024 * 1024
Command = Sequence[str | os.PathLike[str]]


class BenchError(RuntimeError):
    """A contender failed; the message carries its stderr."""


@dataclass
class Result:
    """What one contender cost: wall seconds, CPU seconds, per-process peak RSS."""

    name: str
    wall_s: float = 0.0
    cpu_s: float = 0.0
    rss: list[tuple[str, int]] = field(default_factory=list)  # (program, peak bytes)

    @property
    def peak_rss(self) -> int:
        """The largest single process (what one program of the contender needed)."""
        return max((b for _, b in self.rss), default=0)

    @property
    def pipeline_rss(self) -> int:
        """All processes of one pipeline together (they run at the same time)."""
        return sum(b for _, b in self.rss)

    def add(self, other: Result) -> None:
        self.wall_s += other.wall_s
        self.cpu_s += other.cpu_s
        self.rss += other.rss


def is_root() -> bool:
    return os.geteuid() == 0


def drop_caches() -> bool:
    """Flush dirty data and drop the page cache (root only); True when it was dropped."""
    os.sync()
    if not is_root():
        return False
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def flush_target(path: str | os.PathLike[str]) -> None:
    """fsync a target file or device, so every contender's time ends with data on the medium."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# A child forked from this (large) Python process inherits its peak RSS in the
# kernel's accounting (Linux keeps the pre-exec high-water mark), so wait4 alone
# would report every tool as at least as large as the benchmark itself. GNU time
# forks from its own tiny process and reports the command's true peak (%M, KiB).
GNU_TIME = shutil.which("time", path="/usr/bin:/bin")


def _reap(proc: subprocess.Popen[bytes], rss_file: Path | None) -> tuple[int, float, int]:
    """(exit code, cpu seconds, peak RSS bytes) of one child, from wait4 (and GNU time)."""
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    rss = usage.ru_maxrss * 1024  # ru_maxrss is KiB on Linux; an upper bound here
    if rss_file is not None:
        lines = rss_file.read_text().split()
        if lines and lines[-1].isdigit():
            rss = int(lines[-1]) * 1024
    return proc.returncode, cpu, rss


def run(
    name: str,
    commands: Sequence[Command],
    *,
    stdin: Path | None = None,
    stdout: Path | None = None,
    flush: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
) -> Result:
    """Run ``commands`` as one pipeline (``a | b | c``) and measure it.

    ``flush``: the target to fsync before the clock stops.
    """
    result = Result(name)
    procs: list[subprocess.Popen[bytes]] = []
    errors: list[tuple[str, Path]] = []
    rss_files: list[Path | None] = []
    with contextlib.ExitStack() as stack:
        fin = stack.enter_context(open(stdin, "rb")) if stdin else subprocess.DEVNULL
        fout = stack.enter_context(open(stdout, "wb")) if stdout else subprocess.DEVNULL
        start = time.perf_counter()
        prev: int | IO[bytes] | None = fin
        for i, cmd in enumerate(commands):
            err_path = Path(tempfile.mkstemp(prefix="bench-err-")[1])
            err = stack.enter_context(open(err_path, "wb"))
            last = i == len(commands) - 1
            argv = [str(c) for c in cmd]
            rss_file: Path | None = None
            if GNU_TIME is not None:
                rss_file = Path(tempfile.mkstemp(prefix="bench-rss-")[1])
                argv = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *argv]
            proc = subprocess.Popen(
                argv,
                stdin=prev,
                stdout=fout if last else subprocess.PIPE,
                stderr=err,
                env={**os.environ, **(env or {})},
            )
            if i > 0 and procs[-1].stdout is not None:
                procs[-1].stdout.close()  # only the next process holds the pipe now
            procs.append(proc)
            errors.append((Path(str(cmd[0])).name, err_path))
            rss_files.append(rss_file)
            prev = proc.stdout
        failed: list[str] = []
        for proc, (program, err_path), rss_file in zip(procs, errors, rss_files, strict=True):
            code, cpu, rss = _reap(proc, rss_file)
            result.cpu_s += cpu
            result.rss.append((program, rss))
            if code != 0:
                text = err_path.read_text(errors="replace").strip()[-2000:]
                failed.append(f"{program} exited {code}: {text}")
        if flush is not None and not failed:
            flush_target(flush)
        result.wall_s = time.perf_counter() - start
    for _, err_path in errors:
        err_path.unlink(missing_ok=True)
    for rss_file in rss_files:
        if rss_file is not None:
            rss_file.unlink(missing_ok=True)
    if failed:
        raise BenchError(f"{name}: " + "; ".join(failed))
    return result


def restore_journals(archive: str | os.PathLike[str]) -> list[Path]:
    """The progress records a restore keeps beside ``archive`` (one run's, to remove
    after it: the next run must start a restore, not resume one)."""
    path = Path(archive)
    return sorted(path.parent.glob(path.name + ".restore-journal*"))


def fresh_file(path: Path, size: int) -> Path:
    """A new sparse file of ``size`` bytes: every contender starts from the same empty target."""
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def _losetup(*args: str) -> str:
    return _checked(["losetup", *args])


@contextlib.contextmanager
def loop_device(
    image: Path,
    *,
    offset: int = 0,
    size: int | None = None,
    read_only: bool = False,
    direct_io: bool = False,
) -> Iterator[str]:
    """Attach ``image`` (or a byte range of it) to a loop device; detached on exit.

    ``direct_io``: the device reads and writes its file by direct I/O, past the page
    cache, as a disk would; BenchError where the file's filesystem cannot."""
    args = ["-f", "--show"]
    if read_only:
        args.append("-r")
    if direct_io:
        args.append("--direct-io=on")
    if offset:
        args += ["-o", str(offset)]
    if size is not None:
        args += ["--sizelimit", str(size)]
    device = _losetup(*args, str(image))
    try:
        dio = Path(f"/sys/block/{Path(device).name}/loop/dio")
        if direct_io and dio.read_text().strip() != "1":
            raise BenchError(f"{device} over {image} does not do direct I/O (its filesystem?)")
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


@contextlib.contextmanager
def ram_disk(mount_point: Path, size: int) -> Iterator[Path]:
    """A second disk for the backups, as the rescue-stick user's USB disk is one: ext4 on a
    loop device over a sparse file in RAM (``/dev/shm``), mounted at ``mount_point``.

    Its reads never queue behind the target's writes on this machine's one virtual disk,
    and never wait on that disk at all: a stand-in faster than any USB disk, so that what
    bounds a restore is the target and the cores. Unmounted, detached and freed on exit.
    """
    room = min(shutil.disk_usage("/dev/shm").free, _available_memory())
    if size > room:
        raise BenchError(
            f"the backups' RAM disk needs up to {human(size)}, and only {human(room)} of RAM "
            "is free; run with --backups-on work (or a smaller --size)"
        )
    fd, name = tempfile.mkstemp(prefix="restore-tui-bench-", suffix=".img", dir="/dev/shm")
    backing = Path(name)
    try:
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        with loop_device(backing) as dev:
            _checked(["mkfs.ext4", "-q", "-F", "-L", "bench-backups", dev])
            mount_point.mkdir(parents=True, exist_ok=True)
            _checked(["mount", dev, str(mount_point)])
            try:
                yield mount_point
            finally:
                _unmount(mount_point)
    finally:
        backing.unlink(missing_ok=True)


def _available_memory() -> int:
    """MemAvailable of /proc/meminfo, in bytes (what can be used without swapping)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def _unmount(mount_point: Path) -> None:
    """Unmount; where a file is still open there, detach the mount now and let the kernel
    finish when the file is closed (the loop device and its RAM go with it), and say so."""
    busy = subprocess.run(["umount", str(mount_point)], capture_output=True, text=True)
    if busy.returncode != 0:
        subprocess.run(["umount", "--lazy", str(mount_point)], capture_output=True, check=False)
        print(f"warning: {mount_point} was busy ({busy.stderr.strip()}); detached lazily",
              file=sys.stderr)  # fmt: skip
    with contextlib.suppress(OSError):
        mount_point.rmdir()


def _checked(argv: list[str]) -> str:
    """What a set-up command printed; BenchError with its own words if it failed."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def is_block_device(path: str | os.PathLike[str]) -> bool:
    return stat.S_ISBLK(os.stat(path).st_mode)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"

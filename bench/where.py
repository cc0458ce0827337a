"""Where one restore's time and processor time go, measured inside the restore's process.

Usage: ``sudo .venv/bin/python bench/where.py ARCHIVE.rtui TARGET [--no-verify]``
(TARGET, an image file or a disk, is overwritten as by ``restore-tui restore --yes``).

One ``restore-tui restore`` runs in this process (as root, in a fresh interpreter started
after the page cache was dropped, so its imports are read cold as in ``bench/run.py``).
Printed afterwards:

- the wall time in three phases: *start-up* (from the interpreter's start to the first
  byte written to TARGET: imports, opening the backup, probing the disk, planning, the
  journal), *data* (first to last byte written) and *end* (the last flush and checkpoint);
- the processor time of each kind of thread (exact, ``time.thread_time`` at each
  thread's end): the ones decoding the backup (read, decompress, check the digest), the
  writers, the read-back, the engine, the main thread; and of helper programs (blkid);
- the work a restore cannot skip, each part timed alone on one core over every stored
  chunk of the backup: decompressing, the chunk digest (BLAKE3; SHA-256 in version 1
  backups) and, for the read-back check, XXH3 of the bytes (taken before writing and
  again of what the disk returns), and what that work allows on this machine's cores.

The kernel's own threads (a loop device's worker, ext4's unwritten-extent conversion)
are not in this process and not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from measure import drop_caches, restore_journals  # noqa: E402 (bench/ is on the path now)

# Set in the fresh interpreter where.py starts for itself after dropping the page cache.
COLD_MARK = "RESTORE_TUI_WHERE_COLD"

# Thread names (the prefixes the pools give them) and what each kind does.
ROLES = (
    ("rtui-chunk", "decoding the backup (read, decompress, chunk digest, XXH3)"),
    ("target-write", "writing to the target"),
    ("read-back", "reading back and checking"),
    ("restore-engine", "the engine (handing over writes, copies, checkpoints)"),
    ("MainThread", "main thread (imports, opening the backup, planning)"),
)

DIGEST_NAMES = {"blake3": "BLAKE3", "sha256": "SHA-256"}


@dataclass
class Timeline:
    """When the process started and when it first and last wrote to the target."""

    started: float  # CLOCK_MONOTONIC seconds
    target: str
    first_write: float | None = None
    last_write: float | None = None
    _target_fds: dict[int, bool] = field(default_factory=dict)

    def saw_write(self, fd: int) -> None:
        to_target = self._target_fds.get(fd)
        if to_target is None:
            with contextlib.suppress(OSError):
                to_target = os.path.realpath(f"/proc/self/fd/{fd}") == self.target
            self._target_fds[fd] = bool(to_target)
        if to_target:
            now = time.monotonic()
            if self.first_write is None:
                self.first_write = now
            self.last_write = now


def process_started() -> float:
    """This process's start, on the CLOCK_MONOTONIC scale (to the kernel's 10 ms tick)."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    started_since_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return time.monotonic() - (time.clock_gettime(time.CLOCK_BOOTTIME) - started_since_boot)


def watch_threads() -> list[tuple[str, float]]:
    """From now on, each thread's name and processor time when it ends."""
    ended: list[tuple[str, float]] = []
    run = threading.Thread.run

    def timed_run(self: threading.Thread) -> None:
        try:
            run(self)
        finally:
            ended.append((self.name, time.thread_time()))

    threading.Thread.run = timed_run  # type: ignore[method-assign]
    return ended


def watch_writes(timeline: Timeline) -> None:
    """Note the time of every ``os.pwrite`` and ``os.pwritev`` to the target (the writer's
    only ways there)."""
    pwrite, pwritev = os.pwrite, os.pwritev

    def noted(fd: int, data: bytes | memoryview, offset: int, /) -> int:
        n = pwrite(fd, data, offset)
        timeline.saw_write(fd)
        return n

    def noted_vector(fd: int, views: list[memoryview], offset: int, /) -> int:
        n = pwritev(fd, views, offset)
        timeline.saw_write(fd)
        return n

    os.pwrite = noted  # type: ignore[assignment]
    os.pwritev = noted_vector  # type: ignore[assignment]


@contextlib.contextmanager
def aside(kept: IO[bytes]) -> Iterator[None]:
    """The restore's own output (plan, progress, an error) into ``kept``, out of the way
    of the report."""
    saved = os.dup(1), os.dup(2)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(kept.fileno(), 1)
        os.dup2(kept.fileno(), 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def role_of(thread_name: str) -> str:
    for prefix, what in ROLES:
        if thread_name.startswith(prefix):
            return what
    return "other threads"


def cpu_by_role(ended: list[tuple[str, float]], main_cpu: float) -> dict[str, float]:
    roles: dict[str, float] = defaultdict(float)
    for name, cpu in ended:
        roles[role_of(name)] += cpu
    roles[role_of("MainThread")] += main_cpu
    return dict(roles)


@dataclass
class AloneCosts:
    """Processor seconds of each part of the work, on one core, over every stored chunk."""

    raw_bytes: int = 0
    decompress: float = 0.0
    digest: float = 0.0
    xxh3: float = 0.0
    digest_name: str = "BLAKE3"


def work_alone(archive_path: str) -> AloneCosts:
    """Decompress, digest and XXH3 every data chunk, one at a time, each part timed."""
    import zstandard

    from archive.digest import digest_hex, readback_digest
    from archive.native import NativeArchive

    costs = AloneCosts()
    decompressor = zstandard.ZstdDecompressor()
    with NativeArchive(archive_path) as archive, open(archive_path, "rb") as f:
        chunks = [*archive.manifest.boot.track0]
        chunks += [c for p in archive.manifest.partitions for c in p.chunks]
        for c in chunks:
            if c.kind != "data" or c.frame_offset is None or c.frame_length is None:
                continue
            frame = os.pread(f.fileno(), c.frame_length, c.frame_offset)
            costs.decompress -= time.thread_time()
            data = decompressor.decompress(frame, max_output_size=c.length)
            costs.decompress += time.thread_time()
            if c.digest is not None:
                costs.digest_name = DIGEST_NAMES[c.digest[0]]
                costs.digest -= time.thread_time()
                digest_hex(c.digest[0], data)
                costs.digest += time.thread_time()
            costs.xxh3 -= time.thread_time()
            readback_digest(data)
            costs.xxh3 += time.thread_time()
            costs.raw_bytes += c.length
    return costs


def restore(archive: str, target: str, verify: bool) -> int:
    """Run the restore; where it fails, the end of what it said goes to stderr."""
    from restore_tui.cli import main

    argv = ["restore", archive, "--target", target, "--yes"]
    if not verify:
        argv.append("--no-verify")
    with tempfile.TemporaryFile() as said:
        with aside(said):
            code = main(argv)
        if code != 0:
            said.seek(0)
            sys.stderr.write(said.read().decode(errors="replace")[-2000:])
    return code


def report(
    timeline: Timeline,
    wall_end: float,
    roles: dict[str, float],
    helpers_cpu: float,
    total_cpu: float,
    alone: AloneCosts,
    verify: bool,
) -> list[str]:
    assert timeline.first_write is not None and timeline.last_write is not None
    cores = os.cpu_count() or 1
    data_s = timeline.last_write - timeline.first_write
    lines = [
        f"restore {'with read-back' if verify else '--no-verify'}: "
        f"{wall_end - timeline.started:.2f} s in all",
        f"  start-up (interpreter start to first byte written)  "
        f"{timeline.first_write - timeline.started:6.2f} s",
        f"  data (first to last byte written)                    {data_s:6.2f} s",
        f"  end (last flush and checkpoint)                      "
        f"{wall_end - timeline.last_write:6.2f} s",
        f"processor time: {total_cpu:.2f} s in this process, {helpers_cpu:.2f} s in helper "
        "programs (blkid)",
    ]
    for what, cpu in sorted(roles.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {what:60s} {cpu:5.2f} s")
    # The process's total and the threads' own times are read a moment apart.
    unnamed = max(0.0, total_cpu - sum(roles.values()))
    lines.append(f"  {'threads still running at the end, interpreter exit':60s} {unnamed:5.2f} s")
    hashing = alone.digest + (2 * alone.xxh3 if verify else 0.0)
    needed = alone.decompress + hashing
    gib = alone.raw_bytes / 2**30
    lines += [
        f"the work alone, one core, {gib:.2f} GiB of stored chunks:",
        f"  decompress {alone.decompress:.2f} s, {alone.digest_name} {alone.digest:.2f} s, "
        f"XXH3 {alone.xxh3:.2f} s ({'twice' if verify else 'not needed'} in this restore)",
        f"  what the data stages cannot skip: {needed:.2f} processor-s, {needed / cores:.2f} s "
        f"on {cores} cores; they took {data_s:.2f} s "
        f"({data_s / (needed / cores):.2f}x); decompression alone would take "
        f"{alone.decompress / cores:.2f} s",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("archive", help="a restore-tui backup (.rtui)")
    parser.add_argument("target", help="the image file or disk to restore onto (overwritten)")
    parser.add_argument("--no-verify", action="store_true", help="restore without read-back")
    args = parser.parse_args(argv)
    unfinished = restore_journals(args.archive)
    if unfinished:
        print(f"error: {args.archive} has an unfinished restore's record "
              f"({unfinished[0]}); remove it first", file=sys.stderr)  # fmt: skip
        return 2
    if os.geteuid() == 0 and not os.environ.get(COLD_MARK):
        os.sync()
        drop_caches()
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, COLD_MARK: "1"})
    timeline = Timeline(process_started(), os.path.realpath(args.target))
    ended = watch_threads()
    watch_writes(timeline)
    try:
        code = restore(args.archive, args.target, not args.no_verify)
        wall_end = time.monotonic()
    finally:
        for journal in restore_journals(args.archive):
            journal.unlink()
    times = os.times()
    if code != 0:
        print(f"error: the restore failed (exit code {code})", file=sys.stderr)
        return code
    if timeline.first_write is None:
        print("error: the restore wrote nothing to the target", file=sys.stderr)
        return 1
    roles = cpu_by_role(ended, time.thread_time())
    helpers = times.children_user + times.children_system
    alone = work_alone(args.archive)
    lines = report(timeline, wall_end, roles, helpers, times.user + times.system, alone,
                   not args.no_verify)  # fmt: skip
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

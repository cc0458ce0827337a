"""The read-only FUSE server: one file per backed-up partition, read through its view.

``python -m restore_tui.imagefs ARCHIVE FOLDER --partitions 1,2`` mounts FOLDER with
``1.img``, ``2.img`` (each exactly its partition's size), folders ``1/``, ``2/`` that
hold the same file as ``partition.img`` (bound where a filesystem is unknown) and
``stats.json`` (chunks decompressed, peak memory, damage seen). Filesystem drivers
and loop devices sit on those files (``restore_tui.mounting``). Runs until FOLDER
is unmounted or it gets SIGTERM/SIGINT. A damaged chunk fails that read with EIO
and is logged on stderr and in the damage file, named by partition and offset.

pyfuse3 (libfuse 3, in Debian 12 as python3-pyfuse3, typed) rather than nbdkit: a
file per partition is what ntfs-3g and fusefat open directly and what a read-only
loop device needs for the kernel's ext4, without the nbd kernel module (which this
kind of kernel may lack) or another daemon to manage; the server is plain Python
calling :mod:`archive.view`, so the same code serves tests, the CLI and the wizard.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import signal
import stat
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pyfuse3
import trio

from archive import open_archive
from archive.errors import ArchiveError, CorruptData
from archive.view import PartitionBytes, open_view

STATS_NAME = "stats.json"
_STATS_INODE = pyfuse3.ROOT_INODE + 1
_FIRST_IMAGE_INODE = pyfuse3.ROOT_INODE + 10
_FIRST_DIR_INODE = _FIRST_IMAGE_INODE + 1000
IN_FOLDER = b"partition.img"
#: the kernel may cache attributes and names this long: nothing here ever changes
_TIMEOUT = 3600.0


def image_name(number: int) -> str:
    return f"{number}.img"


class ImageFS(pyfuse3.Operations):
    """A read-only folder: ``<n>.img`` and ``<n>/partition.img`` per partition, ``stats.json``."""

    enable_writeback_cache = False

    def __init__(self, views: Sequence[PartitionBytes], damage_file: Path | None) -> None:
        super().__init__()
        self.views = {_FIRST_IMAGE_INODE + i: v for i, v in enumerate(views)}
        self.names = {image_name(v.number).encode(): ino for ino, v in self.views.items()}
        self.names[STATS_NAME.encode()] = _STATS_INODE
        # <n>/ holds <n>.img once more, as partition.img (the same inode).
        self.dirs = {_FIRST_DIR_INODE + i: _FIRST_IMAGE_INODE + i for i in range(len(views))}
        for ino, v in zip(self.dirs, views, strict=True):
            self.names[str(v.number).encode()] = ino
        self.damage_file = damage_file
        self.damage: list[dict[str, object]] = []
        self.started = time.time_ns()
        self._stats: dict[int, bytes] = {}  # open stats.json handles: their snapshot
        self._next_fh = 1_000_000

    # -- attributes

    def _attr(self, inode: int) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode
        attr.st_uid = os.getuid()
        attr.st_gid = os.getgid()
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = self.started
        attr.st_blksize = 4096
        attr.entry_timeout = attr.attr_timeout = _TIMEOUT
        if inode == pyfuse3.ROOT_INODE or inode in self.dirs:
            attr.st_mode = stat.S_IFDIR | 0o555
            attr.st_nlink = 2
        elif inode == _STATS_INODE:
            attr.st_mode = stat.S_IFREG | 0o444
            attr.st_nlink = 1
            attr.st_size = 0  # read with direct I/O: the size is whatever it says now
            attr.entry_timeout = attr.attr_timeout = 0
        elif inode in self.views:
            attr.st_mode = stat.S_IFREG | 0o444
            attr.st_nlink = 2
            attr.st_size = self.views[inode].size
            attr.st_blocks = (attr.st_size + 511) // 512
        else:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return attr

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attr(inode)

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if parent_inode in self.dirs and name == IN_FOLDER:
            return self._attr(self.dirs[parent_inode])
        if parent_inode != pyfuse3.ROOT_INODE or name not in self.names:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(self.names[name])

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if inode != pyfuse3.ROOT_INODE and inode not in self.dirs:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = [(IN_FOLDER, self.dirs[fh])] if fh in self.dirs else sorted(self.names.items())
        for index, (name, inode) in enumerate(entries[start_id:], start=start_id + 1):
            if not pyfuse3.readdir_reply(token, name, self._attr(inode), index):
                return

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 4096
        data.f_blocks = sum(v.size for v in self.views.values()) // 4096
        data.f_files = len(self.names) + 1
        data.f_namemax = 255
        return data

    # -- reading

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        if inode == _STATS_INODE:
            self._next_fh += 1
            self._stats[self._next_fh] = self.stats_json().encode()
            return pyfuse3.FileInfo(fh=self._next_fh, direct_io=True)
        if inode not in self.views:
            raise pyfuse3.FUSEError(errno.ENOENT)
        # The bytes never change: let the kernel keep what it cached between opens.
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        if fh in self._stats:
            return self._stats[fh][off : off + size]
        view = self.views[fh]
        try:
            return view.read(off, size)
        except CorruptData as exc:
            self._record_damage(exc)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except OSError as exc:  # the archive's own disk failing
            print(f"error: reading the backup failed: {exc}", file=sys.stderr, flush=True)
            raise pyfuse3.FUSEError(errno.EIO) from None

    async def release(self, fh: int) -> None:
        self._stats.pop(fh, None)

    # -- what happened

    def _record_damage(self, exc: CorruptData) -> None:
        entry: dict[str, object] = {
            "partition": exc.partition,
            "offset": exc.offset,
            "message": str(exc),
        }
        if entry in self.damage:
            return
        self.damage.append(entry)
        print(
            f"error: the backup is damaged: {exc}. Reading the files stored there fails "
            "(input/output error); other files read normally. Use another copy of the backup "
            "for those files.",
            file=sys.stderr,
            flush=True,
        )
        if self.damage_file is not None:
            tmp = self.damage_file.with_name(self.damage_file.name + ".tmp")
            tmp.write_text(json.dumps(self.damage, indent=1))
            os.replace(tmp, self.damage_file)

    def stats_json(self) -> str:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return json.dumps(
            {
                "pid": os.getpid(),
                "peak_rss_bytes": peak_kib * 1024,
                "partitions": {
                    str(v.number): {
                        "size": v.size,
                        "data_chunks": getattr(v, "data_chunks", 0),
                        "decompressed_chunks": getattr(v, "decompressed", 0),
                        "cached_chunks": getattr(v, "cached_chunks", 0),
                    }
                    for v in self.views.values()
                },
                "damage": self.damage,
            },
            indent=1,
        )


async def _serve(fs: ImageFS, folder: Path, on_ready: Callable[[], None]) -> None:
    options = set(pyfuse3.default_options)
    options |= {"ro", "fsname=restore-tui", "subtype=restore-tui"}
    pyfuse3.init(fs, str(folder), options)
    try:
        on_ready()
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        pyfuse3.terminate()
                        return

            nursery.start_soon(stop_on_signal)
            await pyfuse3.main()  # returns when unmounted or terminated
            nursery.cancel_scope.cancel()
    finally:
        pyfuse3.close(unmount=True)


def _tell(fd: int | None, text: str) -> None:
    if fd is None:
        return
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m restore_tui.imagefs")
    parser.add_argument("archive")
    parser.add_argument("folder")
    parser.add_argument("--partitions", required=True, help="comma-separated numbers")
    parser.add_argument("--ready-fd", type=int, help="write 'ready' (or the error) here")
    parser.add_argument("--damage-file", type=Path)
    args = parser.parse_args(argv)
    ready_fd: int | None = args.ready_fd
    try:
        archive = open_archive(args.archive)
        numbers = [int(n) for n in args.partitions.split(",") if n]
        views = [open_view(archive, n) for n in numbers]
        fs = ImageFS(views, args.damage_file)
    except (ArchiveError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        _tell(ready_fd, f"error: {exc}\n")
        return 1

    def ready() -> None:
        nonlocal ready_fd
        _tell(ready_fd, "ready\n")
        ready_fd = None

    try:
        trio.run(_serve, fs, Path(args.folder), ready)
    except RuntimeError as exc:  # pyfuse3.init: the folder cannot be mounted
        print(f"error: {exc}", file=sys.stderr, flush=True)
        _tell(ready_fd, f"error: cannot serve the backup's partitions: {exc}\n")
        return 1
    finally:
        archive.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

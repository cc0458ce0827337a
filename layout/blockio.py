"""Reading block devices and disk image files the same way: size, sector sizes, bytes.

Everything is addressed by byte offset on the whole disk, so nothing depends on
the kernel having partition nodes.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

BLKGETSIZE64 = 0x80081272
BLKSSZGET = 0x1268
BLKPBSZGET = 0x127B
BLKROGET = 0x125E
BLKRRPART = 0x125F


@dataclass(frozen=True)
class Geometry:
    size_bytes: int
    logical_sector_size: int
    physical_sector_size: int
    is_block_device: bool
    read_only: bool


def is_block_device(path: str | os.PathLike[str]) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def geometry_of_fd(fd: int) -> Geometry:
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
        size = struct.unpack("Q", buf)[0]
        logical = struct.unpack("i", fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4))[0]
        physical = struct.unpack("I", fcntl.ioctl(fd, BLKPBSZGET, b"\0" * 4))[0]
        ro = struct.unpack("i", fcntl.ioctl(fd, BLKROGET, b"\0" * 4))[0] != 0
        return Geometry(size, logical, physical, True, ro)
    if stat.S_ISREG(st.st_mode):
        # Image files are taken as 512-byte-sector disks; a 4Kn image is named by
        # the probe that knows better (recorded machines carry their sector size).
        return Geometry(st.st_size, 512, 512, False, not os.access(fd_path(fd), os.W_OK))
    raise OSError(f"not a disk or disk image file (mode {stat.filemode(st.st_mode)})")


def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def geometry(path: str | os.PathLike[str]) -> Geometry:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return geometry_of_fd(fd)
    finally:
        os.close(fd)


def read_at(fd: int, offset: int, length: int) -> bytes:
    """Exactly ``length`` bytes at ``offset``; shorter only at the end of the disk."""
    chunks: list[bytes] = []
    done = 0
    while done < length:
        piece = os.pread(fd, length - done, offset + done)
        if not piece:
            break
        chunks.append(piece)
        done += len(piece)
    return b"".join(chunks)


class DiskReader:
    """A read-only handle on a whole disk or image file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.geometry = geometry_of_fd(self.fd)
        except Exception:
            os.close(self.fd)
            raise

    def read(self, offset: int, length: int) -> bytes:
        return read_at(self.fd, offset, length)

    @property
    def size(self) -> int:
        return self.geometry.size_bytes

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> DiskReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

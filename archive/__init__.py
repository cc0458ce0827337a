"""Backups: the manifest, the native archive format, and readers for other tools' archives.

``open_archive`` is the one entry point: it returns an :class:`archive.base.Archive`
whatever tool made the backup.
"""

from __future__ import annotations

import importlib
import os
import stat
from pathlib import Path

from archive.base import Archive
from archive.errors import ArchiveError, NotAnArchive


def open_archive(path: str | os.PathLike[str]) -> Archive:
    """Open any backup restore-tui reads, validated; refuse others' backups in plain words.

    Files: a native archive (by its marker), a partclone image, a raw disk image (an
    MBR or GPT table at its start whose partitions fit inside the file), in that
    order; anything else is refused with what it is and what to do instead
    (``archive.foreign``: Acronis, Macrium, Windows system images, virtual disks).
    Folders: a Clonezilla or Rescuezilla image; a Windows system image is refused.
    """
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise NotAnArchive(f"{p} does not exist; check the path to the backup") from None
    except OSError as exc:
        raise NotAnArchive(f"cannot open {p}: {exc.strerror}") from None
    if stat.S_ISREG(mode):
        from archive.native import MAGIC, NativeArchive

        with p.open("rb") as f:
            head = f.read(len(MAGIC))
        # Empty, or the marker (or a piece of it): the native reader says what is wrong.
        if MAGIC.startswith(head):
            return NativeArchive(p)
        if _is_partclone_image(p):
            from archive.partclone import open_partclone_image

            return open_partclone_image(_unsplit(p))
        from archive.raw import RawDiskImage, probe_raw_image

        try:
            found = probe_raw_image(p)
        except OSError as exc:
            raise NotAnArchive(f"cannot read {p}: {exc.strerror or exc}") from None
        if found.parsed is not None:
            return RawDiskImage(p, found)
        from archive.foreign import refusal

        raise NotAnArchive(refusal(p, table_problem=found.problem))
    if stat.S_ISDIR(mode):
        from archive.foreign import windows_image_folder

        windows = windows_image_folder(p)
        if windows is not None:
            raise NotAnArchive(windows)
        # Imported lazily: the Clonezilla reader is optional for native archives.
        try:
            clonezilla = importlib.import_module("archive.clonezilla")
        except ModuleNotFoundError as exc:
            if exc.name != "archive.clonezilla":
                raise
            raise NotAnArchive(
                f"{p} is a folder; reading Clonezilla image folders is not available in this "
                "restore-tui build. Choose a restore-tui archive file instead"
            ) from None
        opened: Archive = clonezilla.open_clonezilla(p)
        return opened
    raise NotAnArchive(
        f"{p} is neither a backup file nor a backup folder (it is a device or special file)"
    )


def _unsplit(path: Path) -> Path:
    """``img.aa`` -> ``img`` (Clonezilla splits images into .aa, .ab, ...)."""
    name = path.name
    if len(name) > 3 and name[-3] == "." and name[-2:].isalpha() and name[-2:].islower():
        candidate = path.with_name(name[:-3])
        if not candidate.exists():
            return candidate
    return path


def _is_partclone_image(path: Path) -> bool:
    """True when the file (decompressed, split parts joined) starts like a partclone image."""
    from archive.decompress import ImageStream, image_files
    from archive.partclone import looks_like_partclone

    try:
        stream = ImageStream(image_files(_unsplit(path)))
    except (ArchiveError, OSError):
        return False
    try:
        head = stream.read(64) or b""
    except (ArchiveError, OSError):
        return False
    finally:
        stream.close()
    return looks_like_partclone(head)

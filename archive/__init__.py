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
from archive.errors import NotAnArchive


def open_archive(path: str | os.PathLike[str]) -> Archive:
    """Open a native archive file or a Clonezilla image folder, validated."""
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise NotAnArchive(f"{p} does not exist; check the path to the backup") from None
    except OSError as exc:
        raise NotAnArchive(f"cannot open {p}: {exc.strerror}") from None
    if stat.S_ISREG(mode):
        from archive.native import NativeArchive

        return NativeArchive(p)
    if stat.S_ISDIR(mode):
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

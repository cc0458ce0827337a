"""The one interface every supported archive presents to the rest of restore-tui.

``open_archive`` (in ``archive/__init__``) returns an :class:`Archive`; planning,
the engine and the wizard use only this, whatever tool made the backup.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from archive.manifest import ArchiveManifest

# progress(done_bytes, total_bytes); called often, must be cheap.
ProgressCallback = Callable[[int, int], None]

TRACK0: Literal["track0"] = "track0"
Area = int | Literal["track0"]  # a partition number, or track 0


@dataclass(frozen=True, slots=True)
class Piece:
    """Verified raw bytes for ``[offset, offset + length)`` of the source disk.

    ``data`` is None for a run of zeros (write zeros, decompress nothing).
    """

    offset: int
    length: int
    data: bytes | None

    @property
    def stop(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class Damage:
    """One damaged place found by verify."""

    partition: int | None  # None: track 0 or the archive's own structures
    offset: int  # source-disk byte offset (or archive file offset for structures)
    message: str


@dataclass
class VerifyReport:
    checked_bytes: int = 0
    checked_chunks: int = 0
    damage: list[Damage] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damage


class Archive(abc.ABC):
    """A readable backup: its manifest, its verified data, and a full verify."""

    #: the file or directory that holds the backup (used to refuse its own disk)
    path: Path
    manifest: ArchiveManifest
    #: short name of the format for people: "restore-tui archive", "Clonezilla image"
    format_name: str

    @abc.abstractmethod
    def pieces(self, area: Area, start: int = 0) -> Iterator[Piece]:
        """Yield the stored data of one area in ascending offset order, verified.

        ``start`` is a source-disk byte offset: pieces that end at or before it
        are skipped (resume). Raises :class:`archive.errors.CorruptData` *before*
        yielding any byte that fails its check.
        """

    @abc.abstractmethod
    def verify(self, progress: ProgressCallback | None = None) -> VerifyReport:
        """Read everything and check every digest; never raises for bad data."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release open files."""

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

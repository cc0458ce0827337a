"""The one interface every supported archive presents to the rest of restore-tui.

``open_archive`` (in ``archive/__init__``) returns an :class:`Archive`; planning,
the engine and the wizard use only this, whatever tool made the backup.
"""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from archive.manifest import ArchiveManifest
from layout.blocks import Block

# progress(done_bytes, total_bytes); called often, must be cheap.
ProgressCallback = Callable[[int, int], None]

TRACK0: Literal["track0"] = "track0"
Area = int | Literal["track0"]  # a partition number, or track 0


@dataclass(frozen=True, slots=True)
class Piece:
    """Verified raw bytes for ``[offset, offset + length)`` of the source disk.

    ``data`` is None for a run of zeros (write zeros, decompress nothing).
    ``readback`` is ``archive.digest.readback_digest(data)``, taken right after
    ``data`` matched its chunk's digest (restore-tui archives): reading back, the
    disk's bytes are compared with it instead of hashed with the slower digest again.
    ``block``, when set, is the pooled buffer ``data`` is a read-only view of
    (``layout.blocks``): a writer may send it to the disk without a copy
    (``CheckedWriter.write_block``).
    """

    offset: int
    length: int
    data: bytes | memoryview | None
    readback: bytes | None = None
    block: Block | None = field(default=None, compare=False, repr=False)

    @property
    def stop(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class Damage:
    """One damaged place found by verify."""

    partition: int | None  # None: track 0 or the archive's own structures
    offset: int  # source-disk byte offset (or archive file offset for structures)
    message: str


UncheckedArea = Literal["boot-code", "track0", "ebrs", "partition"]
UncheckedReason = Literal["format-keeps-no-checksum", "image-has-no-checksums", "raw-copy"]


@dataclass(frozen=True, kw_only=True)
class Unchecked:
    """A part of a backup that no checksum protects: it is restored exactly as stored.

    ``area`` "boot-code" is the boot code in sector 0, "track0" the rest of the
    space before the first partition, "ebrs" the extended boot records, and
    "partition" the data of partition ``partition``. ``reason`` says why:
    the format keeps no checksum for it, the partition's image carries none,
    or the partition was saved as a raw copy without one.
    """

    area: UncheckedArea
    reason: UncheckedReason
    partition: int | None = None

    def __post_init__(self) -> None:
        if (self.area == "partition") != (self.partition is not None):
            raise ValueError("a partition number goes with area 'partition' and only with it")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces: the same bytes for the same content."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def manifest_content(manifest: ArchiveManifest) -> dict[str, Any]:
    """The manifest as JSON data without ``created``.

    For formats that take the creation time from a file's modification time,
    which a copy changes while the backup stays the same.
    """
    data = manifest.model_dump(mode="json")
    data.pop("created", None)
    return data


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
    _identity: str | None = None

    def identity(self) -> str:
        """Lowercase SHA-256 hex that names this backup by its content, wherever it lies.

        A copy (new modification times, another folder, another disk) has the same
        identity; a changed checksum, table or metadata file gives another. Built from
        metadata and small files only, never from the partition data, so it is
        instant for any size of backup; computed once per open archive.
        """
        if self._identity is None:
            self._identity = self._content_identity()
        return self._identity

    def _content_identity(self) -> str:
        """What :meth:`identity` hashes; formats with more to say override this."""
        return sha256_hex(canonical_json({"manifest": manifest_content(self.manifest)}))

    def unchecked(self) -> tuple[Unchecked, ...]:
        """What of this backup no checksum protects (empty: everything is checked).

        Such areas are restored exactly as stored; a damaged byte there cannot be
        noticed, not by ``verify`` either.
        """
        return ()

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

"""Errors about archives, each saying what is wrong and what to do next."""

from __future__ import annotations


class ArchiveError(Exception):
    """Base for every archive problem; ``str()`` is a full sentence for the user."""


class NotAnArchive(ArchiveError):
    """The path is not a backup this tool can read."""


class TruncatedArchive(ArchiveError):
    """The file ends before its structures say it should."""


class UnsupportedVersion(ArchiveError):
    """The archive was written by a newer restore-tui."""


class ManifestInvalid(ArchiveError):
    """The manifest is unreadable or describes something impossible."""


class CorruptData(ArchiveError):
    """Stored data does not match its digest or checksum.

    Carries where: the partition (None for track 0) and the source-disk byte
    offset, so a restore can stop before writing it and say where.
    """

    def __init__(self, message: str, *, partition: int | None, offset: int) -> None:
        super().__init__(message)
        self.partition = partition
        self.offset = offset

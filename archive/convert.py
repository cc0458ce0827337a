"""Convert a Clonezilla image folder (or a lone partclone image) into a native archive.

Such images are one compressed stream per partition, so they cannot be read at
random offsets (mount, files); the native format's independent chunks can. The
data is read through the source's own reader, which checks every partclone
checksum before handing a byte out; it is written by :class:`NativeWriter` to
``OUT.partial``, read back and verified there, and only then renamed to ``OUT``.
A damaged source stops the conversion and leaves no ``OUT``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from archive import open_archive
from archive.base import TRACK0, Archive, Area, Piece, ProgressCallback
from archive.errors import ArchiveError, CorruptData
from archive.manifest import ArchiveManifest, Chunk, PartitionImage
from archive.native import NativeArchive, NativeWriter


class ConvertError(ArchiveError):
    """The conversion cannot be done or did not verify; no output was left."""


def _ranges(chunks: tuple[Chunk, ...]) -> list[tuple[int, int]]:
    """The chunks' extents, touching ones merged (the writer re-cuts them at 4 MiB)."""
    out: list[tuple[int, int]] = []
    for c in chunks:
        if out and out[-1][1] == c.offset:
            out[-1] = (out[-1][0], c.stop)
        else:
            out.append((c.offset, c.stop))
    return out


class PieceReader:
    """``read(offset, length)`` over an ascending stream of verified pieces.

    The writer asks for ascending ranges that the pieces cover; anything else
    means the source's manifest and data disagree, which is an error, not zeros.
    """

    def __init__(self, pieces: Iterator[Piece], what: str) -> None:
        self._pieces = pieces
        self._what = what
        self._current: Piece | None = None

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        pos, stop = offset, offset + length
        while pos < stop:
            piece = self._piece_at(pos)
            take = min(stop, piece.stop) - pos
            if piece.data is None:
                out += bytes(take)
            else:
                start = pos - piece.offset
                out += piece.data[start : start + take]
            pos += take
        return bytes(out)

    def _piece_at(self, pos: int) -> Piece:
        while self._current is None or self._current.stop <= pos:
            self._current = next(self._pieces, None)
            if self._current is None:
                raise ConvertError(f"{self._what}: the image ends before byte {pos}")
        if self._current.offset > pos:
            raise ConvertError(f"{self._what}: the image holds no data for byte {pos}")
        return self._current


def _store(
    writer: NativeWriter, source: Archive, area: Area, chunks: tuple[Chunk, ...],
    advance: Callable[[int], None],
) -> tuple[Chunk, ...]:  # fmt: skip
    if not chunks:
        return ()
    what = "track 0" if area == TRACK0 else f"partition {area}"
    reader = PieceReader(source.pieces(area), what)
    return writer.store(reader.read, _ranges(chunks), advance)


def _converted_manifest(
    source: Archive, track0: tuple[Chunk, ...], images: list[PartitionImage]
) -> ArchiveManifest:
    m = source.manifest
    unchecked = {u.partition for u in source.unchecked() if u.area == "partition"}
    images = [
        image.model_copy(
            update={"capture_note": f"{image.capture_note or ''} (its data was converted as "
                    "stored: the source carried no checksums for it)".strip()}
        ) if image.number in unchecked else image
        for image in images
    ]  # fmt: skip
    data = m.model_dump()
    data["creator"] = f"{m.creator} (converted by restore-tui from {source.format_name})"
    data["boot"]["track0"] = track0
    data["partitions"] = images
    return ArchiveManifest.model_validate(data)


def _check(path: Path) -> None:
    """Read the written file back and check every chunk before it gets its real name."""
    with NativeArchive(path) as written:
        report = written.verify()
    if not report.ok:
        first = report.damage[0]
        raise ConvertError(
            f"the converted backup did not read back correctly (partition {first.partition}, "
            f"byte offset {first.offset}: {first.message}); the disk it was written to may be "
            "failing. Nothing was kept; try again on another disk"
        )


def convert(
    src: str | os.PathLike[str], out: str | os.PathLike[str],
    progress: ProgressCallback | None = None,
) -> ArchiveManifest:  # fmt: skip
    """Convert the backup at ``src`` into the native archive ``out``; its manifest."""
    source = open_archive(src)
    with source:
        if isinstance(source, NativeArchive):
            raise ConvertError(f"{src} is already a restore-tui backup: nothing to convert")
        m = source.manifest
        total = sum(c.length for c in m.boot.track0)
        total += sum(c.length for p in m.partitions for c in p.chunks)
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        with NativeWriter(out) as writer:
            try:
                track0 = _store(writer, source, TRACK0, m.boot.track0, advance)
                images = []
                for image in m.partitions:
                    chunks = _store(writer, source, image.number, image.chunks, advance)
                    images.append(image.model_copy(update={"chunks": chunks}))
            except CorruptData as exc:
                raise ConvertError(
                    f"{exc}. Nothing was converted (no {Path(out).name} was written); use "
                    "another copy of the backup"
                ) from None
            manifest = _converted_manifest(source, track0, images)
            writer.finish(manifest, check=_check)
    return manifest

"""Open a partition image the way Clonezilla saved it: maybe split, maybe compressed.

Split parts (``.aa``, ``.ab``, ...) are joined in order and the compression is
recognised by its magic bytes (the file name only breaks ties), so a renamed file
still reads and a damaged or cut one fails with a sentence that says which file.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import zstandard

from archive.errors import CorruptData, NotAnArchive, TruncatedArchive

# Magic bytes at the start of each supported stream. Clonezilla's default is zstd.
MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"\x89LZO", "lzop"),
    (b"LZIP", "lzip"),
    (b"RZIP", "lrzip"),
)

# Clonezilla's file-name suffixes (``-z1p`` gz ... ``-z9p`` zst, ``-z0`` uncomp).
SUFFIXES: dict[str, str] = {
    "gz": "gzip",
    "zst": "zstd",
    "xz": "xz",
    "bz2": "bzip2",
    "lz4": "lz4",
    "lzma": "lzma",
    "lzo": "lzop",
    "lz": "lzip",
    "lzip": "lzip",
    "lrz": "lrzip",
    "uncomp": "none",
}

# Tools a person can use to turn an unsupported image into one we read.
UNSUPPORTED: dict[str, str] = {
    "lzop": "lzop -d",
    "lzip": "lzip -d",
    "lrzip": "lrzip -d",
}

_SPLIT_SUFFIX = re.compile(r"^[a-z]{2,}$")
_READ_SIZE = 1024 * 1024


@dataclass(frozen=True)
class ImageFiles:
    """The files that make up one saved image, in order, and how they are compressed."""

    name: str  # the image's name without any split suffix, for messages
    parts: tuple[Path, ...]
    compression: str  # "zstd", "gzip", "xz", "lzma", "bzip2", "lz4" or "none"


def _split_index(suffix: str) -> int:
    """``aa`` -> 0, ``ab`` -> 1, ... ``zz`` -> 675, ``aaa`` -> 676 (split's own order)."""
    value = 0
    for ch in suffix:
        value = value * 26 + (ord(ch) - ord("a"))
    # Longer suffixes come after every shorter one (split -a N widens only upwards).
    offset = sum(26**n for n in range(2, len(suffix)))
    return offset + value


def split_parts(base: Path) -> tuple[Path, ...]:
    """The files holding the image ``base``: itself, or its ``.aa``, ``.ab``, ... parts.

    Raises a clear error for a gap in the sequence (a missing part) or for parts
    of different sizes where ``split -b`` makes every part but the last the same size.
    """
    if base.is_file():
        return (base,)
    prefix = base.name + "."
    found: list[tuple[int, Path]] = []
    if base.parent.is_dir():
        for entry in base.parent.iterdir():
            if entry.name.startswith(prefix) and entry.is_file():
                suffix = entry.name[len(prefix) :]
                if _SPLIT_SUFFIX.match(suffix):
                    found.append((_split_index(suffix), entry))
    if not found:
        raise NotAnArchive(f"the image file {base} is missing (no whole file and no .aa part)")
    found.sort()
    for expected, (index, path) in enumerate(found):
        if index != expected:
            missing = base.name + "." + _suffix_for(expected)
            raise TruncatedArchive(
                f"part {missing} of the split image {base.name} is missing (found {path.name} "
                "after it): copy the whole image folder again"
            )
    parts = tuple(p for _, p in found)
    sizes = [p.stat().st_size for p in parts]
    # Every part but the last has split's exact size: a shorter one was cut short
    # while copying, a longer last one means parts from two different images.
    if len(parts) > 1:
        full = sizes[0]
        for path, size in zip(parts[1:-1], sizes[1:-1], strict=True):
            if size != full:
                raise TruncatedArchive(
                    f"{path.name} is {size} bytes but {parts[0].name} is {full}: a split part "
                    "was cut short or replaced; copy the image folder again"
                )
        if sizes[-1] > full or sizes[-1] == 0:
            raise TruncatedArchive(
                f"the last part {parts[-1].name} is {sizes[-1]} bytes, which cannot follow "
                f"{full}-byte parts: the split image {base.name} is damaged"
            )
    return parts


def _suffix_for(index: int) -> str:
    letters = []
    for _ in range(2):
        index, r = divmod(index, 26)
        letters.append(chr(ord("a") + r))
    return "".join(reversed(letters))


def compression_from_name(name: str) -> str | None:
    """The compression a Clonezilla image name says, or None when it says nothing."""
    suffix = name.rsplit(".", 1)[-1] if "." in name else ""
    return SUFFIXES.get(suffix)


def compression_from_magic(head: bytes) -> str | None:
    for magic, kind in MAGICS:
        if head.startswith(magic):
            return kind
    # The legacy .lzma ("alone") format has no magic; its first byte is the
    # lc/lp/pb properties byte, 0x5D for every default-settings encoder.
    if head[:1] == b"\x5d" and head[1:5] in (b"\x00\x00\x80\x00", b"\x00\x00\x00\x01"):
        return "lzma"
    return None


def detect_compression(head: bytes, name: str) -> str:
    """Decide the compression from the first bytes, with the name as a tie-breaker.

    Magic bytes win over the name (a renamed file still reads). A name that
    promises a compressed stream whose magic is absent means a damaged file.
    """
    by_magic = compression_from_magic(head)
    by_name = compression_from_name(name)
    kind = by_magic
    if kind is None:
        if by_name not in (None, "none", "lzma"):
            raise CorruptData(
                f"{name} should be {by_name}-compressed but does not start like it: the "
                "file is damaged or not a Clonezilla image",
                partition=None,
                offset=0,
            )
        kind = by_name or "none"
    if kind in UNSUPPORTED:
        raise NotAnArchive(
            f"{name} is {kind}-compressed, which restore-tui cannot read yet: decompress it "
            f"with `{UNSUPPORTED[kind]}` and save the result as an uncompressed image "
            "(name ending .uncomp)"
        )
    return kind


def image_files(base: Path) -> ImageFiles:
    """Find the parts of ``base`` and recognise their compression."""
    parts = split_parts(base)
    with parts[0].open("rb") as f:
        head = f.read(16)
    return ImageFiles(base.name, parts, detect_compression(head, base.name))


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class _Concatenated(io.RawIOBase):
    """The split parts read back to back as one stream, each opened only when reached."""

    def __init__(self, parts: tuple[Path, ...]) -> None:
        super().__init__()
        self._parts = parts
        self._index = 0
        self._file: io.BufferedReader | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while self._index < len(self._parts):
            if self._file is None:
                self._file = self._parts[self._index].open("rb")
            n = self._file.readinto(buffer)
            if n:
                return n
            self._file.close()
            self._file = None
            self._index += 1
        return 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


class ImageStream(io.RawIOBase):
    """Decompressed bytes of one image, with every decoder's failure turned into a clear error."""

    def __init__(self, files: ImageFiles) -> None:
        super().__init__()
        self.files = files
        self.position = 0  # decompressed bytes handed out so far
        self._raw = _Concatenated(files.parts)
        buffered = io.BufferedReader(self._raw, _READ_SIZE)
        # Decoders own the buffered source and are closed with it (no `with`: the
        # stream lives as long as this object).
        self._inner: _Readable
        kind = files.compression
        if kind == "zstd":
            # read_across_frames: zstdmt and concatenated parts write many frames.
            self._inner = zstandard.ZstdDecompressor().stream_reader(
                buffered, read_size=_READ_SIZE, read_across_frames=True
            )
        elif kind == "gzip":
            self._inner = gzip.GzipFile(fileobj=buffered, mode="rb")
        elif kind in ("xz", "lzma"):
            self._inner = lzma.LZMAFile(buffered)  # noqa: SIM115
        elif kind == "bzip2":
            self._inner = bz2.BZ2File(buffered)
        elif kind == "lz4":
            import lz4.frame  # type: ignore[import-untyped]  # only user: keep start-up light

            self._inner = lz4.frame.LZ4FrameFile(buffered)
        elif kind == "none":
            self._inner = buffered
        else:
            raise NotAnArchive(f"{files.name}: unknown compression {kind!r}")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            data = self._inner.read(len(buffer))
        except EOFError as exc:
            raise TruncatedArchive(
                f"{self.files.name} ends in the middle of its compressed data: the file (or "
                "its last split part) is cut short; copy the image folder again"
            ) from exc
        except (OSError, zlib.error, lzma.LZMAError, zstandard.ZstdError, RuntimeError) as exc:
            raise CorruptData(
                f"{self.files.name} is damaged: its {self.files.compression} data cannot be "
                f"decompressed after {self.position} bytes ({exc})",
                partition=None,
                offset=self.position,
            ) from exc
        n = len(data)
        buffer[:n] = data
        self.position += n
        return n

    def read_exact(self, length: int, what: str) -> bytes:
        """Exactly ``length`` bytes, or a clear error naming ``what`` was being read."""
        chunks: list[bytes] = []
        remaining = length
        while remaining:
            data = self.read(min(remaining, _READ_SIZE * 4))
            if not data:
                raise TruncatedArchive(
                    f"{self.files.name} ends early, while reading {what} (after "
                    f"{self.position} bytes): the image is cut short or a split part is "
                    "missing; copy the image folder again"
                )
            chunks.append(data)
            remaining -= len(data)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def iter_raw(self, size: int = _READ_SIZE) -> Iterator[bytes]:
        while True:
            data = self.read(size)
            if not data:
                return
            yield data

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._raw.close()
            super().close()

"""The decompression part of a restore's physical limit: every stored chunk of a native
backup decompressed on all cores, nothing hashed, nothing written.

Usage: ``python bench/limit.py ARCHIVE.rtui`` (run by bench/run.py as its own process,
so its time and memory are measured like every other contender's).
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from archive.native import NativeArchive


def decompress_all(path: str) -> int:
    """Decompress every data chunk (independent zstd frames) on ``os.cpu_count()`` threads;
    the number of bytes produced. python-zstandard releases the GIL while it works."""
    with NativeArchive(path) as archive:
        chunks = [
            c
            for image in archive.manifest.partitions
            for c in image.chunks
            if c.kind == "data" and c.frame_offset is not None
        ]
        fd = os.open(path, os.O_RDONLY)
        try:

            def one(chunk: object) -> int:
                c = chunk  # a Chunk with a frame
                frame = os.pread(fd, c.frame_length, c.frame_offset)  # type: ignore[attr-defined]
                out = zstandard.ZstdDecompressor().decompress(
                    frame, max_output_size=c.length  # type: ignore[attr-defined]
                )
                return len(out)

            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                return sum(pool.map(one, chunks))
        finally:
            os.close(fd)


if __name__ == "__main__":
    produced = decompress_all(sys.argv[1])
    print(produced)

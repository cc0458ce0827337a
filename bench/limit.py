"""The decompression part of a restore's physical limit: every stored chunk of a native
backup decompressed on all cores, nothing hashed, nothing written. The frames are read
as the restore reads them (direct reads, ``layout.blockio.DirectReader``), the cheaper
way on two cores.

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

from archive.manifest import Chunk
from archive.native import NativeArchive
from layout.blockio import DirectReader


def decompress_all(path: str) -> int:
    """Decompress every data chunk (independent zstd frames) on ``os.cpu_count()`` threads;
    the number of bytes produced. python-zstandard releases the GIL while it works."""
    archive = NativeArchive(path)
    with archive:
        chunks = [
            c
            for image in archive.manifest.partitions
            for c in image.chunks
            if c.kind == "data" and c.frame_offset is not None
        ]
        with DirectReader(path, archive.file_length) as reader:

            def one(c: Chunk) -> int:
                assert c.frame_offset is not None and c.frame_length is not None
                with reader.view(c.frame_offset, c.frame_length) as frame:
                    out = zstandard.ZstdDecompressor().decompress(frame, max_output_size=c.length)
                return len(out)

            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                return sum(pool.map(one, chunks))


if __name__ == "__main__":
    produced = decompress_all(sys.argv[1])
    print(produced)

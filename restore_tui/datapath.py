"""Fast checks of restored bytes: read the target back and compare digests, in parallel.

The engine's read-back check needs no second decompression when the archive's
manifest already holds each chunk's digest: hashing what the disk returns is enough.
Reads come from the medium, not the page cache (``layout.blockio.MediumReader``).
:class:`ReadBehind` runs that check behind the writes — while later chunks are
decompressed and written, chunks already flushed are read back from the medium — so a
verified restore takes about as long as its slowest part, not the sum of its parts.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from archive.base import Piece
from archive.digest import chunk_matches, readback_digest
from archive.manifest import Chunk
from archive.native import default_workers, ordered_map
from layout.blockio import MediumReader, all_zeros

# A zero run is read back in blocks of this size (holes in image files are skipped).
ZERO_READ = 4 * 1024 * 1024
# Data chunks that follow one another on the target are read back together, in one
# request of up to this many bytes: on this project's machine a read-back in 4 MiB
# requests (one per chunk) kept the disk from taking the writes in between as fast as
# 16 MiB requests do (see DIRECT_BUFFER in restore_tui.writer).
READ_BACK_SPAN = 16 * 1024 * 1024

SourceRange = tuple[int, int]


@dataclass(frozen=True)
class DigestSplit:
    """Which part of a source range can be checked by digest, and what is left over."""

    chunks: tuple[Chunk, ...]  # whole chunks inside the range: data with a digest, or zeros
    rest: tuple[SourceRange, ...]  # source ranges that need a byte comparison


def split_for_digest(chunks: Sequence[Chunk], lo: int, hi: int) -> DigestSplit:
    """Split source range [lo, hi) of an area into digest-checkable chunks and the rest.

    A chunk qualifies when it lies wholly inside the range and is either zeros or
    data with a SHA-256; a chunk cut by the range's ends, or one without a digest
    (other archive formats), goes to ``rest``. Bytes no chunk covers were never
    written and are not checked.
    """
    whole: list[Chunk] = []
    rest: list[SourceRange] = []
    for c in chunks:
        if c.stop <= lo or c.offset >= hi:
            continue
        a, b = max(c.offset, lo), min(c.stop, hi)
        if a == c.offset and b == c.stop and (c.kind == "zero" or c.digest is not None):
            whole.append(c)
        elif rest and rest[-1][1] == a:
            rest[-1] = (rest[-1][0], b)
        else:
            rest.append((a, b))
    return DigestSplit(tuple(whole), tuple(rest))


def _all_hole(fd: int, offset: int, length: int) -> bool:
    """True when an image file has no data at all in [offset, offset + length)."""
    try:
        data = os.lseek(fd, offset, os.SEEK_DATA)
    except OSError as exc:
        # ENXIO: nothing but a hole from here to the end of the file.
        return exc.errno == errno.ENXIO
    return data >= offset + length


def _zeros_ok(reader: MediumReader, offset: int, length: int, sparse_file: bool) -> bool:
    if sparse_file and _all_hole(reader.fd, offset, length):
        return True
    pos, stop = offset, offset + length
    while pos < stop:
        n = min(ZERO_READ, stop - pos)
        with reader.view(pos, n) as got:
            if not all_zeros(got):
                return False
        pos += n
    return True


def first_bad_chunk(
    reader: MediumReader,
    chunks: Sequence[Chunk],
    delta: int,
    *,
    sparse_file: bool = False,
    workers: int | None = None,
    on_chunk: Callable[[Chunk], None] | None = None,
    readback: Mapping[int, bytes] | None = None,
) -> Chunk | None:
    """The first chunk whose bytes at ``chunk.offset + delta`` on the medium do not match.

    Data chunks are read and hashed: by their read-back digest where ``readback``
    has one (by chunk offset, see :attr:`archive.base.Piece.readback`), else by the
    digest the manifest records. Zero chunks must read as zeros (for an image file,
    a hole is zeros without a read). Reading and hashing both release the GIL, so a
    few threads keep the disk and the cores busy together; at most a few chunks are
    in memory at once.
    """
    n_workers = workers or default_workers()
    quick = readback or {}

    def matches(c: Chunk, data: memoryview) -> bool:
        expected = quick.get(c.offset)
        if expected is None:
            return chunk_matches(c, data)
        return len(data) == c.length and readback_digest(data) == expected

    def check(run: list[Chunk]) -> list[tuple[Chunk, bool]]:
        first = run[0]
        if first.kind == "zero":
            return [(first, _zeros_ok(reader, first.offset + delta, first.length, sparse_file))]
        with reader.view(first.offset + delta, run[-1].stop - first.offset) as data:
            return [(c, matches(c, data[c.offset - first.offset : c.stop - first.offset]))
                    for c in run]  # fmt: skip

    results = ordered_map(
        check, read_runs(chunks), workers=n_workers, in_flight=n_workers + 2, name="read-back"
    )
    try:
        for run in results:
            for chunk, ok in run:
                if not ok:
                    return chunk
                if on_chunk is not None:
                    on_chunk(chunk)
    finally:
        results.close()
    return None


def read_runs(chunks: Sequence[Chunk], span: int = READ_BACK_SPAN) -> Iterator[list[Chunk]]:
    """``chunks`` in order, as the runs read back in one request each: data chunks that
    follow one another, up to ``span`` bytes together (a longer chunk alone); each zero
    chunk alone (it is checked without a read where it is a hole)."""
    run: list[Chunk] = []
    for c in chunks:
        joins = (
            run
            and c.kind != "zero"
            and c.offset == run[-1].stop
            and c.stop - run[0].offset <= span
        )
        if run and not joins:
            yield run
            run = []
        run.append(c)
        if c.kind == "zero":
            yield run
            run = []
    if run:
        yield run


def check_copy(
    reader: MediumReader,
    chunks: Sequence[Chunk],
    delta: int,
    src_lo: int,
    src_hi: int,
    slow: Callable[[int, int], int | None],
    *,
    sparse_file: bool = False,
    workers: int | None = None,
) -> int | None:
    """First target byte of source range [src_lo, src_hi) that did not read back right.

    Target byte = source byte + ``delta``. Whole chunks are checked by digest;
    ``slow(target_lo, target_hi)`` (a byte comparison against decompressed data)
    checks the cut ends and chunks without a digest, and finds the exact byte
    inside a chunk whose digest did not match.
    """
    split = split_for_digest(chunks, src_lo, src_hi)
    bad = first_bad_chunk(reader, split.chunks, delta, sparse_file=sparse_file, workers=workers)
    # Report the lowest bad byte: a cut range before the bad chunk comes first.
    for a, b in split.rest:
        if bad is not None and a >= bad.offset:
            break
        found = slow(a + delta, b + delta)
        if found is not None:
            return found
    if bad is not None:
        exact = slow(bad.offset + delta, bad.stop + delta)
        # The digest says it differs even if a re-read happens to agree (a flaky disk).
        return exact if exact is not None else bad.offset + delta
    return None


def _all_returned(writes: Sequence[Future[None]]) -> None:
    """Wait for every write in ``writes``; the first that failed raises its OSError."""
    for write in writes:
        write.result()


class ReadBackMismatch(Exception):
    """A chunk read back from the target differs from what the backup holds."""

    def __init__(self, chunk: Chunk) -> None:
        super().__init__(f"chunk at source byte {chunk.offset} read back different")
        self.chunk = chunk


class ReadBehind:
    """The read-back check of one restored area, running behind its writes.

    The writer reports how far it has written (:meth:`written_to`, a source offset;
    ``writes_under_way`` gives the writes it has sent on and not seen return).
    Once a batch of whole chunks lies below that point, it is read back from the medium
    (``reader``: direct reads, or a flush and eviction first where the target cannot do
    them) and checked by digest on a background thread, while the writer goes on: that
    thread waits for the writes under way when the batch was handed over, the writer
    does not (it keeps the disk busy with the next ones meanwhile). At
    most ``in_flight`` batches wait, so memory stays bounded and the check never falls
    far behind. A batch that differs raises :class:`ReadBackMismatch`
    in the writer's thread at its next report (or at :meth:`finish`).

    Only whole chunks with a digest (or zeros) that start at or after ``src_lo`` are
    checked here; :attr:`checked` lists the target ranges that read back equal, and
    whatever it does not list (a chunk cut by the area's ends or by a resume point, a
    chunk without a digest) is left to the check at the end of the stage.
    """

    def __init__(
        self,
        reader: MediumReader,
        chunks: Sequence[Chunk],
        delta: int,
        src_lo: int,
        src_hi: int,
        *,
        sparse_file: bool = False,
        batch: int = 32 * 1024 * 1024,
        in_flight: int = 2,
        writes_under_way: Callable[[], Sequence[Future[None]]] | None = None,
    ) -> None:
        self._reader, self._delta, self._sparse = reader, delta, sparse_file
        self._writes_under_way = writes_under_way
        self._chunks = [
            c
            for c in chunks
            if c.offset >= src_lo and c.stop <= src_hi and (c.kind == "zero" or c.digest)
        ]
        self._next = 0  # the first chunk not handed to the checker yet
        # Read-back digests of the pieces written (by source offset) until their batch goes.
        self._readback: dict[int, bytes] = {}
        self._src_lo = src_lo
        self._batch, self._in_flight = batch, in_flight
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-back")
        self._pending: deque[tuple[list[Chunk], Future[Chunk | None]]] = deque()
        self.checked: list[tuple[int, int]] = []

    def will_write(self, piece: Piece) -> None:
        """``piece`` is about to be written: keep its read-back digest for its chunk."""
        if piece.readback is not None and piece.offset >= self._src_lo:
            self._readback[piece.offset] = piece.readback

    def written_to(self, src_pos: int) -> None:
        """Everything below source offset ``src_pos`` is written (not yet flushed)."""
        self._collect_done()
        end, held = self._next, 0
        while end < len(self._chunks) and self._chunks[end].stop <= src_pos:
            held += self._chunks[end].length
            end += 1
        if held >= self._batch:
            self._submit(end)

    def finish(self) -> None:
        """Check what is left and wait for every batch; the area is completely written."""
        if self._next < len(self._chunks):
            self._submit(len(self._chunks))
        while self._pending:
            self._collect_oldest()

    def close(self) -> None:
        """Stop checking (after :meth:`finish`, or when the restore stops early)."""
        for _batch, future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)

    def _submit(self, end: int) -> None:
        batch = self._chunks[self._next : end]
        self._next = end
        first, last = batch[0], batch[-1]
        writes = list(self._writes_under_way()) if self._writes_under_way is not None else []
        if not self._reader.direct:
            # The range is flushed and evicted before it is read: its writes return first.
            _all_returned(writes)
            writes = []
        self._reader.settle(first.offset + self._delta, last.stop - first.offset)
        quick = {c.offset: d for c in batch if (d := self._readback.pop(c.offset, None))}

        def check() -> Chunk | None:
            # A write that failed raises its error here: the batch was not checked, and
            # the restore stops for the write (not for a difference it did not see).
            _all_returned(writes)
            return first_bad_chunk(
                self._reader, batch, self._delta, sparse_file=self._sparse, readback=quick
            )

        future = self._pool.submit(check)
        self._pending.append((batch, future))
        while len(self._pending) > self._in_flight:
            self._collect_oldest()

    def _collect_done(self) -> None:
        while self._pending and self._pending[0][1].done():
            self._collect_oldest()

    def _collect_oldest(self) -> None:
        batch, future = self._pending.popleft()
        bad = future.result()
        if bad is not None:
            raise ReadBackMismatch(bad)
        for c in batch:
            lo, hi = c.offset + self._delta, c.stop + self._delta
            if self.checked and self.checked[-1][1] == lo:
                self.checked[-1] = (self.checked[-1][0], hi)
            else:
                self.checked.append((lo, hi))

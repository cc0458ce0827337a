"""``restore-tui`` with the proposed digest read-back check (restore_tui.datapath) hooked in.

Runs the real command line; only the engine's per-range check is replaced, the way
the engine would call ``datapath.check_copy`` from ``_mismatch_in``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from layout.plan import Action
from restore_tui import datapath
from restore_tui.commands import restore as restore_command
from restore_tui.engine import RestoreEngine
from restore_tui.writer import CheckedWriter


class DigestCheckEngine(RestoreEngine):
    """The engine, with copies read back and checked against the manifest's digests."""

    def _mismatch_in(self, writer: CheckedWriter, action: Action, lo: int, hi: int) -> int | None:
        chunks = self._area_chunks(action.area) if action.kind == "restore-area" else None
        if chunks is None or action.source_offset is None:
            return super()._mismatch_in(writer, action, lo, hi)
        delta = action.offset - action.source_offset

        def slow(a: int, b: int) -> int | None:
            return RestoreEngine._mismatch_in(self, writer, action, a, b)

        return datapath.check_copy(
            writer.fd, chunks, delta, lo - delta, hi - delta, slow,
            sparse_file=not writer.is_block_device,
        )  # fmt: skip


def main() -> int:
    from restore_tui.cli import main as cli_main

    restore_command.RestoreEngine = DigestCheckEngine  # type: ignore[misc]
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())

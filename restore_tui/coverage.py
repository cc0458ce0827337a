"""What of a backup no checksum covers, in words: `verify` and the restore preview say it.

Clonezilla keeps no checksum for the boot code, the space before the first partition
and the extended boot records; such bytes are restored as stored, so a person is told.
"""

from __future__ import annotations

from archive.base import Archive, Unchecked
from archive.roles import plain_name
from layout.notices import Notice, notice
from layout.units import human_size

# Who keeps no checksum, for the sentence that says so.
_MAKERS = {"Clonezilla image": "Clonezilla", "partclone image": "partclone"}


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _partition_words(arc: Archive, number: int | None) -> str:
    assert number is not None
    try:
        image = arc.manifest.image(number)
        entry = arc.manifest.table.partition(number)
    except KeyError:
        return f"partition {number}"
    return f"partition {number} ({plain_name(image.role, entry.filesystem)})"


def unchecked_lines(arc: Archive, unchecked: tuple[Unchecked, ...] | None = None) -> list[str]:
    """One sentence for the areas the format keeps no checksum for, one per such partition."""
    items = arc.unchecked() if unchecked is None else unchecked
    maker = _MAKERS.get(arc.format_name, "this kind of backup")
    areas: list[str] = []
    notes: list[str] = []
    for item in items:
        if item.area == "boot-code":
            areas.append("the boot code")
            notes.append("the boot code is the start-up code in the disk's first sector")
        elif item.area == "track0":
            areas.append(
                f"the {human_size(arc.manifest.boot.track0_stop)} before the first partition"
            )
            notes.append("the space before the first partition can hold more start-up code")
        elif item.area == "ebrs":
            areas.append("the records that link the logical partitions")
    lines: list[str] = []
    if areas:
        them = "it" if len(areas) == 1 else "them"
        these = "this" if len(areas) == 1 else "these"
        line = (
            f"Not covered by any checksum: {_join(areas)} ({maker} keeps no checksum for "
            f"{these}); restore-tui restores {them} as stored."
        )
        if notes:
            note = "; ".join(notes)
            line += f" {note[0].upper()}{note[1:]}."
        lines.append(line)
    for item in items:
        if item.area != "partition":
            continue
        what = _partition_words(arc, item.partition)
        if item.reason == "raw-copy":
            why = f"it was saved as a raw copy, which {maker} keeps no checksum for"
        else:
            why = "its image carries no checksums"
        lines.append(
            f"Not covered by any checksum: the data of {what}, because {why}; restore-tui "
            "restores it as stored."
        )
    return lines


def unchecked_notices(arc: Archive, partition: int | None = None) -> list[Notice]:
    """The same sentences as typed notices for a plan (code "not-checksummed"): of the
    whole backup, or of the one ``partition`` a one-partition restore writes."""
    items = tuple(
        u for u in arc.unchecked() if partition is None or u.partition == partition
    )
    return [notice("not-checksummed", line) for line in unchecked_lines(arc, items)]

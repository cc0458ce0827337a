"""A restore plan as data: the target it was made for, then ordered stages of actions.

The same object feeds the preview, `plan --json` and the engine. Every action
carries its exact byte extent on the target; the engine writes nowhere else.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal, Protocol

from pydantic import Field, TypeAdapter, model_validator

from layout.models import DiskIdentity, Frozen, PartitionTable
from layout.notices import Notice

HexBytes = Annotated[str, Field(pattern=r"^([0-9a-f]{2})*$")]
NonNegative = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(gt=0)]

class ActionRunner(Protocol):
    """What executes actions (the engine's writer side); each action calls its own verb."""

    def write_bytes(self, action: WriteBytes, start_done: int) -> None: ...

    def restore_area(self, action: RestoreArea, start_done: int) -> None: ...

    def zero_range(self, action: ZeroRange, start_done: int) -> None: ...

    def grow_filesystem(self, action: GrowFilesystem, start_done: int) -> None: ...


class ActionChecker(Protocol):
    """What reads actions back from the target: the first byte in [lo, hi) that differs."""

    def bytes_mismatch(self, action: WriteBytes, lo: int, hi: int) -> int | None: ...

    def area_mismatch(self, action: RestoreArea, lo: int, hi: int) -> int | None: ...

    def zeros_mismatch(self, action: ZeroRange, lo: int, hi: int) -> int | None: ...

    def filesystem_mismatch(self, action: GrowFilesystem, lo: int, hi: int) -> int | None: ...


class _ActionBase(Frozen):
    offset: NonNegative = Field(description="Byte offset on the target disk")
    length: Positive = Field(description="Bytes written, starting at offset")
    description: str = Field(description="What this does, in plain words")

    @property
    def stop(self) -> int:
        return self.offset + self.length


class WriteBytes(_ActionBase):
    """Write the inline ``data``: table structures, boot code, a patched boot-sector field."""

    kind: Literal["write-bytes"] = "write-bytes"
    data: HexBytes

    @model_validator(mode="after")
    def _check(self) -> WriteBytes:
        if len(self.data) // 2 != self.length:
            raise ValueError("write-bytes needs data exactly `length` bytes long")
        return self

    @property
    def payload(self) -> bytes:
        return bytes.fromhex(self.data)

    def execute(self, runner: ActionRunner, start_done: int) -> None:
        runner.write_bytes(self, start_done)

    def first_mismatch(self, checker: ActionChecker, lo: int, hi: int) -> int | None:
        return checker.bytes_mismatch(self, lo, hi)


class RestoreArea(_ActionBase):
    """Copy stored data of an archive area ("track0" or a partition number) onto the target:
    source bytes [source_offset, source_offset + length) land at [offset, offset + length)."""

    kind: Literal["restore-area"] = "restore-area"
    area: Literal["track0"] | Annotated[int, Field(ge=1)]
    source_offset: NonNegative

    def execute(self, runner: ActionRunner, start_done: int) -> None:
        runner.restore_area(self, start_done)

    def first_mismatch(self, checker: ActionChecker, lo: int, hi: int) -> int | None:
        return checker.area_mismatch(self, lo, hi)


class ZeroRange(_ActionBase):
    """Write zeros over [offset, offset + length): stale GPT copies, wiped signatures."""

    kind: Literal["zero"] = "zero"

    def execute(self, runner: ActionRunner, start_done: int) -> None:
        runner.zero_range(self, start_done)

    def first_mismatch(self, checker: ActionChecker, lo: int, hi: int) -> int | None:
        return checker.zeros_mismatch(self, lo, hi)


GrowableFs = Literal["ext2", "ext3", "ext4", "ntfs"]


class GrowFilesystem(_ActionBase):
    """Grow the filesystem of the partition at [offset, offset + length) to fill it, with
    the filesystem's own tool (resize2fs, ntfsresize). The tool is given a device that
    is exactly this extent, so it cannot write anywhere else."""

    kind: Literal["grow-filesystem"] = "grow-filesystem"
    filesystem: GrowableFs
    from_length: Positive = Field(description="The filesystem's size before, in bytes")

    def execute(self, runner: ActionRunner, start_done: int) -> None:
        runner.grow_filesystem(self, start_done)

    def first_mismatch(self, checker: ActionChecker, lo: int, hi: int) -> int | None:
        return checker.filesystem_mismatch(self, lo, hi)


Action = Annotated[
    WriteBytes | RestoreArea | ZeroRange | GrowFilesystem, Field(discriminator="kind")
]
ACTION = TypeAdapter(Action)


def parse_action(
    fields: dict[str, object],
) -> WriteBytes | RestoreArea | ZeroRange | GrowFilesystem:
    """An action from plain fields (``kind`` picks its class)."""
    return ACTION.validate_python(fields)


class Stage(Frozen):
    name: str = Field(description="Stable id: 'table', 'reserved', 'system', 'partition-N'")
    title: str = Field(description="Plain-language title shown to the user")
    explanation: str = ""
    actions: tuple[Action, ...]

    @property
    def bytes_to_write(self) -> int:
        return sum(a.length for a in self.actions)


class TargetRef(Frozen):
    """The disk a plan was made for, as it was when planned."""

    device: str = Field(description="/dev path or image file at planning time")
    name: str = Field(description="The disk in words (model · size · serial) when planned")
    identity: DiskIdentity
    table_fingerprint: str = Field(description="SHA-256 of the target's table as probed")


class ArchiveRef(Frozen):
    path: str = Field(description="Where the backup was when planned (a copy elsewhere works)")
    identity: str = Field(description="The backup's content identity (``Archive.identity()``)")


Job = Literal["full-disk", "one-partition", "replace-partition"]


class PlanChoices(Frozen):
    """What the person chose; with the backup and the disk as they are, it makes the plan."""

    job: Job
    partition: Annotated[int, Field(ge=1)] | None = None
    region: NonNegative | None = Field(
        default=None, description="A sector inside the free space to use (one partition)"
    )
    new_ids: bool = False
    grow: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Whole disk: the partition grown into the space after it"
    )
    id_seed: NonNegative | None = Field(
        default=None, description="Seed of any new identifiers, so planning again repeats them"
    )


class Plan(Frozen):
    schema_version: Literal[2] = 2
    choices: PlanChoices
    archive: ArchiveRef
    target: TargetRef
    before: PartitionTable | None = Field(description="The target's table now (None: blank)")
    after: PartitionTable
    stages: tuple[Stage, ...]
    warnings: tuple[Notice, ...] = ()
    erases: str = Field(default="", description="What will be destroyed, in plain words")

    @property
    def job(self) -> Job:
        return self.choices.job

    @property
    def new_ids(self) -> bool:
        return self.choices.new_ids

    def digest(self) -> str:
        """A stable fingerprint: the checkpoint journal refuses a different plan."""
        return hashlib.sha256(canonical_json(self).encode()).hexdigest()

    def write_extents(self) -> list[tuple[int, int]]:
        """Every [start, stop) the plan may write, merged and sorted."""
        spans = sorted((a.offset, a.stop) for s in self.stages for a in s.actions)
        merged: list[tuple[int, int]] = []
        for start, stop in spans:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
            else:
                merged.append((start, stop))
        return merged

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.model_validate_json(text)


def canonical_json(model: Frozen) -> str:
    return json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

"""A restore plan as data: the target it was made for, then ordered stages of actions.

The same object feeds the preview, `plan --json` and the engine. Every action
carries its exact byte extent on the target; the engine writes nowhere else.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import Field, model_validator

from layout.models import DiskIdentity, Frozen, PartitionTable

HexBytes = Annotated[str, Field(pattern=r"^([0-9a-f]{2})*$")]
NonNegative = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(gt=0)]

ActionKind = Literal[
    # write the inline ``data`` (table structures, boot code, a patched field)
    "write-bytes",
    # copy stored data of an archive area onto the target; ``area`` is "track0"
    # or a partition number, source bytes [source_offset, source_offset+length)
    # land at [offset, offset+length)
    "restore-area",
    # write zeros over [offset, offset+length) (stale GPT copies, wiped signatures)
    "zero",
]


class Action(Frozen):
    kind: ActionKind
    offset: NonNegative = Field(description="Byte offset on the target disk")
    length: Positive = Field(description="Bytes written, starting at offset")
    description: str = Field(description="What this does, in plain words")
    data: HexBytes | None = None
    area: Literal["track0"] | Annotated[int, Field(ge=1)] | None = None
    source_offset: NonNegative | None = None

    @property
    def stop(self) -> int:
        return self.offset + self.length

    @model_validator(mode="after")
    def _check(self) -> Action:
        if self.kind == "write-bytes":
            if self.data is None or len(self.data) // 2 != self.length:
                raise ValueError("write-bytes needs data exactly `length` bytes long")
        elif self.data is not None:
            raise ValueError(f"{self.kind} carries no inline data")
        if self.kind == "restore-area" and (self.area is None or self.source_offset is None):
            raise ValueError("restore-area needs the archive area and its source offset")
        return self


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
    identity: DiskIdentity
    table_fingerprint: str = Field(description="SHA-256 of the target's table as probed")


class ArchiveRef(Frozen):
    path: str
    manifest_digest: str = Field(description="SHA-256 of the archive manifest's canonical JSON")


class Plan(Frozen):
    schema_version: Literal[1] = 1
    job: Literal["full-disk", "one-partition"]
    archive: ArchiveRef
    target: TargetRef
    before: PartitionTable | None = Field(description="The target's table now (None: blank)")
    after: PartitionTable
    stages: tuple[Stage, ...]
    new_ids: bool = False
    warnings: tuple[str, ...] = ()
    erases: str = Field(default="", description="What will be destroyed, in plain words")

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

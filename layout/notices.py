"""Warnings, blockers, refusals and notes as typed values: a stable code, its facts, and
the command line's wording.

Front-ends decide by ``code`` (the wizard words some notices its own way, ``--json``
prints the codes); nobody searches the sentence for words.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import Field

from layout.models import Frozen

Param = str | int


class Notice(Frozen):
    """One thing to tell a person: ``code`` says what it is, ``text`` says it in words."""

    code: str = Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")
    text: str
    params: dict[str, Param] = Field(default_factory=dict)

    def __str__(self) -> str:
        return self.text


def notice(code: str, text: str, **params: Param) -> Notice:
    return Notice(code=code, text=text, params=params)


def codes(notices: Iterable[Notice]) -> list[str]:
    return [n.code for n in notices]


def joined(notices: Iterable[Notice], sep: str = "; ") -> str:
    return sep.join(n.text for n in notices)

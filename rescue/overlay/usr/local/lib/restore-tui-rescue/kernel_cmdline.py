"""One parameter's value from the kernel command line, split the way the kernel does.

    python3 kernel_cmdline.py restore_tui.run < /proc/cmdline

prints the value of ``restore_tui.run=`` (exit 1 when it is absent). ``/proc/cmdline``
keeps the quotes the boot loader passed, and the value of ``restore_tui.run="…"`` is a
shell command with spaces, so the split follows the kernel's own rule (``next_arg`` in
lib/cmdline.c) rather than a shell's: a double quote toggles quoting, whitespace outside
quotes ends a parameter, and one pair of quotes around the value is removed; backslashes
and single quotes mean nothing to it.
"""

from __future__ import annotations

import sys


def split(cmdline: str) -> list[tuple[str, str | None]]:
    """Every ``(name, value)`` on the command line, in order; ``value`` is None for a
    bare word (``quiet``) and ``""`` for ``name=``."""
    params: list[tuple[str, str | None]] = []
    text = cmdline.strip()
    i = 0
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        start = i
        quoted = text[i] == '"'
        if quoted:
            start += 1
            i += 1
        in_quote = quoted
        equals = -1
        while i < len(text):
            char = text[i]
            if char.isspace() and not in_quote:
                break
            if equals < 0 and char == "=":
                equals = i
            if char == '"':
                in_quote = not in_quote
            i += 1
        end = i  # one past the parameter's last character
        # The quote closing a value, or a parameter that began with a quote, is dropped
        # once (the kernel overwrites it with the string's end, so never twice).
        closing_dropped = False
        if equals < 0:
            name, value = text[start:end], None
        else:
            name, value = text[start:equals], text[equals + 1 : end]
            if value.startswith('"'):
                value = value[1:]
                if value.endswith('"'):
                    value, closing_dropped = value[:-1], True
        if quoted and not closing_dropped:
            if value is not None and value.endswith('"'):
                value = value[:-1]
            elif value is None and name.endswith('"'):
                name = name[:-1]
        params.append((name, value))
        i = end + 1
    return params


def value(cmdline: str, name: str) -> str | None:
    """The value of the last ``name=…`` on the command line (the kernel's and systemd's
    rule: a later one wins), or None when there is none."""
    found = None
    for key, val in split(cmdline):
        if key == name and val is not None:
            found = val
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: kernel_cmdline.py NAME < /proc/cmdline", file=sys.stderr)
        return 2
    found = value(sys.stdin.read(), argv[1])
    if found is None:
        return 1
    print(found)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

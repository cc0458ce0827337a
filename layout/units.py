"""Sizes in the units people see on disks and in disk tools ("931.5 GiB")."""

from __future__ import annotations


def human_size(n_bytes: float) -> str:
    """Binary units with one decimal: "512 bytes", "64.0 MiB", "931.5 GiB"."""
    value = float(n_bytes)
    if value < 1024:
        return "1 byte" if int(value) == 1 else f"{int(value)} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"

"""Text for people and for scripts: sizes, ages, rates, tables, JSON, and line output."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["format_age", "format_bytes", "format_rate", "format_slots", "note",
           "render_table", "to_json", "write_line"]


def format_bytes(count: float) -> str:
    """``1536`` -> ``"1.5 KiB"``: binary units, three significant digits."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            if unit == "B":
                return f"{value:.0f} B"
            return f"{value:.3g} {unit}" if abs(value) >= 1 else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_age(seconds: float | None) -> str:
    """How long ago, compactly: ``"0.4 ms"``, ``"12 s"``, ``"3 h"``; ``"-"`` for never."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def format_rate(hertz: float | None) -> str:
    """``999.98`` -> ``"1000 Hz"``; ``"-"`` when unknown."""
    if hertz is None:
        return "-"
    return f"{hertz:.4g} Hz" if hertz >= 0.01 else "0 Hz"


def format_slots(info: dict[str, Any]) -> str:
    """``"64 x 4 KiB"``: ring depth times slot payload capacity."""
    return f"{info['num_slots']} x {format_bytes(info['slot_size'])}"


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                 right: frozenset[int] = frozenset()) -> list[str]:
    """Columns padded to their widest cell; column indexes in ``right`` are right-aligned."""
    widths = [max([len(header[i])] + [len(r[i]) for r in rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(parts).rstrip()

    return [line(header), *(line(r) for r in rows)]



def to_json(obj: Any) -> str:
    """``obj`` as compact JSON; NaN and infinities are refused (they are not JSON)."""
    return json.dumps(obj, allow_nan=False, separators=(",", ":"))


def write_line(text: str = "") -> None:
    """Print a line and flush, so pipes and ``| grep`` see streaming output at once."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def note(text: str) -> None:
    """A ``shm-comm: ...`` line on stderr (progress and warnings, not data)."""
    sys.stderr.write(f"shm-comm: {text}\n")
    sys.stderr.flush()

"""Durations as people write them in policy and config files: `90`, `"30s"`, `"2m"`, `"1h"`, `"1d"`."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: object) -> float:
    """Seconds from a number (seconds) or a string like `"250ms"`, `"30s"`, `"2m"`, `"1h"`, `"1d"`.

    Raises ValueError with a hint when the value is neither, or is negative.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (use a number of seconds or '30s', '2m', '1h')")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"duration {value!r} is negative")
        return float(value)
    if isinstance(value, str):
        m = _RE.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2) or "s"]
    raise ValueError(f"{value!r} is not a duration (use a number of seconds or '30s', '2m', '1h')")


def format_duration(seconds: float) -> str:
    """A short human form: `45s`, `2m`, `1m30s`, `2h`, `1d`."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            q, r = divmod(s, size)
            return f"{q}{unit}" + (format_duration(r) if r else "")
    return f"{s}s"

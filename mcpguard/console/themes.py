"""Console themes as files: `*.toml` theme files loaded as Textual themes.

The built-in themes (dark, light, high-contrast) are package data,
`mcpguard.themes` (the repository's `themes/` folder), read through
`importlib.resources` so an installed wheel finds them as an editable
install does; a person's own themes go in `~/.config/mcpguard/themes/`.

A theme file holds Textual's theme colors (`name`, `dark`, `primary`,
`secondary`, `accent`, `foreground`, `background`, `surface`, `panel`,
`success`, `warning`, `error`) and a `[variables]` table of extra CSS
variables. The console reads `risk-low`, `risk-medium`, `risk-high`,
`risk-critical`, `gauge-ok` and `pending` from it; a theme that leaves one out
gets the fallback in `RISK_FALLBACK`.
"""

from __future__ import annotations

import tomllib
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from textual.theme import Theme

#: Where themes are looked up, in order; a later theme with the same `name` wins.
#: The first is the package's own folder (a `Traversable`: a plain folder for a
#: wheel or an editable install, a folder inside a zip for a zipped install).
THEME_DIRS: tuple[Traversable, ...] = (
    files("mcpguard.themes"),
    Path.home() / ".config" / "mcpguard" / "themes",
)

DEFAULT_THEME = "mcpguard-dark"

RISK_FALLBACK = {
    "risk-low": "#5faf5f",
    "risk-medium": "#d7af5f",
    "risk-high": "#ff875f",
    "risk-critical": "#ff5f87",
    "gauge-ok": "#5fafff",
    "pending": "#ffd75f",
}

_COLOR_KEYS = ("primary", "secondary", "accent", "foreground", "background",
               "surface", "panel", "boost", "success", "warning", "error")


class ThemeFileError(ValueError):
    """A theme file that cannot be read; the message names the file."""


def theme_from_toml(path: Traversable) -> Theme:
    """Read one theme file (a `Path` or an `importlib.resources` `Traversable`) into a `Theme`.

    Raises `ThemeFileError` (file name and reason) on a file that cannot be
    read, is not UTF-8, is bad TOML, or lacks a string `name`/`primary`.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ThemeFileError(f"{path}: {exc}") from exc
    if not isinstance(data.get("name"), str) or not isinstance(data.get("primary"), str):
        raise ThemeFileError(f"{path}: a theme needs string keys 'name' and 'primary'")
    variables = {**RISK_FALLBACK, **{str(k): str(v) for k, v in data.get("variables", {}).items()}}
    colors = {k: str(data[k]) for k in _COLOR_KEYS if k in data}
    return Theme(name=data["name"], dark=bool(data.get("dark", True)), variables=variables, **colors)


def load_themes(dirs: tuple[Traversable, ...] | None = None) -> tuple[list[Theme], list[str]]:
    """All themes in the `*.toml` files of `dirs` (default `THEME_DIRS`), and the errors of files that failed.

    `dirs` are `Path`s or `Traversable`s; a missing folder is skipped. Returns
    `(themes, errors)`, each error a `file: reason` string.
    """
    themes: dict[str, Theme] = {}
    errors: list[str] = []
    for d in THEME_DIRS if dirs is None else dirs:
        if not d.is_dir():
            continue
        try:  # Traversable has no glob(): filter iterdir() by suffix, in name order as glob gave
            found = sorted((p for p in d.iterdir() if p.name.endswith(".toml") and p.is_file()),
                           key=lambda p: p.name)
        except OSError as exc:  # an unreadable theme folder costs its themes, never the console
            errors.append(f"{d}: {exc}")
            continue
        for path in found:
            try:
                t = theme_from_toml(path)
            except ThemeFileError as exc:
                errors.append(str(exc))
                continue
            themes[t.name] = t
    return list(themes.values()), errors


def resolve_theme_name(name: str, available: list[str]) -> str | None:
    """Accept `dark` for `mcpguard-dark` as well as full names; None if unknown."""
    for cand in (name, f"mcpguard-{name}"):
        if cand in available:
            return cand
    return None

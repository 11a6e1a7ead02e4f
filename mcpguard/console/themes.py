"""Console themes as files: `*.toml` theme files loaded as Textual themes.

The built-in themes (dark, light, high-contrast) are package data,
`mcpguard.themes` (the repository's `themes/` folder), read through
`importlib.resources` so an installed wheel finds them as an editable
install does; a person's own themes go in `~/.config/mcpguard/themes/`.

A theme file holds Textual's theme colors (`name`, `dark`, `primary`,
`secondary`, `accent`, `foreground`, `background`, `surface`, `panel`,
`success`, `warning`, `error`) and a `[variables]` table of extra CSS
variables. The console reads `risk-low`, `risk-medium`, `risk-high`,
`risk-critical`, `gauge-ok` and `pending` from it (`CONSOLE_VARIABLES`).
Every other theme the console offers (Textual's own, in the command
palette) and a theme file that leaves one out get them from
`risk_variables`, derived from the theme's own palette: its success, warning
and error colors where their hue says which risk they stand for, the rest
made in the theme's saturation and lightness; all four readable on the
theme's surface and distinct from each other.

Theme variables are Textual colors (`#5faf5f`, `ansi_green`, `#ffffff80`);
Rich, which draws the text, knows only some of those spellings, so widgets
read a variable as a Rich color through `theme_color`.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from functools import lru_cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from textual.color import Color, ColorParseError, rgb_to_lab
from textual.theme import Theme

from mcpguard.policy import RISK_LEVELS

#: Where themes are looked up, in order; a later theme with the same `name` wins.
#: The first is the package's own folder (a `Traversable`: a plain folder for a
#: wheel or an editable install, a folder inside a zip for a zipped install).
THEME_DIRS: tuple[Traversable, ...] = (
    files("mcpguard.themes"),
    Path.home() / ".config" / "mcpguard" / "themes",
)

DEFAULT_THEME = "mcpguard-dark"

#: The theme variables the console's widgets read beyond Textual's own.
CONSOLE_VARIABLES = ("risk-low", "risk-medium", "risk-high", "risk-critical", "gauge-ok", "pending")

#: Where each risk sits on the color wheel, in degrees: (the hue made when the theme
#: has none, the lowest and highest hue a theme color may have to stand for it).
#: Green to red through yellow and orange, as traffic lights read; critical wraps
#: through 0 toward magenta.
RISK_HUES: dict[str, tuple[float, float, float]] = {
    "low": (130.0, 60.0, 170.0),
    "medium": (48.0, 36.0, 60.0),
    "high": (24.0, 12.0, 36.0),
    "critical": (350.0, 320.0, 372.0),
}

#: Risk colors of themes drawn in the terminal's own 16 colors (Textual's `ansi-*`):
#: named colors, which the terminal's palette keeps apart.
ANSI_RISK = {
    "risk-low": "ansi_green",
    "risk-medium": "ansi_yellow",
    "risk-high": "ansi_red",
    "risk-critical": "ansi_magenta",
    "gauge-ok": "ansi_blue",
    "pending": "ansi_yellow",
}

#: Two risk colors closer than this (CIE76 delta E) are taken for the same at a glance.
MIN_RISK_DISTANCE = 20.0
#: Contrast (WCAG ratio) each risk color keeps against the theme's surface.
MIN_RISK_CONTRAST = 3.0

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
    variables = {str(k): str(v) for k, v in data.get("variables", {}).items()}
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


# -- colors ---------------------------------------------------------------------------
@lru_cache(maxsize=256)
def rich_color(value: str) -> str:
    """A theme variable's color (any Textual spelling) as a color Rich parses, or '' when it is no color.

    `ansi_green` -> `color(2)`, `ansi_default` -> `default`, `#5faf5f80` -> `#5faf5f`
    (Rich has no alpha; the color is drawn opaque).
    """
    try:
        return Color.parse(value).rich_color.name
    except ColorParseError:
        return ""


def theme_color(widget: Any, name: str, fallback: str = "") -> str:
    """A color of the app's current theme variables (`risk-high`, `warning`, ...) as a Rich color string.

    `fallback` (a Rich color, or '') when the variable is missing or not a color,
    or the widget is not in an app yet.
    """
    try:
        value = widget.app.theme_variables.get(name)
    except Exception:  # noqa: BLE001 - not mounted (no active app): the fallback
        return fallback
    return (rich_color(value) if value else "") or fallback


def _relative_luminance(c: Color) -> float:
    def channel(v: int) -> float:
        x = v / 255
        return x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(c.r) + 0.7152 * channel(c.g) + 0.0722 * channel(c.b)


def contrast_ratio(a: Color, b: Color) -> float:
    """WCAG contrast ratio of two colors, 1 (the same) to 21 (black on white)."""
    hi, lo = sorted((_relative_luminance(a), _relative_luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def color_distance(a: Color, b: Color) -> float:
    """How far apart two colors look: CIE76 delta E in L*a*b* (about 2.3 is just noticeable)."""
    return math.dist(rgb_to_lab(a), rgb_to_lab(b))


def _hue_in(hue: float, lo: float, hi: float) -> bool:
    return lo <= hue <= hi or lo <= hue + 360 <= hi


def _hue_gap(a: float, b: float) -> float:
    d = abs(a - b) % 360
    return min(d, 360 - d)


def _readable(c: Color, surface: Color, dark: bool) -> Color:
    """`c` made lighter (dark theme) or darker (light theme), hue and saturation kept, until it reads on `surface`."""
    h, s, lightness = c.hsl
    for _ in range(50):  # bounded: lightness reaches 0 or 1 well before
        if contrast_ratio(c, surface) >= MIN_RISK_CONTRAST:
            break
        lightness = min(1.0, lightness + 0.02) if dark else max(0.0, lightness - 0.02)
        c = Color.from_hsl(h, s, lightness)
    return c


def risk_variables(theme: Theme) -> dict[str, str]:
    """The console's variables (`CONSOLE_VARIABLES`) for `theme`, derived from its palette: name -> `#rrggbb`.

    Each risk takes the theme's success, warning or error color (or the blend of
    warning and error) whose hue lies in its range (`RISK_HUES`); a risk no theme
    color stands for is made at its hue in the theme's mean saturation and
    lightness. Each is then made readable on the theme's surface
    (`MIN_RISK_CONTRAST`), and two that look alike (`MIN_RISK_DISTANCE`) are
    moved apart, the made one first, in hue within their range and in
    lightness. `gauge-ok` is the primary color, `pending` the warning color.
    An `ansi` theme gets `ANSI_RISK`. Pure: never raises for a theme Textual accepts.
    """
    if theme.ansi:
        return dict(ANSI_RISK)
    system = theme.to_color_system().generate()
    surface = Color.parse(system["surface"])
    warning, error = Color.parse(system["warning"]), Color.parse(system["error"])
    palette = [Color.parse(system["success"]), warning, warning.blend(error, 0.5), error]
    saturation = max(0.45, sum(c.hsl.s for c in palette) / len(palette))
    lightness = sum(c.hsl.l for c in palette) / len(palette)
    chosen: dict[str, Color] = {}
    own: dict[str, bool] = {}
    taken: list[Color] = []
    for level in RISK_LEVELS:
        target, lo, hi = RISK_HUES[level]
        fits = [c for c in palette if c.hsl.s >= 0.3 and _hue_in(c.hsl.h * 360, lo, hi) and c not in taken]
        if fits:
            c = min(fits, key=lambda c: _hue_gap(c.hsl.h * 360, target))
            taken.append(c)
        else:
            c = Color.from_hsl(target / 360, saturation, lightness)
        own[level] = bool(fits)
        chosen[level] = _readable(c, surface, theme.dark)
    for _ in range(60):  # bounded: each round moves one color 6 degrees and 4% lightness
        gap, a, b = min((color_distance(chosen[a], chosen[b]), a, b)
                        for a, b in itertools.combinations(RISK_LEVELS, 2))
        if gap >= MIN_RISK_DISTANCE:
            break
        # move the color the theme did not give; of two alike, the inner one of the scale
        move = b if (own[a] and not own[b]) or (own[a] == own[b] and b in ("medium", "high")) else a
        other = a if move == b else b
        h, s, li = chosen[move].hsl
        away = 6 / 360 if (h - chosen[other].hsl.h) % 1.0 < 0.5 else -6 / 360
        _, lo, hi = RISK_HUES[move]
        nh = (h + away) % 1.0
        if not _hue_in(nh * 360, lo - 8, hi + 8):
            nh = h  # at the edge of its range: only the lightness moves
        nl = li + (0.04 if li >= chosen[other].hsl.l else -0.04)
        chosen[move] = _readable(Color.from_hsl(nh, s, min(0.9, max(0.15, nl))), surface, theme.dark)
        own[move] = False
    out = {f"risk-{level}": chosen[level].hex for level in RISK_LEVELS}
    out["gauge-ok"] = system["primary"]
    out["pending"] = system["warning"]
    return out

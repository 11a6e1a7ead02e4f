"""Where each key and array item of a policy file is written, as (line, col).

The parsers (tomlkit, json) tell where a syntax error is but not where a
well-formed value sits, and validation errors must name file, line and
column. So once a file parses, one scan of its text records the position of
every key (`("tools", "x", "limits", 0, "window")` -> `(12, 1)`).

Both scanners assume text their parser has already accepted; on anything
unexpected they stop and return what they found, and `locate` falls back to
the nearest enclosing key, then to 1:1.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right

Path = tuple[str | int, ...]

_WS = re.compile(r"[ \t]*")
_WS_NL = re.compile(r"(?:[ \t\r\n]|#[^\n]*)*")
_BARE = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR_END = re.compile(r"[,\]\}\r\n#]")
_JSON_WS = re.compile(r"[ \t\r\n]*")


def dotted(path: Path) -> str:
    """`("tools", "x", "limits", 0, "window")` -> `tools.x.limits[0].window` (keys that are not bare are quoted)."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            key = p if _BARE.fullmatch(p) else json.dumps(p)
            out += f".{key}" if out else key
    return out


class Positions:
    """Path -> (line, col), both 1-based."""

    def __init__(self, text: str):
        self._starts = [0] + [m.end() for m in re.finditer(r"\n", text)]
        self.at: dict[Path, tuple[int, int]] = {}
        self.duplicates: list[tuple[Path, tuple[int, int]]] = []

    def line_col(self, offset: int) -> tuple[int, int]:
        i = bisect_right(self._starts, offset) - 1
        return (i + 1, offset - self._starts[i] + 1)

    def record(self, path: Path, offset: int) -> None:
        if path not in self.at:
            self.at[path] = self.line_col(offset)

    def locate(self, path: Path) -> tuple[int, int]:
        """The position of `path`, else of its nearest recorded ancestor, else (1, 1)."""
        p = tuple(path)
        while p:
            if p in self.at:
                return self.at[p]
            p = p[:-1]
        return (1, 1)


# --- TOML --------------------------------------------------------------------


class _TomlScan:
    def __init__(self, text: str):
        self.t = text
        self.i = 0
        self.pos = Positions(text)
        self.aot: dict[Path, int] = {}

    def ws(self) -> None:
        self.i = _WS.match(self.t, self.i).end()

    def ws_nl(self) -> None:
        self.i = _WS_NL.match(self.t, self.i).end()

    def key(self) -> list[str]:
        parts: list[str] = []
        while True:
            self.ws()
            c = self.t[self.i : self.i + 1]
            if c in ('"', "'"):
                parts.append(self.string())
            else:
                m = _BARE.match(self.t, self.i)
                if not m:
                    raise ValueError("key expected")
                parts.append(m.group())
                self.i = m.end()
            self.ws()
            if self.t.startswith(".", self.i):
                self.i += 1
                continue
            return parts

    def string(self) -> str:
        t, i = self.t, self.i
        for q in ('"""', "'''"):
            if t.startswith(q, i):
                j = i + 3
                while True:
                    k = t.index(q, j)
                    if q == '"""' and _escaped(t, k):
                        j = k + 1
                        continue
                    # a closing run may be up to 5 quotes long
                    while t.startswith(q[0], k + 3):
                        k += 1
                    self.i = k + 3
                    return t[i + 3 : k]
        q = t[i]
        j = i + 1
        while True:
            k = t.index(q, j)
            if q == '"' and _escaped(t, k):
                j = k + 1
                continue
            self.i = k + 1
            raw = t[i : k + 1]
            if q == '"':
                try:
                    return json.loads(raw)
                except ValueError:
                    return raw[1:-1]
            return raw[1:-1]

    def value(self, path: Path) -> None:
        c = self.t[self.i : self.i + 1]
        if c == "{":
            self.i += 1
            while True:
                self.ws()
                if self.t.startswith("}", self.i):
                    self.i += 1
                    return
                start = self.i
                keys = self.key()
                self.record_keys(path, keys, start)
                self.ws()
                self.i += 1  # '='
                self.ws()
                self.value(path + tuple(keys))
                self.ws()
                if self.t.startswith(",", self.i):
                    self.i += 1
        elif c == "[":
            self.i += 1
            n = 0
            while True:
                self.ws_nl()
                if self.t.startswith("]", self.i):
                    self.i += 1
                    return
                self.pos.record(path + (n,), self.i)
                self.value(path + (n,))
                self.ws_nl()
                if self.t.startswith(",", self.i):
                    self.i += 1
                    n += 1
        elif c in ('"', "'"):
            self.string()
        else:
            m = _SCALAR_END.search(self.t, self.i)
            self.i = m.start() if m else len(self.t)

    def record_keys(self, prefix: Path, keys: list[str], offset: int) -> None:
        for n in range(1, len(keys) + 1):
            self.pos.record(prefix + tuple(keys[:n]), offset)

    def record_all(self, path: Path, offset: int) -> None:
        for n in range(1, len(path) + 1):
            self.pos.record(path[:n], offset)

    def run(self) -> Positions:
        t = self.t
        prefix: Path = ()
        while True:
            self.ws_nl()
            if self.i >= len(t):
                return self.pos
            start = self.i
            if t.startswith("[[", self.i):
                self.i += 2
                keys = self.key()
                self.i = t.index("]]", self.i) + 2
                table = self._resolve(tuple(keys[:-1]), last=True) + (keys[-1],)
                n = self.aot.get(table, 0)
                self.aot[table] = n + 1
                prefix = table + (n,)
                self.record_all(prefix, start)
            elif t.startswith("[", self.i):
                self.i += 1
                keys = self.key()
                self.i = t.index("]", self.i) + 1
                prefix = self._resolve(tuple(keys))
                self.record_all(prefix, start)
            else:
                keys = self.key()
                self.record_keys(prefix, keys, start)
                self.ws()
                self.i += 1  # '='
                self.ws()
                self.value(prefix + tuple(keys))

    def _resolve(self, keys: Path, last: bool = False) -> Path:
        """`[a.b.c]` under an array of tables `[[a.b]]` means its last element
        (and so does `a.b` itself when `last`)."""
        out: Path = ()
        for idx, k in enumerate(keys):
            out = out + (k,)
            n = self.aot.get(out)
            if n is not None and (last or idx < len(keys) - 1):
                out = out + (n - 1,)
        return out


def _escaped(t: str, k: int) -> bool:
    n = 0
    while k - 1 - n >= 0 and t[k - 1 - n] == "\\":
        n += 1
    return n % 2 == 1


def toml_positions(text: str) -> Positions:
    """Positions of every key, table header and array item of a valid TOML text."""
    scan = _TomlScan(text)
    try:
        return scan.run()
    except (ValueError, IndexError):
        return scan.pos


# --- JSON --------------------------------------------------------------------

_decoder = json.JSONDecoder()


def json_positions(text: str) -> Positions:
    """Positions of every object key (the key's opening quote) and array item of a valid JSON text."""
    pos = Positions(text)

    def ws(i: int) -> int:
        return _JSON_WS.match(text, i).end()

    def value(i: int, path: Path) -> int:
        c = text[i]
        if c == "{":
            i = ws(i + 1)
            if text[i] == "}":
                return i + 1
            seen: set[str] = set()
            while True:
                key, j = json.decoder.scanstring(text, i + 1)
                if key in seen:
                    pos.duplicates.append((path + (key,), pos.line_col(i)))
                seen.add(key)
                pos.record(path + (key,), i)
                j = ws(j)
                j = ws(j + 1)  # ':'
                j = ws(value(j, path + (key,)))
                if text[j] == ",":
                    i = ws(j + 1)
                    continue
                return j + 1
        if c == "[":
            i = ws(i + 1)
            if text[i] == "]":
                return i + 1
            n = 0
            while True:
                pos.record(path + (n,), i)
                j = ws(value(i, path + (n,)))
                if text[j] == ",":
                    i = ws(j + 1)
                    n += 1
                    continue
                return j + 1
        _, end = _decoder.raw_decode(text, i)
        return end

    try:
        value(ws(0), ())
    except (ValueError, IndexError):
        pass
    return pos

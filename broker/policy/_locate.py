"""Line numbers for values of a TOML document that `tomllib` has already accepted.

`tomllib` returns plain dicts without positions, yet an admin needs "policy.toml:17: unknown group"
to find a mistake. Rather than take a round-tripping TOML library as a dependency for this alone,
a small lexer walks the (known valid) text once and records where each array-of-tables entry, each
key and each string literal inside a key's value starts. Lookups fall back from the exact string
to its key to its table header, so a position is always reported, if sometimes a coarse one.

Only what the policy schema needs is modelled: `[[name]]` and `[name]` headers, `key = value`
lines (bare, quoted or dotted keys), strings of all four TOML kinds, comments and nested brackets.
Inline tables and arrays are walked but not indexed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-+:")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "str", "bare", "punct", "nl"
    text: str
    line: int


@dataclass(slots=True)
class _Key:
    line: int
    strings: list[tuple[str, int]] = field(default_factory=list)


@dataclass(slots=True)
class _Table:
    line: int
    keys: dict[str, _Key] = field(default_factory=dict)


def _read_string(text: str, i: int, line: int) -> tuple[str, int, int]:
    """Read the string starting at text[i]; return (decoded value, index after it, line after it)."""
    quote = text[i]
    triple = text.startswith(quote * 3, i)
    literal = quote == "'"
    j = i + (3 if triple else 1)
    out: list[str] = []
    while j < len(text):
        c = text[j]
        if triple and text.startswith(quote * 3, j):
            # A closing delimiter may be preceded by up to two quotes that belong to the content.
            run = 0
            while j + run < len(text) and text[j + run] == quote:
                run += 1
            out.append(quote * (run - 3))
            return "".join(out), j + run, line
        if not triple and c == quote:
            return "".join(out), j + 1, line
        if c == "\\" and not literal:
            nxt = text[j + 1 : j + 2]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                j += 2
                continue
            # \u, \U and line-ending backslashes: keep them raw; policy ids never contain them.
            out.append(c)
            j += 1
            continue
        if c == "\n":
            line += 1
        out.append(c)
        j += 1
    return "".join(out), j, line


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, line = 0, 1
    while i < len(text):
        c = text[i]
        if c == "\n":
            tokens.append(_Token("nl", c, line))
            line += 1
            i += 1
        elif c in " \t\r":
            i += 1
        elif c == "#":
            while i < len(text) and text[i] != "\n":
                i += 1
        elif c in "\"'":
            start_line = line
            value, i, line = _read_string(text, i, line)
            tokens.append(_Token("str", value, start_line))
        elif c in _BARE:
            j = i
            while j < len(text) and text[j] in _BARE:
                j += 1
            tokens.append(_Token("bare", text[i:j], line))
            i = j
        else:
            tokens.append(_Token("punct", c, line))
            i += 1
    return tokens


class Locator:
    """Where things are in one TOML text: array-of-tables entries, keys and string values."""

    def __init__(self, text: str) -> None:
        """Index `text`, which must already have parsed as TOML."""
        # (table path, occurrence index) -> table; the root table is ("", 0).
        self._tables: dict[tuple[str, int], _Table] = {("", 0): _Table(line=1)}
        self._index(_tokens(text))

    def _index(self, tokens: list[_Token]) -> None:
        counts: dict[str, int] = {}
        table = self._tables[("", 0)]
        i = 0
        at_line_start = True
        while i < len(tokens):
            tok = tokens[i]
            if tok.kind == "nl":
                at_line_start = True
                i += 1
            elif at_line_start and tok.kind == "punct" and tok.text == "[":
                path, i = self._header(tokens, i)
                index = counts.get(path, 0)
                counts[path] = index + 1
                table = _Table(line=tok.line)
                self._tables[(path, index)] = table
                at_line_start = False
            elif at_line_start and tok.kind in ("bare", "str"):
                i = self._key_value(tokens, i, table)
            else:
                at_line_start = False
                i += 1

    @staticmethod
    def _header(tokens: list[_Token], i: int) -> tuple[str, int]:
        """Read `[a.b]` or `[[a.b]]` starting at tokens[i]; return the dotted path and where it ends."""
        nested = i + 1 < len(tokens) and tokens[i + 1].kind == "punct" and tokens[i + 1].text == "["
        j = i + (2 if nested else 1)
        parts: list[str] = []
        while j < len(tokens) and not (tokens[j].kind == "punct" and tokens[j].text == "]"):
            if tokens[j].kind in ("bare", "str"):
                parts.append(tokens[j].text)
            j += 1
        return ".".join(parts), j

    @staticmethod
    def _key_value(tokens: list[_Token], i: int, table: _Table) -> int:
        """Record the key at tokens[i] and the strings of its value; return the index after it."""
        parts: list[str] = []
        j = i
        while j < len(tokens) and not (tokens[j].kind == "punct" and tokens[j].text == "="):
            if tokens[j].kind in ("bare", "str"):
                parts.append(tokens[j].text)
            j += 1
        key = _Key(line=tokens[i].line)
        table.keys.setdefault(".".join(parts), key)
        # The value runs to the first newline outside brackets.
        depth = 0
        j += 1
        while j < len(tokens):
            t = tokens[j]
            if t.kind == "punct" and t.text in "[{":
                depth += 1
            elif t.kind == "punct" and t.text in "]}":
                depth -= 1
            elif t.kind == "nl" and depth <= 0:
                break
            elif t.kind == "str":
                key.strings.append((t.text, t.line))
            j += 1
        return j

    def line(self, table: str = "", index: int = 0, key: str | None = None, value: str | None = None) -> int:
        """The line of `value` inside `key` of the `index`-th `[[table]]`, falling back outward."""
        found = self._tables.get((table, index))
        if found is None:
            # Written inline (`rules = [{...}]`) rather than as [[rules]]: the best we have is the key.
            root_key = self._tables[("", 0)].keys.get(table)
            return root_key.line if root_key is not None else 1
        entry = found.keys.get(key) if key is not None else None
        if entry is None:
            return found.line
        if value is not None:
            for text, line in entry.strings:
                if text == value:
                    return line
        return entry.line

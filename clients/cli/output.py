"""How every `isb` command speaks: tables and colour for a person, JSON lines for a script.

A command hands its results to `Output` as plain mappings; `--json` prints each as one JSON object
per line on standard output (a list is one line per row), otherwise `rich` renders a table or a
key/value block, with colour only on a terminal (and never with `NO_COLOR` set). Errors go to
standard error in one style, `isb: error: <cause>; <fix>`, or as one JSON object with `--json`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["ERROR_PREFIX", "Output", "json_value", "output", "value_style"]

ERROR_PREFIX = "isb: error: "
# Handling codes and states in the colours people expect (TLP 2.0 uses red, amber, green, white).
_VALUE_STYLES = {
    "RED": "bold red",
    "AMBER+STRICT": "bold yellow",
    "AMBER": "yellow",
    "GREEN": "green",
    "CLEAR": "bold",
    "revoked": "dim",
    "expired": "red",
    "valid": "green",
    "verified": "green",
    "ALLOWED": "bold green",
    "REFUSED": "bold red",
    "DELIVERED": "green",
    "ACKNOWLEDGED": "green",
    "REJECTED": "red",
    "QUEUED": "yellow",
    "OK": "bold green",
    "FAILED": "bold red",
}
# Off a terminal there is no width to fit: wide enough that serials and SPIFFE ids stay whole.
_PIPE_WIDTH = 240


def json_value(value: Any) -> Any:
    """A value JSON can carry: times in ISO 8601 UTC, paths and bytes as text, sequences as lists."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    return value


def _cell(value: Any) -> Text:
    value = json_value(value)
    if value is None:
        return Text("-", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no", style="green" if value else "")
    if isinstance(value, list):
        return Text(", ".join(str(v) for v in value))
    text = str(value)
    return Text(text, style=_VALUE_STYLES.get(text, ""))


class Output:
    """The results and errors of one command, as a table for people or JSON lines for scripts."""

    def __init__(self, *, json_mode: bool, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        """Write to `stdout`/`stderr` (default: the process streams)."""
        self.json = json_mode
        self._stdout = stdout or sys.stdout
        self._stderr = stderr or sys.stderr
        self.console = self._console(self._stdout)
        self.error_console = self._console(self._stderr)

    @staticmethod
    def _console(stream: TextIO) -> Console:
        console = Console(file=stream, highlight=False, soft_wrap=False)
        if not console.is_terminal:
            console = Console(file=stream, highlight=False, soft_wrap=False, width=_PIPE_WIDTH)
        return console

    def _json_line(self, data: Mapping[str, Any], stream: TextIO | None = None) -> None:
        target = stream or self._stdout
        target.write(json.dumps(json_value(data), ensure_ascii=False) + "\n")
        target.flush()

    def record(self, data: Mapping[str, Any], *, title: str | None = None) -> None:
        """One result: a JSON object, or a key/value block under `title`."""
        if self.json:
            self._json_line(data)
            return
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        for key, value in data.items():
            grid.add_row(key.replace("_", " "), _cell(value))
        if title:
            self.console.print(Text(title, style="bold"))
        self.console.print(grid)

    def rows(
        self,
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[str] | None = None,
        *,
        title: str | None = None,
        empty: str = "nothing to show",
    ) -> None:
        """A list of results: one JSON object per row, or a table of `columns` (default: every key)."""
        if self.json:
            for row in rows:
                self._json_line(row)
            return
        if not rows:
            self.console.print(Text(empty, style="dim"))
            return
        names = list(columns or rows[0].keys())
        table = Table(title=title, title_justify="left", header_style="bold", box=None, pad_edge=False)
        for name in names:
            table.add_column(name.replace("_", " ").upper(), overflow="fold")
        for row in rows:
            table.add_row(*(_cell(row.get(name)) for name in names))
        self.console.print(table)

    def item(self, data: Mapping[str, Any], human: str | Text) -> None:
        """One item of a stream (a delivery, a hit): a JSON line, or one printed line, at once."""
        if self.json:
            self._json_line(data)
        else:
            self.console.print(human)

    def say(self, message: str | Text, *, style: str = "") -> None:
        """A sentence for a person (a next step, a confirmation); scripts with `--json` do not get it."""
        if not self.json:
            self.console.print(message if isinstance(message, Text) else Text(message, style=style))

    def problem(self, line: str) -> None:
        """One line of a list of problems (a policy's errors with their lines), on standard error;
        with `--json` the command's record carries the list instead."""
        if not self.json:
            self.error_console.print(Text(line), soft_wrap=True)

    def warn(self, message: str) -> None:
        """A warning on standard error, in both modes (a script's log should keep it)."""
        if self.json:
            self._json_line({"warning": message}, self._stderr)
        else:
            self.error_console.print(Text("isb: warning: ", style="bold yellow") + Text(message))

    def error(self, message: str, hint: str | None = None, **fields: Any) -> None:
        """The one error line: `isb: error: <cause>; <fix>` (or a JSON object with `--json`)."""
        if self.json:
            self._json_line({"error": message, "hint": hint, **fields}, self._stderr)
            return
        line = Text(ERROR_PREFIX, style="bold red") + Text(message)
        if hint:
            line += Text("; ") + Text(hint, style="bold")
        self.error_console.print(line, soft_wrap=True)


def value_style(text: str) -> str:
    """The rich style of a handling code or state shown by itself (`"RED"` is bold red)."""
    return _VALUE_STYLES.get(text, "")


def output(args: argparse.Namespace) -> Output:
    """The `Output` of this command run (set by `isb`'s main; made from `--json` when called directly)."""
    current = getattr(args, "_output", None)
    if not isinstance(current, Output):
        current = Output(json_mode=getattr(args, "json", False))
        args._output = current
    return current

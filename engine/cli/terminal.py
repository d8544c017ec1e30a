"""What the CLI prints on a terminal: rich's colours, tables and a live footer of the running steps.

Only for a terminal: piped or redirected output stays the plain lines and columns that scripts and
the golden tests read, and does not pay for importing rich (it about doubles a short command's
start; bench/RESULTS.md). User text (handler output, error messages, names) goes in as
``rich.text.Text``, never as markup, so a ``[bold]`` in a log line prints as it is.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

STYLES = {"→": "cyan", "✓": "green", "✗": "bold red", "↻": "yellow", "↷": "dim", "⊘": "magenta", "⋯": "blue"}


class LiveView:
    """Lines scroll above; a footer shows the steps running now (``square 37/120``)."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.console = Console(file=stream, highlight=False, soft_wrap=True)
        self._running: dict[str, str] = {}
        self._live = Live(self._footer(), console=self.console, transient=True, refresh_per_second=8)
        self._live.start()

    def line(self, elapsed: str, text: str) -> None:
        glyph, _, rest = text.partition(" ")
        style = STYLES.get(glyph)
        out = Text()
        out.append(f"{elapsed} ", style="dim")
        if style is None:  # a handler's line or a note: no glyph of ours at its head
            out.append(text)
        else:
            out.append(glyph, style=style)
            out.append(f" {rest}")
        self.console.print(out)

    def running(self, steps: Mapping[str, str]) -> None:
        self._running = dict(steps)
        self._live.update(self._footer())

    def close(self) -> None:
        self._live.stop()

    def _footer(self) -> Any:
        if not self._running:
            return Text("")
        names = " · ".join(f"{name} {detail}".rstrip() for name, detail in self._running.items())
        return Spinner("dots", Text(f"running: {names}", style="cyan"))


def rich_table(rows: Sequence[Sequence[str]], headers: Sequence[str], width: int | None = None) -> str:
    """The rows as a rich table, rendered to text with its colours (for ``print``)."""
    table = Table(*(h.upper() for h in headers), box=None, header_style="bold", pad_edge=False)
    for row in rows:
        table.add_row(*(Text(cell, style=_cell_style(cell) or "") for cell in row))
    buffer = io.StringIO()
    Console(file=buffer, force_terminal=True, width=width or Console().width, highlight=False).print(table)
    return buffer.getvalue().rstrip("\n")


def _cell_style(cell: str) -> str | None:
    return {
        "SUCCEEDED": "green",
        "FAILED": "red",
        "RUNNING": "cyan",
        "RUNNABLE": "yellow",
        "CANCELLED": "magenta",
    }.get(cell)

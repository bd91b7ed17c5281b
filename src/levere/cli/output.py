"""How the CLI shows things: Rich tables for people, JSON for scripts (``--json``).

What the service sends (titles, subjects, paths) is shown as plain text, never read as Rich markup:
"[levere] New data" stays as it is rather than losing "[levere]" as an unknown style.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

# soft_wrap: a message is one line however narrow the terminal (or 80 columns when piped), so that
# scripts can read errors and results line by line
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


class State:
    json_output = False


def emit_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from rich.table import Table  # not needed by commands that print no table, such as deliver

    grid = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*(Text("" if cell is None else str(cell)) for cell in row))
    console.print(grid)


def fields(title: str, pairs: Iterable[tuple[str, Any]]) -> None:
    from rich.table import Table

    grid = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in pairs:
        grid.add_row(Text(key), Text("" if value is None else str(value)))
    console.print(grid)


def show(data: Any, render: Any) -> None:
    """Print ``data`` as JSON when asked, else call ``render(data)``."""
    if State.json_output:
        emit_json(data)
    else:
        render(data)


def done(message: str) -> None:
    if not State.json_output:
        console.print(f"[green]✓[/green] {escape(message)}", highlight=False)


def result(data: Any, message: str) -> None:
    """The outcome of a command that changed something: ``data`` as JSON when asked, else ``message``."""
    if State.json_output:
        emit_json(data)
    else:
        done(message)


def handed_over(data: dict[str, Any]) -> None:
    """After a command that invited people while mail is off: the links to pass on, and how."""
    if State.json_output:
        return  # the links are in the JSON already
    for handed in data.get("invitation_links") or []:
        until = str(handed["expires_at"])[:16].replace("T", " ")
        console.print(
            f"mail is off, so no invitation was e-mailed: give {handed['email']} this link "
            f"(it works once, until {until} UTC); they run:\n  levere account accept-invite {handed['link']}",
            highlight=False,
        )

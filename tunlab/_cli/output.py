"""What every CLI command shares: the consoles, the exit codes and the two kinds of user error."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class UserError(click.ClickException):
    """A runtime failure explained to the user (exit 1)."""

    exit_code = EXIT_FAILURE


class BadInput(click.ClickException):
    """Bad input (exit 2)."""

    exit_code = EXIT_BAD_INPUT


def print_processes(
    found: Mapping[str, Sequence[Any]],
    as_json: bool,
    columns: Sequence[str],
    row: Callable[[str, Any], Sequence[str]],
) -> None:
    """`tunlab ps` output (a lab here or across hosts): {node: [process]} as JSON, or a table of
    row(node, process) under columns (numbers right-aligned; commands as text, never markup)."""
    if as_json:
        click.echo(json.dumps({n: [dataclasses.asdict(p) for p in ps] for n, ps in found.items()}, indent=2))
        return
    table = Table()
    for col in columns:
        table.add_column(col, justify="right" if col in ("pid", "cpu", "rss") else "left")
    for node, processes in found.items():
        for process in processes:
            table.add_row(*(Text(c) for c in row(node, process)))
    console.print(table if table.row_count else "no processes")

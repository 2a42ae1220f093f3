"""What every CLI command shares: the consoles, the exit codes and the two kinds of user error."""

from __future__ import annotations

import click
from rich.console import Console

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class UserError(click.ClickException):
    """A runtime failure explained to the user (exit 1)."""

    exit_code = EXIT_FAILURE


class BadInput(click.ClickException):
    """Bad input (exit 2)."""

    exit_code = EXIT_BAD_INPUT

"""`tunlab` CLI entry point: exit 0 ok, 1 runtime failure, 2 bad input; no tracebacks for users."""

from __future__ import annotations

import os
import shutil
import sys

import click
from rich.console import Console

from tunlab.errors import TopologyError, TunlabError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class UserError(click.ClickException):
    """A runtime failure explained to the user (exit 1)."""

    exit_code = EXIT_FAILURE


def _require_root_linux(what: str) -> None:
    if not sys.platform.startswith("linux"):
        raise UserError(f"{what} needs Linux network namespaces (this is {sys.platform})")
    if os.geteuid() != 0:
        raise UserError(f"{what} needs root (CAP_NET_ADMIN): run it with sudo")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tunlab")
def cli() -> None:
    """tunlab: TUN/TAP devices and declarative network labs for testing network software."""


@cli.command()
def demo() -> None:
    """Bring a TUN device up in a namespace, answer the kernel's pings with tunlab, clean up."""
    _require_root_linux("the demo")
    if shutil.which("ping") is None:
        raise UserError("the demo needs ping (apt-get install iputils-ping)")
    from tunlab.cli import device_demo

    if not device_demo.run(console):
        raise UserError("the demo did not complete")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI, turning tunlab's errors into messages and exit codes."""
    try:
        cli.main(args=argv, prog_name="tunlab", standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (TopologyError, ValueError, TypeError) as exc:
        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(EXIT_BAD_INPUT)
    except (TunlabError, OSError) as exc:
        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(EXIT_FAILURE)
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    main()

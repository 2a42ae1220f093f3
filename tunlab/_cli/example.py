"""`tunlab example [NAME]`: the example labs and tests tunlab ships, listed or written out, so
every example in the docs runs from an installed wheel as written."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from tunlab._cli.output import BadInput, console
from tunlab._shipped import example as find_example
from tunlab._shipped import examples


@click.command()
@click.argument("name", required=False)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="where to write it (a file or a folder)"
)
@click.option("--force", is_flag=True, help="overwrite a file that exists")
@click.option("--all", "everything", is_flag=True, help="write every example into the folder (-o, default .)")
def example(name: str | None, output: Path | None, force: bool, everything: bool) -> None:
    """List the shipped examples, or write one (NAME: demo, wireguard.yaml, test_gro.py, ...)."""
    found = examples()
    if everything:
        folder = output or Path(".")
        folder.mkdir(parents=True, exist_ok=True)
        for path in found.values():
            _write(path, folder / path.name, force)
        return
    if name is None:
        for file_name, path in found.items():
            lines = path.read_text().splitlines()
            about = lines[0].strip('#" ') if lines else ""
            console.print(f"{escape(file_name):28} {escape(about)}")
        console.print("write one out with: tunlab example NAME [-o PATH]")
        return
    found_path = find_example(name)
    if found_path is None:
        raise BadInput(f"example {name!r}: there is no such example (shipped: {', '.join(found) or 'none'})")
    target = output or Path(found_path.name)
    if target.is_dir():
        target = target / found_path.name
    _write(found_path, target, force)


def _write(source: Path, target: Path, force: bool) -> None:
    if target.exists() and not force:
        raise BadInput(f"{target}: exists already; pass --force to overwrite it, or -o another path")
    target.write_bytes(source.read_bytes())
    console.print(f"wrote {escape(str(target))}")

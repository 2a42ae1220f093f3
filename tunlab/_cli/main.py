"""`tunlab` CLI: exit 0 ok, 1 runtime failure, 2 bad input; user errors never show a traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tunlab._cli import cluster as on_cluster
from tunlab._cli.cluster import ClusterOptions, cluster_options
from tunlab._cli.doctor import doctor
from tunlab._cli.example import example
from tunlab._cli.output import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    BadInput,
    UserError,
    console,
    err_console,
    print_processes,
)
from tunlab.errors import DeployError, LabError, TopologyError, TunlabError
from tunlab.relay._direction import DIRECTIONS
from tunlab.relay.impair._table import settings_mapping

if TYPE_CHECKING:
    pass

DIRECTION_NAMES = [d.value for d in DIRECTIONS]  # as the command line and JSON spell them


def _require_root_linux(what: str) -> None:
    if not sys.platform.startswith("linux"):
        raise UserError(f"{what} needs Linux network namespaces (this is {sys.platform})")
    if os.geteuid() != 0:
        raise UserError(f"{what} needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN): run it with sudo")


def _bad_input(check: Any, value: str, option: str) -> None:
    """Run a validator; its ValueError becomes exit 2 naming the option."""
    try:
        check(value)
    except ValueError as exc:
        raise BadInput(f"{option}: {exc}") from None


def _vars(assignments: tuple[str, ...]) -> dict[str, Any]:
    from tunlab.topologies._loader import parse_var

    return dict(parse_var(a) for a in assignments)


var_option = click.option(
    "--var", "variables", multiple=True, metavar="NAME=VALUE", help="template variable (repeatable)"
)
limit_option = click.option(
    "--limit",
    "limits",
    multiple=True,
    metavar="NAME=VALUE",
    help="raise a reading limit: file-size, rendered-size, render-seconds, render-memory, depth, values",
)


def _limits(assignments: tuple[str, ...]) -> Any:
    from tunlab.topologies._limits import DEFAULT_LIMITS

    try:
        return DEFAULT_LIMITS.with_overrides(assignments)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


@contextmanager
def _progress(title: str) -> Iterator[Any]:
    """A rich progress bar fed by the engine's step callback."""
    with Progress(
        TextColumn("[bold]{task.fields[title]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task("", total=None, title=title)

        def update(step: str, index: int, total: int) -> None:
            progress.update(task, description=step, completed=index, total=total)

        yield update


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tunlab")
def cli() -> None:
    """tunlab: TUN/TAP devices and declarative network labs for testing network software."""


@cli.command()
def demo() -> None:
    """The built-in lab: two hosts and a router (a tun-pair with offload), traffic, report."""
    _require_root_linux("the demo")
    if shutil.which("ping") is None:
        raise UserError("the demo needs ping (apt-get install iputils-ping)")
    from tunlab._cli import lab_demo

    if not lab_demo.run(console, _progress):
        raise UserError("the demo did not complete (see above)")


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@var_option
@limit_option
@cluster_options
def validate(
    file: Path, variables: tuple[str, ...], limits: tuple[str, ...], cluster: ClusterOptions | None
) -> None:
    """Check a topology file (and its templating) without creating anything; with --cluster,
    also its placement on that cluster's hosts."""
    from tunlab.topologies._loader import load_file

    topo = load_file(file, _vars(variables), limits=_limits(limits))
    if cluster is not None:
        on_cluster.validate(topo, file, cluster)
        _impair_warnings(topo)
        return
    console.print(f"{file}: ok — lab '{topo.name}', {len(topo.nodes)} nodes, {len(topo.links)} links")
    _impair_warnings(topo)


def _impair_warnings(topo: Any) -> None:
    """What is legal in an impairment but probably not meant (netem's correlation bias, limit 0)."""
    for li, link in enumerate(topo.links):
        imp = link.impairment
        if imp is None:
            continue
        for key in DIRECTION_NAMES:
            for text in getattr(imp, key).warnings():
                err_console.print(f"[yellow]warning:[/] links[{li}].impair ({key}): {escape(text)}")


@cli.command()
def schema() -> None:
    """Print the JSON Schema of topology files (for editors and CI)."""
    from tunlab.topologies._models import Topology

    click.echo(json.dumps(Topology.model_json_schema(by_alias=True), indent=2))


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot", "svg", "png"]),
    default="mermaid",
    show_default=True,
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write here instead of stdout",
)
@var_option
@limit_option
def graph(
    file: Path, fmt: str, output: Path | None, variables: tuple[str, ...], limits: tuple[str, ...]
) -> None:
    """Draw the topology: nodes, interfaces, addresses and link types."""
    from tunlab.topologies._graph import render_graph
    from tunlab.topologies._loader import load_file

    data = render_graph(load_file(file, _vars(variables), limits=_limits(limits)), fmt)
    if output is not None:
        output.write_bytes(data if isinstance(data, bytes) else data.encode())
        console.print(f"wrote {output}")
    elif isinstance(data, bytes):
        if sys.stdout.isatty():
            raise BadInput(f"--format {fmt} is binary: give -o FILE")
        sys.stdout.buffer.write(data)
    else:
        click.echo(data, nl=False)


def _summary(lab: Any) -> None:
    table = Table(title=f"lab {lab.name} (id {lab.id}) is up", title_justify="left")
    table.add_column("node")
    table.add_column("kind")
    table.add_column("interfaces")
    data = lab.inspect()
    for name, node in data["nodes"].items():
        ifaces = "; ".join(
            f"{i['name']} {' '.join(i['addresses'])}".strip() for i in node.get("interfaces", [])
        )
        table.add_row(name, node["kind"], ifaces)
    console.print(table)
    _impair_lines(data.get("impairments", []))


def _impair_lines(links: list[dict[str, Any]], counters: bool = False) -> None:
    """Each impaired link: where its impairment runs (and why), what it is, its counters."""
    for link in links:
        if not any(link.get(k) for k in DIRECTION_NAMES):  # a relay that carries no impairment
            continue
        from tunlab.topologies._impairments import Placement

        where = Placement(link["via"], link.get("reason", "")).describe()
        console.print(f"links[{link['link']}] {escape(link['endpoints'])}: impaired {escape(where)}")
        for key in DIRECTION_NAMES:
            text = link.get(key) or "(none)"
            line = f"  {key}: {text}"
            stats = link.get(f"{key}_stats") or {}
            if counters and stats:
                line += "  [" + ", ".join(f"{k} {v}" for k, v in stats.items() if k != "active") + "]"
            console.print(line, markup=False)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@var_option
@click.option("-d", "--detach", is_flag=True, help="hand the lab to a background supervisor and return")
@click.option("--name", help="lab name (default: the topology's name)")
@limit_option
@cluster_options
def up(
    file: Path,
    variables: tuple[str, ...],
    detach: bool,
    name: str | None,
    limits: tuple[str, ...],
    cluster: ClusterOptions | None,
) -> None:
    """Bring a lab up; in the foreground it runs until Ctrl-C or SIGTERM, then tears down.
    With --cluster its nodes run on that cluster's hosts (docs/cluster.md)."""
    if cluster is None:
        _require_root_linux("tunlab up")
    from tunlab.topologies._holding import Holder
    from tunlab.topologies._lab import Lab, check_lab_name
    from tunlab.topologies._loader import load_file

    if name is not None:
        _bad_input(check_lab_name, name, "--name")
    holder = Holder()
    holder.install()  # a signal while the file loads or the lab comes up stops it at once
    values = _vars(variables)
    topo = load_file(file, values, limits=_limits(limits))  # bad input fails here, before anything exists
    if cluster is not None:
        on_cluster.up(topo, file, name, detach, cluster, holder)
        return
    if detach:
        _up_detached(file, variables, name or topo.name, limits)
        return
    lab = Lab(topo, name=name, source=str(file.resolve()))
    try:
        with _progress(f"up {lab.name}") as progress:
            lab.progress = progress
            lab.up()
        holder.up()
        if not holder.stop:
            _summary(lab)
            console.print(
                f"enter a node: [bold]tunlab exec {lab.name} <node> -- <command>[/]; "
                "Ctrl-C (or SIGTERM) tears the lab down"
            )
        holder.wait(lab.wait_down)
    finally:
        if lab.running:
            problems = lab.down()
            for p in problems:
                err_console.print(f"[yellow]teardown:[/] {escape(p)}")
            console.print(f"lab {lab.name} is down")
        elif lab.wait_down(0):
            console.print(f"lab {lab.name} is down (`tunlab down`)")


def _up_detached(file: Path, variables: tuple[str, ...], name: str, limits: tuple[str, ...]) -> None:
    from tunlab.topologies._operations import up_detached

    with _progress(f"up -d {name}") as progress:
        lab = up_detached(file, name, variables, limits, progress=progress)
    console.print(f"lab {name} is up, held by supervisor pid {lab.pid}; `tunlab down {name}` stops it")
    _impair_lines(lab.links())


@cli.command()
@click.argument("name")
@cluster_options
def down(name: str, cluster: ClusterOptions | None) -> None:
    """Stop a lab (its holder tears it down; a dead holder's lab is cleaned up directly)."""
    if cluster is not None:
        on_cluster.down(name, cluster)
        return
    _require_root_linux("tunlab down")
    from tunlab.topologies._operations import stop_lab

    problems = stop_lab(name)
    for p in problems:
        err_console.print(f"[yellow]teardown:[/] {escape(p)}")
    console.print(f"lab {name} is down")


@cli.command(name="ls")
@cluster_options
def list_labs(cluster: ClusterOptions | None) -> None:
    """List labs on this machine (this run directory), and state files that cannot be read;
    with --cluster, every lab part on every host of the cluster."""
    if cluster is not None:
        on_cluster.ls(cluster)
        return
    from tunlab.topologies._state import BrokenState, scan_labs

    entries = scan_labs()
    if not entries:
        console.print("no labs")
        return
    table = Table()
    for col in ("name", "id", "status", "nodes", "links", "holder", "source"):
        table.add_column(col)
    for s in entries:
        if isinstance(s, BrokenState):
            table.add_row(s.path.stem, "?", "CORRUPT", "-", "-", s.reason + " — `tunlab gc` removes it", "-")
            continue
        holder = f"{s.owner_pid}{' (detached)' if s.detached else ''}" + (
            "" if s.owner_alive else " DEAD: run tunlab gc"
        )
        status = s.status if s.owner_alive else "dead"
        if s.owner_alive and s.health:
            first = next(iter(s.health))
            more = f" (+{len(s.health) - 1} more)" if len(s.health) > 1 else ""
            status = f"degraded: {first} died{more}"
        table.add_row(
            s.name,
            s.id,
            status,
            str(len(s.topology.get("nodes", {}))),
            str(len(s.topology.get("links", []))),
            holder,
            s.source or "-",
        )
    console.print(table)


@cli.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@cluster_options
def inspect(name: str, as_json: bool, cluster: ClusterOptions | None) -> None:
    """Show a running lab: nodes, interfaces, addresses, routes, original offload state."""
    if cluster is not None:
        on_cluster.inspect(name, as_json, cluster)
        return
    _require_root_linux("tunlab inspect")
    from tunlab.topologies._inspect import describe
    from tunlab.topologies._operations import inspect_running

    data = inspect_running(name)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    console.print(
        f"[bold]lab {data['name']}[/] id {data['id']} status {data['status']} holder {data['holder_pid']}"
    )
    for part, cause in data.get("health", {}).items():
        err_console.print(f"[red]degraded:[/] {escape(part)}: {escape(cause)}")
    for line in describe(data):
        console.print(line if line.startswith(" ") else f"[bold]{line}[/]", markup=not line.startswith(" "))
    _impair_lines(data["impairments"], counters=True)


@cli.command()
@click.argument("name")
@click.argument("node", required=False)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@cluster_options
def ps(name: str, node: str | None, as_json: bool, cluster: ClusterOptions | None) -> None:
    """List what runs in each node of a lab (or one node): pid, state, CPU time, memory, command."""
    if cluster is not None:
        on_cluster.ps(name, node, as_json, cluster)
        return
    _require_root_linux("tunlab ps")
    from tunlab.topologies._operations import processes_running

    print_processes(
        processes_running(name, node),
        as_json,
        ("node", "pid", "state", "cpu", "rss", "command"),
        lambda n, p: (
            n,
            str(p.pid),
            p.state,
            f"{p.cpu_seconds:.2f}s",
            f"{p.rss_bytes / 2**20:.1f}M",
            p.command,
        ),
    )


@cli.command()
@click.argument("name")
@click.argument("link")
@click.argument("settings", nargs=-1)
@click.option("--direction", type=click.Choice(DIRECTION_NAMES), help="change only this direction")
@click.option("--clear", is_flag=True, help="remove the impairment")
@click.option(
    "--file",
    "from_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="read the impairment from a YAML/JSON/TOML mapping (as under a link's impair:)",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@cluster_options
def impair(
    name: str,
    link: str,
    settings: tuple[str, ...],
    direction: str | None,
    clear: bool,
    from_file: Path | None,
    as_json: bool,
    cluster: ClusterOptions | None,
) -> None:
    """Change a link's impairment on a running lab: tunlab impair LAB h1:eth0 delay=50ms loss=1%

    LINK is the link's index, its name or one of its ends (node:interface). Settings are netem
    fields as in a topology file; nested ones with dots (shaper.rate=10mbit). --clear removes it.
    """
    from tunlab.relay._direction import Direction
    from tunlab.topologies._operations import impair_running

    value = _impair_value(settings, clear, from_file)
    if cluster is not None:
        on_cluster.impair(name, link, value, direction, as_json, cluster)
        return
    _require_root_linux("tunlab impair")
    answer = impair_running(name, link, value, Direction.parse(direction) if direction else None)
    if as_json:
        click.echo(json.dumps(answer, indent=2, default=str))
        return
    _impair_lines([answer])


def _impair_value(settings: tuple[str, ...], clear: bool, from_file: Path | None) -> dict[str, Any] | None:
    """The impairment from key=value settings, a file, or None for --clear (bad input: exit 2)."""
    if clear:
        if settings or from_file is not None:
            raise BadInput("--clear takes no settings")
        return None
    if from_file is not None:
        if settings:
            raise BadInput("give settings or --file, not both")
        from tunlab.topologies._operations import impairment_from_file

        try:
            return impairment_from_file(from_file)
        except ValueError as exc:
            raise BadInput(f"--file: {exc}") from None
    if not settings:
        raise BadInput("give settings (e.g. delay=50ms loss=1%), --file, or --clear")
    try:
        return settings_mapping(settings)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


@cli.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("node")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@cluster_options
def exec_(name: str, node: str, command: tuple[str, ...], cluster: ClusterOptions | None) -> None:
    """Run a command inside a lab node: tunlab exec LAB NODE -- CMD ARGS..."""
    if cluster is not None:
        sys.exit(_exit_status(on_cluster.exec_(name, node, list(command), cluster)))
    _require_root_linux("tunlab exec")
    from tunlab.topologies._operations import exec_in_guest, node_of

    try:
        _state, handle = node_of(name, node)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    if handle is None:
        done = exec_in_guest(name, node, list(command))
        sys.stdout.buffer.write(done.stdout)
        sys.stdout.flush()
        sys.stderr.buffer.write(done.stderr)
        sys.exit(_exit_status(done.code))
    try:
        proc = handle.interactive(list(command))
    except FileNotFoundError:
        err_console.print(f"[red]error:[/] {escape(command[0])}: command not found in node '{escape(node)}'")
        sys.exit(127)  # as a shell says it
    except PermissionError:
        err_console.print(f"[red]error:[/] {escape(command[0])}: not executable in node '{escape(node)}'")
        sys.exit(126)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        code = proc.wait()
    sys.exit(_exit_status(code))


@cli.command()
@click.argument("name")
@click.argument("node")
@click.argument("interface")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="the pcap file"
)
@click.option("--seconds", type=click.FloatRange(min=0.01, max=86400), default=5.0, show_default=True)
@click.option("--count", type=click.IntRange(min=1), help="stop after this many packets")
@cluster_options
def capture(
    name: str,
    node: str,
    interface: str,
    output: Path,
    seconds: float,
    count: int | None,
    cluster: ClusterOptions | None,
) -> None:
    """Capture packets on a node's interface into a pcap file (tcpdump, tshark and Wireshark
    read it); super-packets are recorded whole, as the kernel handled them."""
    if cluster is not None:
        data, packets, supers = on_cluster.capture(name, node, interface, seconds, count, cluster)
        output.write_bytes(data)
    else:
        _require_root_linux("tunlab capture")
        from tunlab.testing._capture import capture_running

        try:
            seen = capture_running(name, node, interface, output, seconds, count)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        packets, supers = len(seen), sum(1 for p in seen if p.is_gso)
    console.print(f"{packets} packet(s) ({supers} super-packets) on {node}:{interface} -> {output}")


def _exit_status(code: int) -> int:
    """A command's status as a shell reports it: killed by signal N is 128 + N (SIGKILL: 137)."""
    return 128 - code if code < 0 else code


@cli.group(name="vm-image")
def vm_image() -> None:
    """Guest images for kind: vm nodes, built from the recipes in vm-images/ (cached)."""


@vm_image.command(name="build")
@click.argument("names", nargs=-1)
@click.option("--rebuild", is_flag=True, help="build again even if an up-to-date image exists")
@click.option("--kernel-package", help="a Debian kernel package to build with (default: the recipe's)")
def vm_image_build(names: tuple[str, ...], rebuild: bool, kernel_package: str | None) -> None:
    """Build images (default: every recipe); an up-to-date one is kept unless --rebuild."""
    _require_root_linux("tunlab vm-image build")
    from tunlab._vm import images

    for name in names or tuple(images.available()):
        with _progress(f"vm-image {name}") as progress:
            img = images.ensure(name, kernel_package=kernel_package, rebuild=rebuild,
                                say=lambda text: progress(text, 0, 0))  # fmt: skip
        m = img.manifest
        console.print(f"{name}: {img.directory} ({m.get('kernel_package')} {m.get('kernel_version')})")


@vm_image.command(name="ls")
def vm_image_ls() -> None:
    """Recipes, and the images built from them (with their kernel)."""
    from tunlab._vm import images

    built = images.installed()
    table = Table(title=f"VM images (recipes: {images.recipes_dir()}, cache: {images.cache_dir()})",
                  title_justify="left")  # fmt: skip
    for col in ("recipe", "built", "kernel", "build s", "directory"):
        table.add_column(col)
    for name in images.available():
        mine = [b for b in built if b.name == name]
        if not mine:
            table.add_row(name, "no", "", "", "")
        for b in mine:
            m = b.manifest
            table.add_row(name, "yes", f"{m.get('kernel_package')} {m.get('kernel_version')}",
                          str(m.get("build_seconds", "")), str(b.directory))  # fmt: skip
    console.print(table)


@vm_image.command(name="rm")
@click.argument("names", nargs=-1)
def vm_image_rm(names: tuple[str, ...]) -> None:
    """Delete built images (default: all of them); they are rebuilt on next use."""
    _require_root_linux("tunlab vm-image rm")
    from tunlab._vm import images

    gone = [p for n in (names or (None,)) for p in images.remove(n)]
    console.print(f"removed {len(gone)} image(s)" + "".join(f"\n  {p}" for p in gone))


@cli.group()
def image() -> None:
    """Container images tunlab builds locally (no registry needed)."""


@image.command(name="build")
@click.option("--rebuild", is_flag=True, help="build again even if the image exists")
def image_build(rebuild: bool) -> None:
    """Build tunlab/base:latest (debootstrap minbase + iproute2, ping, python3) and import it."""
    _require_root_linux("tunlab image build")
    from tunlab.topologies._containers import docker_client
    from tunlab.topologies._images import build_base_image

    image_id = build_base_image(docker_client(), rebuild=rebuild, say=lambda text: console.print(text))
    console.print(f"tunlab/base:latest is {image_id[:19]}")


@cli.command()
@cluster_options
def gc(cluster: ClusterOptions | None) -> None:
    """Remove labs whose holder died (SIGKILL included) and anything else tunlab left; with
    --cluster, on every host (and lab parts whose client is gone)."""
    if cluster is not None:
        on_cluster.gc(cluster)
        return
    _require_root_linux("tunlab gc")
    from tunlab.topologies._cleanup import garbage_collect

    removed = garbage_collect()
    for item in removed:
        console.print(f"removed {escape(item)}")
    console.print("nothing to clean" if not removed else f"{len(removed)} item(s) removed")


cli.add_command(example)
cli.add_command(doctor)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI, turning tunlab's errors into messages and exit codes."""
    try:
        cli.main(args=argv, prog_name="tunlab", standalone_mode=False)
    except click.exceptions.Abort as exc:
        why = exc.__context__ or exc.__cause__
        if why is not None and type(why).__name__ == "Interrupted":
            err_console.print(f"interrupted ({why}): everything made so far was removed")
        else:
            err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except DeployError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}")
        err_console.print("everything made before that step was removed")
        sys.exit(EXIT_FAILURE)
    except (TopologyError, ValueError, TypeError) as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}")
        sys.exit(EXIT_BAD_INPUT)
    except (TunlabError, LabError, OSError) as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}")
        sys.exit(EXIT_FAILURE)
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    main()

"""--cluster for the lab commands: the same commands, routed to the hosts of a Dask cluster.

A client needs no root: it plans, checks and asks; the hosts' workers do the work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tunlab._cli.output import console, err_console, print_processes

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class ClusterOptions:
    """--cluster and how to reach it safely."""

    address: str | None
    insecure: bool
    tls_ca: str | None
    tls_cert: str | None
    tls_key: str | None

    def connect_kwargs(self) -> dict[str, Any]:
        from tunlab.cluster._connect import Tls

        return {
            "cluster": self.address,
            "insecure": self.insecure,
            "tls": Tls.from_env(self.tls_ca, self.tls_cert, self.tls_key),
        }

    def ask(self, question: Callable[[Any], T]) -> T:
        """question(client) with a client of the cluster, closed after."""
        from tunlab.cluster._connect import connect

        client = connect(**self.connect_kwargs())
        try:
            return question(client)
        finally:
            client.close()  # type: ignore[no-untyped-call]


def cluster_options(fn: F) -> F:
    """--cluster ADDRESS (or TUNLAB_CLUSTER), --insecure and the TLS certificate paths, handed to
    the command as `cluster` (None without an address: the command works on this machine)."""

    @click.option(
        "--cluster",
        "cluster_address",
        envvar="TUNLAB_CLUSTER",
        metavar="ADDRESS",
        help="a Dask scheduler (tls://HOST:PORT): work on the lab across that cluster's hosts",
    )
    @click.option(
        "--insecure", is_flag=True, help="allow plain tcp:// to a scheduler that is not on loopback"
    )
    @click.option("--tls-ca", type=click.Path(dir_okay=False), help="CA certificate (or TUNLAB_TLS_CA)")
    @click.option(
        "--tls-cert", type=click.Path(dir_okay=False), help="client certificate (or TUNLAB_TLS_CERT)"
    )
    @click.option("--tls-key", type=click.Path(dir_okay=False), help="client key (or TUNLAB_TLS_KEY)")
    @functools.wraps(fn)
    def wrapper(
        *args: Any,
        cluster_address: str | None,
        insecure: bool,
        tls_ca: str | None,
        tls_cert: str | None,
        tls_key: str | None,
        **kwargs: Any,
    ) -> Any:
        opts = (
            ClusterOptions(cluster_address, insecure, tls_ca, tls_cert, tls_key) if cluster_address else None
        )
        return fn(*args, cluster=opts, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def _attached(name: str, opts: ClusterOptions) -> Iterator[Any]:
    """The running lab `name` of the cluster, let go of (not taken down) after the block."""
    from tunlab.cluster._lab import ClusterLab

    lab = ClusterLab.attach(name, **opts.connect_kwargs())
    try:
        yield lab
    finally:
        lab.detach()


def _node(lab: Any, node: str) -> Any:
    """A node of the lab; an unknown one is bad input naming the argument."""
    from tunlab.errors import LabError

    try:
        return lab.node(node)
    except LabError as exc:
        raise click.BadParameter(str(exc), param_hint="NODE") from None


# ---- the commands ---------------------------------------------------------------------------------
def validate(topo: Any, file: Path, opts: ClusterOptions) -> None:
    from tunlab.cluster._lab import ClusterLab

    lab = ClusterLab(topo, source=str(file), **opts.connect_kwargs())
    try:
        plan = lab.validate()
    finally:
        lab.detach()  # planned only: nothing to take down
    per_host: dict[str, int] = {}
    for host in plan.placement.values():
        per_host[host] = per_host.get(host, 0) + 1
    hosts = ", ".join(f"{h} ({n} nodes)" for h, n in per_host.items())
    console.print(f"{file}: ok on the cluster — {hosts}; {len(plan.wires)} link(s) between hosts")


def up(topo: Any, file: Path, name: str | None, detach: bool, opts: ClusterOptions, holder: Any) -> None:
    from tunlab.cluster._lab import ClusterLab

    lab = ClusterLab(topo, name=name, source=str(file.resolve()), detached=detach, **opts.connect_kwargs())
    lost = threading.Event()

    def host_lost(host: str, cause: str) -> None:
        err_console.print(f"[red]host lost:[/] {escape(host)}: {escape(cause)}")
        lost.set()

    lab.on_host_lost = host_lost
    console.print(f"up {lab.name} on the cluster ...")
    lab.up()
    _placement_table(lab)
    if detach:
        console.print(
            f"lab {lab.name} is up on {len(lab.hosts)} host(s) (detached); `tunlab down {lab.name} --cluster`"
        )
        lab.detach()  # the hosts keep their parts
        return
    console.print(
        f"enter a node: [bold]tunlab exec {lab.name} <node> --cluster ... -- <command>[/]; "
        "Ctrl-C (or SIGTERM) tears the lab down"
    )
    try:
        holder.up()
        holder.wait(lab.wait_down)
    finally:
        problems = lab.down()
        for p in problems:
            err_console.print(f"[yellow]teardown:[/] {escape(p)}")
        console.print(f"lab {lab.name} is down")


def _placement_table(lab: Any) -> None:
    table = Table(title=f"lab {lab.name} across {len(lab.hosts)} host(s)", title_justify="left")
    table.add_column("host")
    table.add_column("underlay")
    table.add_column("nodes")
    plan = lab.plan
    for host in lab.hosts:
        nodes = [n for n, h in plan.placement.items() if h == host]
        table.add_row(host, plan.underlay[host], Text(", ".join(nodes)))
    console.print(table)
    if plan.wires:
        console.print(f"{len(plan.wires)} link(s) cross between hosts (a relay over UDP on each side)")


def down(name: str, opts: ClusterOptions) -> None:
    from tunlab.cluster._lab import ClusterLab

    problems = ClusterLab.attach(name, **opts.connect_kwargs()).down()
    for p in problems:
        err_console.print(f"[yellow]teardown:[/] {escape(p)}")
    console.print(f"lab {name} is down on the cluster")


def ls(opts: ClusterOptions) -> None:
    from tunlab.cluster._operations import cluster_labs

    rows = opts.ask(cluster_labs)
    if not rows:
        console.print("no labs on the cluster")
        return
    table = Table()
    for col in ("name", "host", "status", "nodes", "detached"):
        table.add_column(col)
    for r in rows:
        if r.get("lost"):
            status = "LOST: the host holds nothing of it (`tunlab gc` there)"
        elif r.get("health"):
            status = f"degraded: {next(iter(r['health']))} died"
        else:
            status = "up" if r.get("running") else f"down ({r.get('ended') or '?'})"
        table.add_row(
            r["lab"], r["host"], status, str(len(r.get("nodes", []))), "yes" if r.get("detached") else "no"
        )
    console.print(table)


def gc(opts: ClusterOptions) -> None:
    from tunlab.cluster._operations import collect_cluster

    removed = opts.ask(collect_cluster)
    total = 0
    for host, items in sorted(removed.items()):
        for item in items:
            console.print(f"{escape(host)}: removed {escape(item)}")
        total += len(items)
    console.print(
        "nothing to clean on the cluster" if not total else f"{total} item(s) removed on the cluster"
    )


def exec_(name: str, node: str, command: list[str], opts: ClusterOptions) -> int:
    with _attached(name, opts) as lab:
        done = _node(lab, node).run(command, timeout=None)
    sys.stdout.buffer.write(done.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(done.stderr)
    return int(done.code)


def inspect(name: str, as_json: bool, opts: ClusterOptions) -> None:
    with _attached(name, opts) as lab:
        data = lab.inspect()
        data["health"] = lab.health()
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    from tunlab.topologies._inspect import describe

    console.print(f"[bold]lab {escape(name)}[/] across {len(data['hosts'])} host(s)")
    for part, cause in data["health"].items():
        err_console.print(f"[red]degraded:[/] {escape(part)}: {escape(cause)}")
    for host, part in data["hosts"].items():
        console.print(f"[bold]host {escape(host)}[/]")
        if "error" in part:
            err_console.print(f"  {escape(part['error'])}")
            continue
        for line in describe(part):
            console.print(f"  {line}", markup=False)


def ps(name: str, node: str | None, as_json: bool, opts: ClusterOptions) -> None:
    with _attached(name, opts) as lab:
        found: dict[str, Any] = lab.processes(node)
        placement = lab.placement
    print_processes(
        found,
        as_json,
        ("node", "host", "pid", "state", "cpu", "command"),
        lambda n, p: (n, placement[n], str(p.pid), p.state, f"{p.cpu_seconds:.2f}s", p.command),
    )


def impair(name: str, link: str, value: Any, direction: Any, as_json: bool, opts: ClusterOptions) -> None:
    with _attached(name, opts) as lab:
        live = lab.link(int(link) if link.isdigit() else link)
        if value is None:
            live.clear()
        else:
            live.impair(value, direction=direction)
        stats = live.stats()
    if as_json:
        click.echo(json.dumps(stats, indent=2, default=str))
        return
    console.print(f"links[{live.index}] of lab {escape(name)}:")
    for key in ("a_to_b", "b_to_a"):
        console.print(f"  {key}: {stats.get(key) or '(none)'}", markup=False)


def capture(
    name: str, node: str, interface: str, seconds: float, count: int | None, opts: ClusterOptions
) -> tuple[bytes, int, int]:
    with _attached(name, opts) as lab:
        result: tuple[bytes, int, int] = _node(lab, node).capture(interface, seconds=seconds, count=count)
    return result

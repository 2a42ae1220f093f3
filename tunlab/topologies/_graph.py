"""Draw a topology: mermaid or graphviz dot text, or svg/png through graphviz's `dot`."""

from __future__ import annotations

import functools
import itertools
import math
import shutil
import subprocess

from tunlab.errors import LabError, TopologyError
from tunlab.topologies._catalog import Catalog, catalog
from tunlab.topologies._drivers import driver_for
from tunlab.topologies._links import link_type
from tunlab.topologies._models import Topology

FORMATS = ("mermaid", "dot", "svg", "png")


def _iface_label(cat: Catalog, node: str, iface: str) -> str:
    entry = cat.ifaces.get((node, iface))
    if entry is None:
        return iface
    addrs = ", ".join(str(a) for a in entry.addresses)
    return f"{iface} {addrs}".strip()


def to_mermaid(topo: Topology) -> str:
    lines = ["graph LR"]
    cat = catalog(topo)
    for name, node in topo.resolved_nodes().items():
        tuns = [i for i in cat.of_node(name) if i.link_index is None]
        extra = "".join(f"<br/>{i.kind} {i.name} {' '.join(map(str, i.addresses))}" for i in tuns)
        if driver_for(node.kind).interfaces_in_guest:  # its own kernel: a double-bordered box
            lines.append(f'  {name}[["{name} (vm){extra}"]]')
        else:
            lines.append(f'  {name}["{name} ({node.kind}){extra}"]')
    label = functools.partial(_iface_label, cat)
    for li, link in enumerate(topo.links):
        lines += link_type(link.type).mermaid(li, link, label)
    return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    """A graphviz quoted string; real newlines become graphviz line breaks."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


WRAP_AFTER = 12  # nodes in one row before a big lab is drawn in rows


def _walk_order(topo: Topology) -> list[str]:
    """Nodes in the order a walk along the links meets them (so chains stay in sequence)."""
    neighbours: dict[str, list[str]] = {n: [] for n in topo.nodes}
    for link in topo.links:
        ends = [e.node for e in link.endpoints if e.node in neighbours]
        for a in ends:
            neighbours[a] += [b for b in ends if b != a]
    order: list[str] = []
    seen: set[str] = set()
    for start in topo.nodes:
        stack = [start]
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            order.append(node)
            stack.extend(reversed([n for n in neighbours[node] if n not in seen]))
    return order


def _rows(topo: Topology) -> list[list[str]]:
    """Big labs in rows of about sqrt(2n) nodes, in walk order (a long chain becomes a snake)."""
    order = _walk_order(topo)
    per_row = max(WRAP_AFTER // 2, math.ceil(math.sqrt(2 * len(order))))
    return [order[i : i + per_row] for i in range(0, len(order), per_row)]


def to_dot(topo: Topology) -> str:
    """Nodes list their interfaces and addresses; edges say the link type and which interfaces.

    Up to WRAP_AFTER nodes are drawn left to right; bigger labs in rows, so a 100-node chain
    is a readable page instead of a 30,000-pixel strip.
    """
    cat = catalog(topo)
    wrap = len(topo.nodes) > WRAP_AFTER
    lines = [
        f"graph {_q(topo.name)} {{",
        f"  graph [{'newrank=true, rankdir=TB' if wrap else 'rankdir=LR'}, nodesep=0.6, ranksep=1.2, "
        "fontname=Helvetica, labelloc=t, " + "label=" + _q(f"tunlab lab: {topo.name}") + "];",
        '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname=Helvetica, fontsize=11];',
        '  edge [fontname=Helvetica, fontsize=10, color="#445566"];',
    ]
    for name, node in topo.resolved_nodes().items():
        rows = [f"{name}  [{node.kind}]"]
        for i in sorted(cat.of_node(name), key=lambda x: x.name):
            addrs = " ".join(str(a) for a in i.addresses)
            rows.append(f"{i.name} ({i.kind}) {addrs}".rstrip())
        own_kernel = driver_for(node.kind).interfaces_in_guest
        style = ', peripheries=2, fillcolor="#eaf6ea"' if own_kernel else ""
        lines.append(f"  {_q(name)} [label={_q(chr(10).join(rows))}{style}];")
    label_attr = "label"
    if wrap:  # rows of nodes, stacked by invisible edges between the rows' first nodes
        layout = _rows(topo)
        for row in layout:
            lines.append("  { rank=same; " + " ".join(_q(n) + ";" for n in row) + " }")
        for upper, lower in itertools.pairwise(layout):
            lines.append(f"  {_q(upper[0])} -- {_q(lower[0])} [style=invis, weight=10];")
        label_attr = "xlabel"  # labels beside edges inside a row, not as extra ranks
    for li, link in enumerate(topo.links):
        lines += link_type(link.type).dot(li, link, _q, label_attr)
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_graph(topo: Topology, fmt: str) -> str | bytes:
    if fmt == "mermaid":
        return to_mermaid(topo)
    if fmt == "dot":
        return to_dot(topo)
    if fmt in ("svg", "png"):
        dot = shutil.which("dot")
        if dot is None:
            raise LabError(f"--format {fmt} needs graphviz's `dot` (apt-get install graphviz)")
        done = subprocess.run([dot, f"-T{fmt}"], input=to_dot(topo).encode(), capture_output=True, timeout=60)
        if done.returncode != 0:
            raise LabError(f"graphviz failed: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout
    raise TopologyError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")

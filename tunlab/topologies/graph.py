"""Draw a topology: mermaid or graphviz dot text, or svg/png through graphviz's `dot`."""

from __future__ import annotations

import itertools
import math
import shutil
import subprocess

from tunlab.errors import LabError, TopologyError
from tunlab.topologies.models import Topology
from tunlab.topologies.validate import Catalog, catalog

FORMATS = ("mermaid", "dot", "svg", "png")
_EDGE_STYLE = {"veth": "solid", "tun-pair": "bold", "vxlan": "dashed", "bridge": "solid"}


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
        if node.kind == "vm":  # a guest with its own kernel: drawn as a double-bordered box
            lines.append(f'  {name}[["{name} (vm){extra}"]]')
        else:
            lines.append(f'  {name}["{name} ({node.kind}){extra}"]')
    for li, link in enumerate(topo.links):
        if link.type == "bridge":
            br = link.name or f"br{li}"
            lines.append(f'  {br}{{{{"{br} (bridge)"}}}}')
            for ep in link.endpoints:
                lines.append(f'  {ep.node} ---|"{_iface_label(cat, ep.node, ep.interface)}"| {br}')
            continue
        a, b = link.endpoints[0], link.endpoints[-1]
        arrow = {"tun-pair": "<==>", "vxlan": "-.-"}.get(link.type, "---")
        left, right = _iface_label(cat, a.node, a.interface), _iface_label(cat, b.node, b.interface)
        lines.append(f'  {a.node} {arrow}|"{left} · {link.type} · {right}"| {b.node}')
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
        style = ', peripheries=2, fillcolor="#eaf6ea"' if node.kind == "vm" else ""
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
        style = _EDGE_STYLE.get(link.type, "solid")
        if link.type == "bridge":
            br = link.name or f"br{li}"
            lines.append(
                f'  {_q(br)} [shape=ellipse, fillcolor="#fdf3e1", label={_q(br + chr(10) + "(bridge)")}];'
            )
            for ep in link.endpoints:
                lines.append(f"  {_q(ep.node)} -- {_q(br)} [label={_q(ep.interface)}];")
            continue
        a, b = link.endpoints[0], link.endpoints[-1]
        extra = ""
        if link.type == "tun-pair":
            extra = " (offload)" if link.offload else ""
        elif link.type == "vxlan":
            extra = f" vni {link.vni}"
        label = f"{link.type}{extra}{chr(10)}{a.interface} — {b.interface}"
        lines.append(f"  {_q(a.node)} -- {_q(b.node)} [style={style}, {label_attr}={_q(label)}];")
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

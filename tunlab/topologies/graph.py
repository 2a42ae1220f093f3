"""Draw a topology: mermaid or graphviz dot text, or svg/png through graphviz's `dot`."""

from __future__ import annotations

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


def to_dot(topo: Topology) -> str:
    """Nodes list their interfaces and addresses; edges say the link type and which interfaces."""
    cat = catalog(topo)
    lines = [
        f"graph {_q(topo.name)} {{",
        "  graph [rankdir=LR, nodesep=0.6, ranksep=1.2, fontname=Helvetica, labelloc=t, "
        + "label="
        + _q(f"tunlab lab: {topo.name}")
        + "];",
        '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname=Helvetica, fontsize=11];',
        '  edge [fontname=Helvetica, fontsize=10, color="#445566"];',
    ]
    for name, node in topo.resolved_nodes().items():
        rows = [f"{name}  [{node.kind}]"]
        for i in sorted(cat.of_node(name), key=lambda x: x.name):
            addrs = " ".join(str(a) for a in i.addresses)
            rows.append(f"{i.name} ({i.kind}) {addrs}".rstrip())
        lines.append(f"  {_q(name)} [label={_q(chr(10).join(rows))}];")
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
        lines.append(f"  {_q(a.node)} -- {_q(b.node)} [style={style}, label={_q(label)}];")
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

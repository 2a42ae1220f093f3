"""A live view of a running lab, read from netlink in each of its namespaces."""

from __future__ import annotations

import ipaddress
from typing import Any

from tunlab.netns import NetNamespace
from tunlab.topologies.state import LabState

_IFF_UP, _IFF_LOWER_UP = 0x1, 0x10000


def _interfaces(ns: NetNamespace) -> list[dict[str, Any]]:
    out = []
    with ns.iproute() as ipr:
        addrs: dict[int, list[str]] = {}
        for a in ipr.get_addr():
            local = a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")
            ip = ipaddress.ip_address(local)
            if ip.version == 6 and ip.is_link_local:
                continue
            addrs.setdefault(a["index"], []).append(f"{local}/{a['prefixlen']}")
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            if name == "lo":
                continue
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info else None
            stats = link.get_attr("IFLA_STATS64") or {}
            flags = link["flags"]
            out.append(
                {
                    "name": name,
                    "kind": kind or "?",
                    "state": "up" if flags & _IFF_UP else "down",
                    "carrier": bool(flags & _IFF_LOWER_UP),
                    "mtu": link.get_attr("IFLA_MTU"),
                    "mac": link.get_attr("IFLA_ADDRESS"),
                    "addresses": addrs.get(link["index"], []),
                    "rx_packets": stats.get("rx_packets", 0),
                    "tx_packets": stats.get("tx_packets", 0),
                    "rx_bytes": stats.get("rx_bytes", 0),
                    "tx_bytes": stats.get("tx_bytes", 0),
                }
            )
        routes = []
        for family in (2, 10):
            for r in ipr.get_routes(family=family):
                if r.get_attr("RTA_TABLE") != 254 or r["type"] != 1:
                    continue
                dst = r.get_attr("RTA_DST")
                dst = f"{dst}/{r['dst_len']}" if dst else "default"
                via = r.get_attr("RTA_GATEWAY")
                if family == 10 and str(dst).startswith("fe80"):
                    continue
                routes.append(f"{dst} via {via}" if via else f"{dst} (connected)")
    return [{"interfaces": out, "routes": routes}]


def inspect_state(state: LabState) -> dict[str, Any]:
    """Nodes, interfaces, routes and the original offload state of a running lab."""
    nodes: dict[str, Any] = {}
    for name, info in state.nodes.items():
        entry: dict[str, Any] = {"kind": info.get("kind"), "netns": info.get("netns")}
        try:
            ns = NetNamespace.open(info["netns"])
        except OSError as exc:
            entry["error"] = str(exc)
        else:
            with ns:
                data = _interfaces(ns)[0]
            entry.update(data)
            for iface in entry["interfaces"]:
                original = state.offload_original.get(f"{name}:{iface['name']}")
                if original is not None:
                    iface["offload_original"] = original
        nodes[name] = entry
    return {
        "name": state.name,
        "id": state.id,
        "status": state.status,
        "holder_pid": state.owner_pid,
        "holder_alive": state.owner_alive,
        "detached": state.detached,
        "source": state.source,
        "nodes": nodes,
        "links": [
            {
                "type": link.get("type", "veth"),
                "endpoints": [f"{e['node']}:{e['interface']}" for e in link["endpoints"]],
            }
            for link in state.topology.get("links", [])
        ],
    }

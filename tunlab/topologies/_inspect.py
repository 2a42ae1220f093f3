"""A live view of a running lab, read from netlink in each of its namespaces."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

from tunlab._linux import cgroups, procs
from tunlab._linux.netns import NETNS_RUN_DIR, NetNamespace
from tunlab._linux.procs import ProcessInfo
from tunlab.topologies._drivers import driver_for
from tunlab.topologies._links import link_type
from tunlab.topologies._state import LabState

_IFF_UP, _IFF_LOWER_UP = 0x1, 0x10000
_ARPHRD_ETHER = 1  # a TAP device's link type (a TUN has ARPHRD_NONE)


def interfaces_and_routes(ns: NetNamespace) -> dict[str, Any]:
    """Interfaces (addresses, MTU, state, counters) and main-table routes of a namespace."""
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
            if kind == "tun" and link["ifi_type"] == _ARPHRD_ETHER:
                kind = "tap"  # the kernel's kind is "tun" for both; a TAP carries Ethernet
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
    return {"interfaces": out, "routes": routes}


def node_processes(record: dict[str, Any]) -> list[ProcessInfo]:
    """What runs in a node, from its state record: its cgroup's members and every other
    process in its network namespace (a container's, a VM's qemu: all found the same way)."""
    pids: set[int] = set()
    group = record.get("cgroup")
    if group:
        pids.update(cgroups.members(Path(str(group))))
    netns = str(record.get("netns") or "")
    path = netns if "/" in netns else f"{NETNS_RUN_DIR}/{netns}"
    try:
        pids.update(procs.in_netns(os.stat(path).st_ino))
    except OSError:
        pass
    found = [procs.info(pid) for pid in sorted(pids)]
    return [p for p in found if p is not None and p.state != "Z"]


def inspect_state(state: LabState) -> dict[str, Any]:
    """Nodes, interfaces, routes and the original offload state of a running lab."""
    nodes: dict[str, Any] = {}
    for name, info in state.nodes.items():
        entry: dict[str, Any] = {"kind": info.get("kind"), "netns": info.get("netns")}
        entry["processes"] = len(node_processes(info))
        try:
            ns = NetNamespace.open(info["netns"])
        except FileNotFoundError:
            entry["error"] = f"its namespace {info['netns']} is gone (deleted from outside the lab)"
        except OSError as exc:
            entry["error"] = str(exc)
        else:
            with ns:
                data = interfaces_and_routes(ns)
            entry.update(data)
            for iface in entry["interfaces"]:
                original = state.offload_original.get(f"{name}:{iface['name']}")
                if original is not None:
                    iface["offload_original"] = original
        try:
            entry.update(driver_for(str(info.get("kind"))).inspect_extra(state.name, name, info))
        except Exception as exc:  # a kind's extras never hide the rest of the lab
            entry["extra_error"] = f"{type(exc).__name__}: {exc}"
        nodes[name] = entry
    return {
        "name": state.name,
        "id": state.id,
        "status": state.status,
        "health": dict(state.health),
        "holder_pid": state.owner_pid,
        "holder_alive": state.owner_alive,
        "detached": state.detached,
        "source": state.source,
        "nodes": nodes,
        "links": [
            link_type(str(link.get("type"))).describe(link) for link in state.topology.get("links", [])
        ],
    }


def format_interface(i: dict[str, Any]) -> str:
    """One line: name, kind, state, MTU, addresses, counters (and the original offload state)."""
    off = f" offload(original) {i['offload_original']}" if "offload_original" in i else ""
    return (
        f"{i['name']} {i['kind']} {i['state']} mtu {i['mtu']} {' '.join(i['addresses'])} "
        f"rx {i['rx_packets']}p/{i['rx_bytes']}B tx {i['tx_packets']}p/{i['tx_bytes']}B{off}"
    )


def describe(data: dict[str, Any]) -> list[str]:
    """inspect_state() as text: each node, its interfaces and its routes."""
    lines = []
    for name, node in data["nodes"].items():
        count = node.get("processes")
        running = f", {count} process{'es' if count != 1 else ''}" if count is not None else ""
        lines.append(f"{name} ({node['kind']}, {node['netns']}{running})")
        lines += [f"  {format_interface(i)}" for i in node.get("interfaces", [])]
        lines += [f"  route {r}" for r in node.get("routes", [])]
        if "accel" in node:
            lines.append(f"  accelerator {node['accel']}")
        if node.get("guest_interfaces"):
            lines.append("  in the guest:")
            lines += [f"    {format_interface(i)}" for i in node["guest_interfaces"]]
        if "guest_error" in node:
            lines.append(f"  guest interfaces unknown: {node['guest_error']}")
        if "console" in node:
            tail = node.get("console_tail") or []
            lines.append(
                f"  console {node['console']}" + (f" (last lines: {' | '.join(tail[-3:])})" if tail else "")
            )
        if "error" in node:
            lines.append(f"  cannot read it: {node['error']}")
    return lines

"""ethtool offload features of lab interfaces: read the original state, then switch."""

from __future__ import annotations

import re
from typing import Any

from tunlab._linux.netns import NetNamespace
from tunlab.errors import LabError

# `ethtool -K` short names -> the kernel feature strings they switch. Groups are patterns, as in
# ethtool itself, so bits newer kernels add (tx-tcp-accecn-segmentation, ...) are switched too.
FEATURE_GROUPS: dict[str, re.Pattern[str]] = {
    "gro": re.compile(r"^rx-gro$"),
    "gso": re.compile(r"^tx-generic-segmentation$"),
    "tso": re.compile(r"^tx-tcp[0-9a-z-]*-segmentation$"),
    "tx-checksum": re.compile(r"^tx-checksum-"),
    "rx-checksum": re.compile(r"^rx-checksum$"),
    "sg": re.compile(r"^tx-scatter-gather$"),
}
# the feature read back as the group's state (ethtool -k shows the group as on when it is on)
PRIMARY = {
    "gro": "rx-gro",
    "gso": "tx-generic-segmentation",
    "tso": "tx-tcp-segmentation",
    "tx-checksum": "tx-checksum-ip-generic",
    "rx-checksum": "rx-checksum",
    "sg": "tx-scatter-gather",
}


def _members(short: str, feats: dict[str, Any]) -> list[str]:
    return [n for n in feats if FEATURE_GROUPS[short].match(n)]


def _primary(short: str, names: list[str], feats: dict[str, Any]) -> str:
    return PRIMARY[short] if PRIMARY[short] in feats else names[0]


def _ethtool() -> Any:
    from pyroute2.ethtool import Ethtool

    return Ethtool()


def read_features(ns: NetNamespace, ifname: str) -> dict[str, bool]:
    """{gro: on?, gso: ..., tso: ..., tx-checksum: ..., rx-checksum: ..., sg: ...} now."""

    def read() -> dict[str, bool]:
        with _ethtool() as eth:
            feats = eth.get_features(ifname).features
        out = {}
        for short in FEATURE_GROUPS:
            names = _members(short, feats)
            if not names:
                continue
            primary = _primary(short, names, feats)
            # a group is on when any changeable member is on (what `ethtool -k` prints)
            changeable = [n for n in names if feats[n].available] or [primary]
            out[short] = any(bool(feats[n].enable) for n in changeable)
        return out

    return ns.call(read)


def set_features(ns: NetNamespace, ifname: str, wanted: dict[str, bool]) -> None:
    """Switch features like `ethtool -K`, then read them back: anything the device (or a
    dependency, like TSO needing checksum offload) does not allow is an error naming it."""

    def write() -> None:
        with _ethtool() as eth:
            current = eth.get_features(ifname)
            feats = current.features
            for short, on in wanted.items():
                for n in _members(short, feats):
                    if feats[n].available:
                        feats[n].enable = on
            try:
                eth.set_features(ifname, current)
            except Exception as exc:  # pyroute2 NotSupportedError, OSError
                raise LabError(
                    f"{ifname}: the driver refused to change {', '.join(wanted)} ({type(exc).__name__})"
                ) from None
            after = eth.get_features(ifname).features
        stuck = []
        for short, on in wanted.items():
            names = _members(short, after)
            if not names:
                continue
            primary = _primary(short, names, after)
            state = bool(after[primary].enable) if on else any(bool(after[n].enable) for n in names)
            if state != on:
                stuck.append(f"{short} stays {'on' if state else 'off'}")
        if stuck:
            raise LabError(f"{ifname}: cannot be changed as asked: {', '.join(stuck)}")

    ns.call(write)

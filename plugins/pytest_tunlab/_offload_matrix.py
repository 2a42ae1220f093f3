"""Offload combinations to run a test under, applied to interfaces and restored afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tunlab._linux import ethtool
from tunlab._linux.netns import NetNamespace
from tunlab.errors import LabError

FEATURES = ("gro", "gso", "tso", "tx-checksum")


@dataclass(frozen=True)
class Combination:
    """One offload setting: a readable id and the features it switches."""

    id: str
    features: dict[str, bool] = field(default_factory=dict)

    def describe(self) -> str:
        return ", ".join(f"{k} {'on' if v else 'off'}" for k, v in self.features.items()) or "defaults"


DEFAULT_COMBINATIONS = (
    Combination("all-on", dict.fromkeys(FEATURES, True)),
    Combination("gro-off", {"gro": False, "gso": True, "tso": True, "tx-checksum": True}),
    Combination("gso+tso-off", {"gro": True, "gso": False, "tso": False, "tx-checksum": True}),
    Combination("tso+tx-checksum-off", {"gro": True, "gso": True, "tso": False, "tx-checksum": False}),
    Combination("all-off", dict.fromkeys(FEATURES, False)),
)


def combination(spec: Combination | dict[str, bool] | str) -> Combination:
    """A Combination from itself, a {feature: on} dict, or a default's id ('gro-off')."""
    if isinstance(spec, Combination):
        return spec
    if isinstance(spec, str):
        for combo in DEFAULT_COMBINATIONS:
            if combo.id == spec:
                return combo
        raise ValueError(f"offload_matrix: unknown combination {spec!r}")
    unknown = set(spec) - set(ethtool.FEATURE_GROUPS)
    if unknown:
        raise ValueError(f"offload_matrix: unknown features {sorted(unknown)}")
    name = "+".join(f"{k}-{'on' if v else 'off'}" for k, v in spec.items())
    return Combination(name, dict(spec))


class OffloadCase:
    """The combination of the current test: apply() it to interfaces; originals come back after."""

    def __init__(self, combo: Combination, add_finalizer: Callable[[Callable[[], None]], None]) -> None:
        self.combination = combo
        self.id = combo.id
        self.features = combo.features
        self._add_finalizer = add_finalizer
        self.applied: dict[str, dict[str, bool]] = {}

    def apply_ns(self, ns: NetNamespace, interface: str, label: str | None = None) -> dict[str, bool]:
        """Switch the features on one interface; skip the test if the device cannot."""
        original = ethtool.read_features(ns, interface)
        restore = {k: v for k, v in original.items() if k in self.features}
        try:
            ethtool.set_features(ns, interface, self.features)
        except LabError as exc:
            with contextlib.suppress(LabError):
                ethtool.set_features(ns, interface, restore)
            pytest.skip(f"offload combination {self.id}: {exc}")
        self._add_finalizer(lambda: ethtool.set_features(ns, interface, restore))
        self.applied[label or interface] = original
        return original

    def apply(self, target: Any, *interfaces: str) -> None:
        """target: a Lab with 'node:iface' names, or a tun_device handle (its own interface)."""
        if hasattr(target, "node") and callable(target.node):
            for spec in interfaces:
                node, _, iface = spec.partition(":")
                if not iface:
                    raise ValueError(f"offload_matrix.apply: write interfaces as 'node:iface', not {spec!r}")
                self.apply_ns(target.node(node).netns, iface, spec)
            return
        ns = getattr(target, "netns", None)
        if isinstance(ns, NetNamespace):
            names = interfaces or (target.device.name,)
            for name in names:
                self.apply_ns(ns, name)
            return
        raise TypeError(f"offload_matrix.apply: cannot apply to {type(target).__name__}")

    def __repr__(self) -> str:
        return f"<offload combination {self.id}: {self.combination.describe()}>"

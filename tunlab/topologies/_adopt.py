"""The supervisor's side of a hand-over (_handover): the lab rebuilt around what came across —
nodes attached from the state file, the devices as they are, relays started again with the
impairment each had — and held here from now on."""

from __future__ import annotations

import os
from typing import Any

from tunlab.errors import LabError
from tunlab.topologies._lab import Lab, hold


def adopt(message: dict[str, Any], fds: list[int]) -> Lab:
    """In the supervisor: the lab, held here from now on (its state file says so)."""
    from tunlab.devices._sync import SyncDevice
    from tunlab.relay.impair._model import LinkImpairment
    from tunlab.topologies import _engine as engine
    from tunlab.topologies._drivers import driver_for
    from tunlab.topologies._links.wiring import impair_of, start_relay
    from tunlab.topologies._models import Topology
    from tunlab.topologies._state import LabState, adopt_claim, process_start

    state = LabState.load(str(message["name"]))
    if state is None:
        raise LabError(f"no state file for lab '{message['name']}'")
    adopt_claim(state.id, fds[0])
    topo = Topology.model_validate(state.topology)
    lab = Lab(topo, name=state.name, source=state.source)
    lab.id = state.id
    lab.detached = True
    rt = engine.Runtime(topo, state.id, state)
    for name, node in rt.resolved.items():
        driver = rt.drivers[name] = driver_for(node.kind)
        env = {str(k): str(v) for k, v in node.env.items()}
        rt.nodes[name] = driver.attach(rt.ctx, name, state.nodes.get(name, {}), env)
    engine.place_impairments(rt)
    rt.impairs = {
        int(li): (LinkImpairment.model_validate(imp) if imp is not None else None)
        for li, imp in message["impairs"].items()
    }
    devices = [SyncDevice.from_fd(fd) for fd in fds[1:]]
    rt.devices = {(str(k[0]), str(k[1])): dev for k, dev in zip(message["devices"], devices, strict=True)}
    state.relay_workers = []
    for spec in message["relays"]:
        key = (int(spec["key"][0]), int(spec["key"][1]))
        start_relay(rt, key, devices[spec["a"]], devices[spec["b"]], impair_of(rt, key), str(spec["name"]))
    state.owner_pid, state.owner_start = os.getpid(), process_start(os.getpid())
    state.detached = True
    hold(lab, rt, state)
    return lab

"""Handing a running lab to a background supervisor (what `--tunlab-keep-on-failure` does with
the lab of a failing test): the supervisor becomes its holder, so `tunlab exec`, `inspect`,
`impair` and `down` work on it after the process that made it has exited.

What a holder owns that dies with its process goes across a Unix socket with SCM_RIGHTS: the
lab's lock (the same open file, so the lab is never unowned) and every TUN/TAP device (the same
interfaces, nothing re-made); relays are stopped here and started again there on those
devices with the impairment they had. Namespaces, cgroups and containers outlive processes and
are attached by the supervisor from the lab's state file. A VM's qemu dies with its spawner,
so a lab with VM nodes cannot be handed over (LabError says so).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from tunlab.errors import LabError
from tunlab.topologies._state import labs_dir

if TYPE_CHECKING:
    from tunlab.topologies._lab import Lab

MAX_FDS = 250  # SCM_RIGHTS carries at most 253 fds per message


def hand_over(lab: Lab, rt: Any, lock_fd: int) -> int:
    """Give the running lab (its runtime rt, its lock fd) to a new supervisor; its pid.

    On return this process holds nothing of the lab: relays stopped, devices closed here."""
    if rt.guests:
        raise LabError(
            f"lab '{lab.name}' has VM nodes ({', '.join(sorted(rt.guests))}): a guest's qemu ends with "
            "the process that started it, so the lab cannot be handed over"
        )
    keys = list(rt.devices)
    if len(keys) + 1 > MAX_FDS:
        raise LabError(f"lab '{lab.name}' holds {len(keys)} devices: too many to hand over in one message")
    index = {id(dev): i for i, dev in enumerate(rt.devices.values())}
    relays = [
        {"key": list(key), "a": index[id(r.a)], "b": index[id(r.b)], "name": r.name}
        for key, r in rt.relays.items()
    ]
    impairs = {
        str(li): (imp.model_dump(mode="json") if imp is not None else None) for li, imp in rt.impairs.items()
    }
    message = json.dumps(
        {"name": lab.name, "devices": [list(k) for k in keys], "relays": relays, "impairs": impairs}
    )
    for relay in rt.relays.values():
        relay.stop()  # the devices must have one reader: the supervisor's relays
    rt.relays.clear()
    here, there = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    log = labs_dir() / f"{lab.name}.log"
    argv = [sys.executable, "-m", "tunlab.topologies._supervisor", "--adopt-fd", str(there.fileno()),
            "--name", lab.name, "--file", lab.source or "-", "--ready-fd", "-1"]  # fmt: skip
    with open(log, "ab") as logf:
        proc = subprocess.Popen(
            argv, pass_fds=(there.fileno(),), stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
            start_new_session=True,
        )  # fmt: skip
    there.close()
    with here:
        fds = [lock_fd, *(dev.fileno() for dev in rt.devices.values())]
        socket.send_fds(here, [message.encode() + b"\n"], fds)
        answer = here.makefile("r").readline().strip()
    if not answer.startswith("OK"):
        proc.wait(10)
        raise LabError(f"the supervisor could not take the lab: {answer.removeprefix('ERR ') or 'it exited'}")
    for dev in rt.devices.values():
        dev.close()  # the supervisor holds its own copies: the interfaces stay
    rt.devices.clear()
    return proc.pid


def receive(fd: int) -> tuple[dict[str, Any], list[int], socket.socket]:
    """In the supervisor: the hand-over message, its fds (lock first) and the socket to answer on."""
    sock = socket.socket(fileno=fd)
    data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, MAX_FDS + 1)
    for got in fds:
        os.set_inheritable(got, False)
    return json.loads(data.decode()), fds, sock


def adopt(message: dict[str, Any], fds: list[int]) -> Lab:
    """In the supervisor: the lab, held here from now on (its state file says so)."""
    from tunlab.devices._sync import SyncDevice
    from tunlab.relay.impair._model import LinkImpairment
    from tunlab.topologies import _engine as engine
    from tunlab.topologies._drivers import driver_for
    from tunlab.topologies._lab import Lab
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
    lab._take(rt, state)
    return lab

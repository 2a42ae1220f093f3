"""Handing a running lab to a background supervisor (what `--tunlab-keep-on-failure` does with
the lab of a failing test): the supervisor becomes its holder, so `tunlab exec`, `inspect`,
`impair` and `down` work on it after the process that made it has exited.

What a holder owns that dies with its process goes across a Unix socket with SCM_RIGHTS: the
lab's lock (the same open file, so the lab is never unowned) and every TUN/TAP device (the same
interfaces, nothing re-made); relays are stopped here and started again there on those
devices with the impairment they had. Namespaces, cgroups and containers outlive processes and
are attached by the supervisor from the lab's state file (_adopt). A VM's qemu dies with its
spawner, so a lab with VM nodes cannot be handed over (LabError says so).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any

from tunlab.errors import LabError
from tunlab.topologies._state import labs_dir

MAX_FDS = 250  # SCM_RIGHTS carries at most 253 fds per message


def refuse_guests(name: str, rt: Any) -> None:
    """LabError when the lab has VM nodes: their qemu ends with the process that started it."""
    if rt.guests:
        raise LabError(
            f"lab '{name}' has VM nodes ({', '.join(sorted(rt.guests))}): a guest's qemu ends with "
            "the process that started it, so the lab cannot be handed over"
        )


def hand_over(name: str, source: str | None, rt: Any, lock_fd: int) -> int:
    """Give the running lab `name` (its runtime rt, its lock fd) to a new supervisor; its pid.

    On return this process holds nothing of the lab: relays stopped, devices closed here."""
    refuse_guests(name, rt)
    keys = list(rt.devices)
    if len(keys) + 1 > MAX_FDS:
        raise LabError(f"lab '{name}' holds {len(keys)} devices: too many to hand over in one message")
    index = {id(dev): i for i, dev in enumerate(rt.devices.values())}
    relays = [
        {"key": list(key), "a": index[id(r.a)], "b": index[id(r.b)], "name": r.name}
        for key, r in rt.relays.items()
    ]
    impairs = {
        str(li): (imp.model_dump(mode="json") if imp is not None else None) for li, imp in rt.impairs.items()
    }
    message = json.dumps(
        {"name": name, "devices": [list(k) for k in keys], "relays": relays, "impairs": impairs}
    )
    for relay in rt.relays.values():
        relay.stop()  # the devices must have one reader: the supervisor's relays
    rt.relays.clear()
    here, there = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    log = labs_dir() / f"{name}.log"
    argv = [sys.executable, "-m", "tunlab.topologies._supervisor", "--adopt-fd", str(there.fileno()),
            "--name", name, "--file", source or "-", "--ready-fd", "-1"]  # fmt: skip
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

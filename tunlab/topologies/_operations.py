"""Operations on labs held by other processes (a supervisor, a test, another shell): asking the
holder over its control socket, starting a detached holder, running commands in nodes, stopping
a lab. The CLI is these plus argument parsing and printing; programs use them directly."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunlab._linux.procs import ProcessInfo
from tunlab.errors import DeployError, LabError, TopologyError
from tunlab.relay._direction import Direction
from tunlab.topologies._cleanup import teardown_state
from tunlab.topologies._control import request
from tunlab.topologies._drivers import driver_of_record
from tunlab.topologies._drivers.base import ExecResult, LabContext, NodeHandle
from tunlab.topologies._state import LabState, alive, labs_dir, registry_lock

__all__ = [
    "Detached",
    "control_request",
    "exec_in_guest",
    "impair_running",
    "impairment_from_file",
    "inspect_running",
    "node_of",
    "running_state",
    "stop_lab",
    "up_detached",
]


def control_request(name: str, message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Ask the holder of lab `name` (another process) to do something; LabError if it cannot."""
    state = LabState.load(name)
    if state is None:
        raise LabError(f"no lab named '{name}' is running (see `tunlab ls`)")
    if not state.owner_alive:
        raise LabError(f"lab '{name}': its holder (pid {state.owner_pid}) is gone; `tunlab gc` cleans it up")
    return request(state.path.with_suffix(".sock"), message, timeout=timeout)


def _wait_gone(state: LabState, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not state.owner_alive:
            return True
        time.sleep(0.05)
    return not state.owner_alive


def stop_lab(name: str, timeout: float = 120.0) -> list[str]:
    """`tunlab down NAME`: ask the holder to tear down through its control socket (the holder
    keeps running: a program's `finally:` runs, its later calls raise LabStopped), or clean up
    if the holder is gone. Only a holder that does not answer (no socket, or wedged) gets
    SIGTERM, as the last resort."""
    state = LabState.load(name)
    if state is None:
        raise LabError(f"no lab named '{name}' is running (see `tunlab ls`)")
    if state.owner_alive:
        try:
            answer = request(
                state.path.with_suffix(".sock"),
                {"op": "down", "by": f"`tunlab down` (pid {os.getpid()})"},
                timeout,
            )
        except LabError:
            answer = None  # no control socket, or no answer: the signal is all that is left
        if answer is not None and answer.get("ok"):
            return [str(p) for p in answer.get("problems", [])]
        if answer is not None:
            raise LabError(f"lab '{name}': its holder could not tear it down: {answer.get('error')}")
        if alive(state.owner_pid, state.owner_start):
            os.kill(state.owner_pid, signal.SIGTERM)
        if not _wait_gone(state, timeout):
            raise LabError(
                f"lab '{name}': its holder (pid {state.owner_pid}) did not stop within {timeout:.0f} s"
            )
        if LabState.load(name) is None and not state.record_path.exists():
            return []  # the holder tore it down itself
    with registry_lock():
        return teardown_state(state)


# ---- starting a detached holder ---------------------------------------------------------------------
@dataclass(frozen=True)
class Detached:
    """A lab brought up by a background supervisor: its name, the supervisor's pid and log."""

    name: str
    pid: int
    log: Path

    def links(self) -> list[dict[str, Any]]:
        """Every link's placement and impairment, from the supervisor ([] if it cannot say)."""
        try:
            return list(control_request(self.name, {"op": "links"}).get("links", []))
        except LabError:
            return []


def up_detached(
    file: str | os.PathLike[str],
    name: str,
    variables: Sequence[str] = (),
    limits: Sequence[str] = (),
    progress: Callable[[str, int, int], None] | None = None,
) -> Detached:
    """Bring a lab up held by a background supervisor (`tunlab up -d`); returns once it is up.

    variables and limits are NAME=VALUE strings as on the command line; progress(step, index,
    total) hears each deploy step as the supervisor starts it. The error the supervisor met
    is raised as the foreground `up` raises it (DeployError with its step, TopologyError)."""
    labs_dir().mkdir(parents=True, exist_ok=True)
    log = labs_dir() / f"{name}.log"
    read_fd, write_fd = os.pipe()
    argv = [sys.executable, "-m", "tunlab.topologies._supervisor", "--file", str(Path(file).resolve()),
            "--name", name, "--ready-fd", str(write_fd)]  # fmt: skip
    for v in variables:
        argv += ["--var", v]
    for lim in limits:
        argv += ["--limit", lim]
    try:
        with open(log, "ab") as logf:
            proc = subprocess.Popen(
                argv, pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                start_new_session=True,
            )  # fmt: skip
    finally:
        os.close(write_fd)
    answer = ""
    with os.fdopen(read_fd) as ready:
        for line in ready:
            if line.startswith("STEP "):
                _, index, total, step = line.rstrip("\n").split(" ", 3)
                if progress is not None:
                    progress(step, int(index), int(total))
                continue
            answer = line.strip()
            break
    if not answer.startswith("OK"):
        proc.wait(10)
        raise _supervisor_error(answer.removeprefix("ERR ").strip(), proc.returncode, log)
    return Detached(name, proc.pid, log)


def _supervisor_error(record: str, code: int | None, log: Path) -> LabError:
    """The error the supervisor met, as the foreground `up` would have raised it (a deploy
    failure with its step and field, a topology error as bad input)."""
    try:
        found = json.loads(record)
    except ValueError:
        found = None
    if not isinstance(found, dict):
        return LabError(f"the supervisor exited ({code}); see {log}")
    message = str(found.get("message") or "")
    if found.get("type") == "deploy":
        return DeployError(str(found.get("step")), RuntimeError(message), found.get("field"))
    if found.get("type") == "topology":
        return TopologyError(message)
    return LabError(message)


# ---- using a running lab ------------------------------------------------------------------------------
def running_state(name: str) -> LabState:
    """The state of a lab whose holder lives (LabError saying what to do otherwise)."""
    state = LabState.load(name)
    if state is None:
        raise LabError(f"no lab named '{name}' (see `tunlab ls`)")
    if not state.owner_alive:
        raise LabError(
            f"lab '{name}' is not up: its holder (pid {state.owner_pid}) died; "
            "`tunlab gc` removes what it left"
        )
    return state


def inspect_running(name: str) -> dict[str, Any]:
    """A running lab as `tunlab inspect` shows it: nodes, interfaces, routes, and the live
    placement and counters of every link from its holder (`live` says when they are missing)."""
    from tunlab.topologies._inspect import inspect_state

    data = inspect_state(running_state(name))
    try:  # live counters come from the holder (it runs the relays)
        live = control_request(name, {"op": "links"})
        data["impairments"], data["relays"] = live.get("links", []), live.get("relays", {})
    except LabError as exc:
        state = running_state(name)
        data["impairments"] = [
            {"link": int(li), "endpoints": "", **info} for li, info in sorted(state.impairments.items())
        ]
        data["live"] = f"unavailable: {exc}"
    return data


def impair_running(
    name: str, link: str, impairment: dict[str, Any] | None, direction: Direction | None = None
) -> dict[str, Any]:
    """Change a link's impairment on a running lab (None clears it); every rule is checked here
    before the lab is touched (ImpairmentError, a ValueError, names the field)."""
    from tunlab.topologies._live_links import ImpairmentError, parse_impairment

    parse_impairment(impairment, direction)
    answer = control_request(
        name, {"op": "impair", "link": link, "impair": impairment, "direction": direction and direction.value}
    )
    if not answer.get("ok"):
        message = str(answer.get("error", "the lab's holder refused"))
        raise ImpairmentError(message) if answer.get("bad_input") else LabError(message)
    return answer


def impairment_from_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """An impairment mapping from a YAML/JSON/TOML file (as under a link's impair:)."""
    from tunlab.topologies._limits import DEFAULT_LIMITS
    from tunlab.topologies._loader import FORMATS
    from tunlab.topologies._parsing import parse

    where = Path(path)
    fmt = FORMATS.get(where.suffix.lower())
    if fmt is None:
        raise ValueError(f"{where}: use a .yaml, .toml or .json file")
    try:
        data = parse(where.read_text(), fmt, str(where), DEFAULT_LIMITS)
    except OSError as exc:
        raise ValueError(f"cannot read {where}: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where} must hold a mapping of impairment settings")
    return data


def node_of(name: str, node: str) -> tuple[LabState, NodeHandle | None]:
    """A handle on a node of a running lab held elsewhere; None for a node in a guest kernel
    (its commands go through the holder, see exec_in_guest). ValueError for an unknown node."""
    state = running_state(name)
    if node not in state.nodes:
        raise ValueError(f"lab '{name}' has no node '{node}' (nodes: {', '.join(state.nodes)})")
    record = state.nodes[node]
    driver = driver_of_record(record)
    if driver.interfaces_in_guest:
        return state, None
    env = {str(k): str(v) for k, v in state.topology.get("nodes", {}).get(node, {}).get("env", {}).items()}
    return state, driver.attach(LabContext(state.id, state.name), node, record, env)


def exec_in_guest(name: str, node: str, argv: list[str], timeout: float = 3600) -> ExecResult:
    """A command in a VM node, through the lab's holder (it holds the guest's agent)."""
    answer = control_request(name, {"op": "exec", "node": node, "argv": argv}, timeout=timeout)
    if not answer.get("ok"):
        message = str(answer.get("error"))
        raise ValueError(message) if answer.get("bad_input") else LabError(message)
    return ExecResult(
        int(answer.get("code", 1)),
        base64.b64decode(answer.get("stdout", "")),
        base64.b64decode(answer.get("stderr", "")),
    )


def processes_running(name: str, node: str | None = None) -> dict[str, list[ProcessInfo]]:
    """Every process in each node of a running lab (or one node), as `tunlab ps` lists them."""
    from tunlab.topologies._inspect import node_processes

    state = running_state(name)
    if node is not None and node not in state.nodes:
        raise LabError(f"lab '{name}' has no node '{node}' (nodes: {', '.join(state.nodes)})")
    return {n: node_processes(r) for n, r in state.nodes.items() if node is None or n == node}

"""`tunlab doctor` reports this machine as it is: each finding checked against the machine by
another route, and the exit code says whether labs can come up."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support import NOBODY, cli
from tunlab.topologies._impairments import kernel_qdiscs

pytestmark = pytest.mark.root


def doctor() -> tuple[int, dict[str, dict[str, object]]]:
    done = subprocess.run(
        [sys.executable, "-m", "tunlab._cli.main", "doctor", "--json"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    return done.returncode, {c["name"]: c for c in json.loads(done.stdout)}


def test_doctor_reports_this_machine(needs_root: None) -> None:
    code, found = doctor()
    assert code == 0  # root, TUN and namespaces work here: labs can come up
    for needed in ("root", "TUN/TAP (/dev/net/tun)", "network namespaces"):
        assert found[needed]["ok"] and found[needed]["needed"], found[needed]
    qdiscs = kernel_qdiscs()
    assert found["tc netem (kernel impairments)"]["ok"] == ("netem" in qdiscs)
    assert found["tc tbf (kernel impairments)"]["ok"] == ("tbf" in qdiscs)
    assert found["qemu (kind: vm)"]["ok"] == (shutil.which("qemu-system-x86_64") is not None)
    assert found["iperf3 (tunlab.traffic streams)"]["ok"] == (shutil.which("iperf3") is not None)
    for name, check in found.items():
        assert check["ok"] or check["fix"], f"{name}: missing without saying how to get it"


def test_doctor_fails_where_labs_cannot_come_up(needs_root: None, monkeypatch) -> None:
    """As a user without root (the euid doctor reads; nobody cannot run this venv's interpreter
    here, which lives under /root): the finding says so and the exit code is 1."""
    monkeypatch.setattr(os, "geteuid", lambda: NOBODY)
    code, out = cli("doctor")
    assert code == 1
    assert "labs cannot come up here: root" in out and "euid 65534" in out

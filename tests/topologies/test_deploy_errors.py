"""What only the kernel can refuse is reported with the field that caused it, in words (never a
bare errno tuple), and rolled back; and validate refuses what a node's namespace cannot have."""

from __future__ import annotations

import json
import textwrap

import pytest
from pyroute2 import NetlinkError

from tunlab.errors import DeployError, TopologyError
from tunlab.topologies import Lab, _sysctl_check, load_text
from tunlab.topologies._state import owned_namespaces

pytestmark = pytest.mark.root

HOST_ONLY = textwrap.dedent(
    """
    name: hostonly
    nodes:
      h1: {sysctls: {net.core.netdev_max_backlog: 2000}}
    """
)


def test_a_key_only_the_host_namespace_has_is_refused_by_validate(needs_root: None) -> None:
    with pytest.raises(TopologyError) as info:
        load_text(HOST_ONLY, "yaml", "lab.yaml")
    message = str(info.value)
    assert "nodes.h1.sysctls.net.core.netdev_max_backlog" in message
    assert "exists only in the host's own network namespace" in message


def test_what_only_the_kernel_refuses_names_the_field_and_rolls_back(needs_root: None, monkeypatch) -> None:
    # as an unprivileged validate would: it cannot look into a new namespace, so up is what refuses
    monkeypatch.setattr(_sysctl_check, "_namespace_keys", lambda: None)
    topo = load_text(HOST_ONLY, "yaml", "lab.yaml")
    lab = Lab(topo, unique=True)
    with pytest.raises(DeployError) as info:
        lab.up()
    message = str(info.value)
    assert "nodes.h1.sysctls.net.core.netdev_max_backlog: no such key in the node" in message, message
    assert "(2," not in message and "Errno" not in message
    assert owned_namespaces(lab.id) == []


@pytest.mark.parametrize(
    ("cause", "words"),
    [
        (NetlinkError(17, "File exists"), "File exists (EEXIST: something of that name already exists"),
        (OSError(1, "Operation not permitted"), "Operation not permitted (EPERM: run as root"),
        (OSError(19, "No such device", "/dev/net/tun"), "No such device: /dev/net/tun (ENODEV)"),
        (ValueError("a plain message"), "a plain message"),
    ],
)
def test_deploy_errors_say_the_kernel_error_in_words(cause: BaseException, words: str) -> None:
    message = str(DeployError("bridge br0", cause, "links[3]"))
    assert message.startswith("deploy failed at step 'bridge br0' (links[3]): ")
    assert words in message and "(17, " not in message


def test_a_detached_deploy_failure_comes_back_word_for_word() -> None:
    """The supervisor sends the error's parts; up -d rebuilds the same message even when the
    step's own name holds ': ' (an exec step does)."""
    from pathlib import Path

    from tunlab.topologies._operations import _supervisor_error
    from tunlab.topologies._supervisor import _error_record

    sent = DeployError("exec on h1: ping -c1 198.18.1.1", RuntimeError("exit status 1"), "nodes.h1.exec")
    record = json.dumps(_error_record(sent, str(sent)))
    back = _supervisor_error(record, 1, Path("/dev/null"))
    assert isinstance(back, DeployError) and str(back) == str(sent)

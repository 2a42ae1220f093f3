"""Every error path: a typed error that says what to do, and nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.support import NOBODY, fd_count, link_names, python_for_nobody
from tunlab import (
    DeviceBuilder,
    DevicePermissionError,
    InterfaceExistsError,
    Layer,
    NamespaceNotFoundError,
    SyncDevice,
)
from tunlab.errors import DeviceClosedError, DeviceError, UnsupportedOperationError

pytestmark = pytest.mark.root


def test_name_taken_by_another_interface(ns) -> None:
    with ns.iproute() as ipr:
        ipr.link("add", ifname="taken0", kind="veth", peer="taken1")
    before = fd_count()
    with pytest.raises(InterfaceExistsError) as info:
        DeviceBuilder().name("taken0").netns(ns.name).build_sync()
    assert f"an interface named 'taken0' already exists in namespace '{ns.name}'" in str(info.value)
    assert isinstance(info.value, FileExistsError)
    assert fd_count() == before


def test_name_taken_by_an_attached_tun(ns) -> None:
    with DeviceBuilder().name("busy0").netns(ns.name).build_sync():
        with pytest.raises(InterfaceExistsError, match="already exists"):
            DeviceBuilder().name("busy0").netns(ns.name).build_sync()


def test_missing_namespace() -> None:
    with pytest.raises(NamespaceNotFoundError) as info:
        DeviceBuilder().netns("tlt-does-not-exist").build_sync()
    assert "does not exist" in str(info.value) and "create it first" in str(info.value)


def test_not_a_namespace(tmp_path) -> None:
    path = tmp_path / "plain-file"
    path.write_text("")
    with pytest.raises(NamespaceNotFoundError, match="is not a network namespace"):
        DeviceBuilder().netns(str(path)).build_sync()


def test_failure_after_creation_removes_the_half_made_device(ns) -> None:
    before = fd_count()
    # IPv6 needs MTU >= 1280: the address step fails after the device exists
    builder = DeviceBuilder().name("thalf").mtu(1000).ipv6("2001:db8:20::1", 64).netns(ns.name)
    with pytest.raises(DeviceError) as info:
        builder.build_sync()
    assert "adding address 2001:db8:20::1/64" in str(info.value)
    assert "IPv6 is disabled" in str(info.value)
    assert "thalf" not in link_names(ns)
    assert fd_count() == before


def test_failure_removes_a_persistent_device_it_created(ns) -> None:
    builder = DeviceBuilder().name("thalfp").persist(True).mtu(1000).ipv6("2001:db8:21::1", 64).netns(ns.name)
    with pytest.raises(DeviceError):
        builder.build_sync()
    assert "thalfp" not in link_names(ns)


def test_set_name_errors(ns) -> None:
    with (
        DeviceBuilder().name("tn0").netns(ns.name).build_sync() as a,
        DeviceBuilder().name("tn1").netns(ns.name).build_sync(),
    ):
        with pytest.raises(ValueError, match="longer than 15 bytes"):
            a.set_name("x" * 16)
        with pytest.raises(InterfaceExistsError, match="'tn1' already exists"):
            a.set_name("tn1")
        assert a.name == "tn0"


def test_tun_has_no_mac_and_try_clone_needs_multi_queue(ns) -> None:
    with DeviceBuilder().name("tnomac").netns(ns.name).build_sync() as dev:
        with pytest.raises(UnsupportedOperationError, match="TUN devices have no MAC"):
            _ = dev.mac_address
        with pytest.raises(DeviceError, match=r"multi_queue\(True\)"):
            dev.try_clone()
        with pytest.raises(DeviceError, match="is not on"):
            dev.remove_address("198.18.99.1")


def test_closed_device_says_so(ns) -> None:
    dev = DeviceBuilder().name("tclosed").netns(ns.name).build_sync()
    dev.close()
    dev.close()  # idempotent
    for call in (dev.recv, dev.fileno, lambda: dev.name, lambda: dev.send(b"x")):
        with pytest.raises(DeviceClosedError):
            call()


def test_from_fd_rejects_other_fds(tmp_path) -> None:
    with open(tmp_path / "f", "w") as f:
        with pytest.raises(DeviceError, match="not a TUN/TAP device fd"):
            SyncDevice.from_fd(f.fileno())
    with pytest.raises(TypeError):
        SyncDevice.from_fd("3")  # type: ignore[arg-type]


def test_no_cap_net_admin_is_explained(ns) -> None:
    """A root process without CAP_NET_ADMIN gets a DevicePermissionError that says why."""
    if subprocess.run(["which", "setpriv"], capture_output=True).returncode:
        pytest.skip("setpriv (util-linux) is not installed")
    code = textwrap.dedent(
        """
        from tunlab import DeviceBuilder, DevicePermissionError
        try:
            DeviceBuilder().name("tperm").build_sync()
        except DevicePermissionError as e:
            print("PERM", e)
        """
    )
    out = subprocess.run(
        [
            "setpriv",
            "--bounding-set=-net_admin",
            "--inh-caps=-net_admin",
            sys.executable,
            "-c",
            code,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.getcwd(),
    )
    assert "PERM" in out.stdout, out.stderr
    assert "needs CAP_NET_ADMIN: run as root" in out.stdout


def test_permission_error_type() -> None:
    err = DevicePermissionError("x")
    assert isinstance(err, PermissionError) and isinstance(err, OSError)


def test_unprivileged_open_is_explained(tmp_path) -> None:
    """An ordinary user cannot open /dev/net/tun; the error says what is needed."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = "from tunlab import DeviceBuilder\nDeviceBuilder().build_sync()"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": repo, "HOME": str(tmp_path)}
    python = python_for_nobody(env)
    out = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, timeout=60, user=NOBODY, env=env
    )
    assert out.returncode != 0
    assert "DevicePermissionError" in out.stderr and "CAP_NET_ADMIN" in out.stderr, out.stderr


def test_mac_on_tun_rejected_before_creation(ns) -> None:
    with pytest.raises(ValueError, match="only TAP"):
        DeviceBuilder().mac_addr("02:00:00:00:00:01").layer(Layer.L3).netns(ns.name).build_sync()
    assert link_names(ns) == {"lo"}

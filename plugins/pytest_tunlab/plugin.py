"""pytest-tunlab: real TUN devices and whole labs per test, captures, offload matrices, diagnostics.

Registered through the pytest11 entry point `tunlab`. Every default is a fixture a conftest.py
can override; names carry the xdist worker id, so parallel workers never collide.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import pytest

from pytest_tunlab._environment import HAS_NAMESPACES, missing
from pytest_tunlab._handles import HostPeer, Peer, TunDeviceHandle
from pytest_tunlab._offload_matrix import DEFAULT_COMBINATIONS, Combination, OffloadCase, combination
from tunlab._linux.netns import NetNamespace
from tunlab.devices._aio import AsyncDevice
from tunlab.devices._builder import DeviceBuilder
from tunlab.devices._layer import Layer
from tunlab.testing._capture import Capture

if TYPE_CHECKING:  # labs load on first use: tun_device needs only the device library
    from tunlab.relay._direction import Direction
    from tunlab.topologies._lab import Lab
    from tunlab.topologies._models import Topology

FAILED = pytest.StashKey[bool]()
LABS = pytest.StashKey[list["Lab"]]()
CAPTURES = pytest.StashKey[list[Capture]]()
DEVICES = pytest.StashKey[list[TunDeviceHandle]]()
SCOPES = ("function", "module", "session")
_counter = iter(range(1, 1 << 30))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tunlab", "tunlab: TUN devices and network labs")
    group.addoption(
        "--tunlab-scope",
        choices=SCOPES,
        default="function",
        help="scope of the tun_device and topology fixtures (default: function)",
    )
    group.addoption(
        "--tunlab-cluster",
        metavar="ADDRESS",
        default=None,
        help="bring topology labs up across the hosts of this Dask cluster (tls://HOST:PORT; "
        "certificates from TUNLAB_TLS_CA/CERT/KEY; docs/cluster.md)",
    )
    group.addoption(
        "--tunlab-cluster-insecure",
        action="store_true",
        default=False,
        help="allow a plain tcp:// cluster address that is not on loopback",
    )
    group.addoption(
        "--tunlab-keep-on-failure",
        action="store_true",
        default=False,
        help="leave the lab of a failing test up and print how to enter it",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "tun_device(layer=Layer.L3, offload=False, mtu=None, ipv4='198.18.0.1/24', ipv6=None, "
        "multi_queue=False, packet_information=False, name=None): configure the tun_device fixture",
    )
    config.addinivalue_line(
        "markers", "topology(path_or_model, vars=None): the lab the topology fixture brings up"
    )
    config.addinivalue_line(
        "markers", "offload_matrix(*combinations): offload combinations for the offload_matrix fixture"
    )


ScopeName = Literal["session", "package", "module", "class", "function"]


def _scope(fixture_name: str, config: pytest.Config) -> ScopeName:  # pytest calls it by these names
    return cast(ScopeName, str(config.getoption("--tunlab-scope")))


def _skip_unless_able(*tools: str, namespaces: bool = True) -> None:
    reason = missing(tools=tools, namespaces=namespaces)
    if reason is not None:
        pytest.skip(reason)


def _item(request: pytest.FixtureRequest) -> pytest.Item | None:
    node = request.node
    return node if isinstance(node, pytest.Item) else None


def _remember(request: pytest.FixtureRequest, key: pytest.StashKey[list[Any]], value: Any) -> None:
    item = _item(request)
    if item is not None:
        item.stash.setdefault(key, []).append(value)


# ---- overridable defaults -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tunlab_worker_id(request: pytest.FixtureRequest) -> str:
    """The pytest-xdist worker id ('gw0', ...) or 'main'."""
    workerinput = getattr(request.config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput else "main"


@pytest.fixture(scope="session")
def tunlab_name_prefix(tunlab_worker_id: str) -> str:
    """Prefix of every namespace the plugin makes (worker id and pid: never shared)."""
    return f"tlp-{tunlab_worker_id}-{os.getpid()}"


@pytest.fixture(scope="session")
def tunlab_tun_defaults() -> dict[str, Any]:
    """Device options a tun_device marker does not set."""
    return {
        "layer": Layer.L3,
        "offload": False,
        "mtu": None,
        "ipv4": "198.18.0.1/24",
        "ipv6": None,
        "multi_queue": False,
        "packet_information": False,
        "name": None,
    }


@pytest.fixture(scope="session")
def tunlab_keep_on_failure(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--tunlab-keep-on-failure"))


# ---- namespaces and devices -----------------------------------------------------------------------
def _new_netns(prefix: str) -> NetNamespace:
    return NetNamespace.create(f"{prefix}-{next(_counter)}")


@pytest.fixture(scope=_scope)
def netns(tunlab_name_prefix: str) -> Iterator[NetNamespace]:
    """A bare network namespace, removed afterwards."""
    _skip_unless_able()
    ns = _new_netns(tunlab_name_prefix)
    try:
        yield ns
    finally:
        ns.delete()


def _device_options(request: pytest.FixtureRequest, defaults: dict[str, Any]) -> dict[str, Any]:
    options = dict(defaults)
    marker = request.node.get_closest_marker("tun_device")
    if marker is not None:
        if marker.args:
            raise pytest.UsageError("@pytest.mark.tun_device takes keyword arguments only")
        options.update(marker.kwargs)
    param = getattr(request, "param", None)
    if isinstance(param, dict):
        options.update(param)
    unknown = set(options) - set(defaults)
    if unknown:
        raise pytest.UsageError(f"tun_device: unknown options {sorted(unknown)} (known: {sorted(defaults)})")
    return options


def _build(options: dict[str, Any], ns: NetNamespace | None) -> DeviceBuilder:
    """The device the options describe: in ns on Linux; in the host's stack (ns None) on macOS
    and the BSDs, where offload and multi-queue are left out unless asked for (they have none)."""
    builder = DeviceBuilder() if ns is None else DeviceBuilder().netns(ns)
    layer = options["layer"]
    if isinstance(layer, str):
        layer = {"l2": Layer.L2, "tap": Layer.L2, "l3": Layer.L3, "tun": Layer.L3}[layer.lower()]
    builder.layer(layer)
    for key in ("offload", "multi_queue", "packet_information"):
        if ns is not None or options[key]:
            getattr(builder, key)(options[key])
    if options["name"]:
        builder.name(options["name"])
    if options["mtu"] is not None:
        builder.mtu(options["mtu"])
    for key, add in (("ipv4", builder.ipv4), ("ipv6", builder.ipv6)):
        values = options[key]
        for value in [values] if isinstance(values, str) else values or []:
            iface = ipaddress.ip_interface(value)
            add(str(iface.ip), iface.network.prefixlen)
    return builder


@contextlib.contextmanager
def _tun_handle(
    request: pytest.FixtureRequest, prefix: str, defaults: dict[str, Any], asynchronous: bool
) -> Iterator[TunDeviceHandle]:
    _skip_unless_able(namespaces=False)
    options = _device_options(request, defaults)
    with contextlib.ExitStack() as stack:
        ns: NetNamespace | None = None
        if HAS_NAMESPACES:
            ns = _new_netns(prefix)
            stack.callback(ns.delete)
        builder = _build(options, ns)
        sync = builder.build_sync()
        device: Any = AsyncDevice(sync) if asynchronous else sync
        stack.callback(device.close)
        handle = TunDeviceHandle(device, ns, options)
        _remember(request, DEVICES, handle)
        yield handle


@pytest.fixture(scope=_scope)
def tun_device(
    request: pytest.FixtureRequest, tunlab_name_prefix: str, tunlab_tun_defaults: dict[str, Any]
) -> Iterator[TunDeviceHandle]:
    """A SyncDevice in a fresh namespace (.device), with the kernel side next to it (.peer).

    Configure it with @pytest.mark.tun_device(layer=..., offload=..., mtu=..., ipv4=..., ...) or
    indirect parametrization with dicts of the same options.

    Example:
        ```python
        import pytest
        from tunlab import packets


        @pytest.mark.tun_device(ipv4="198.18.0.1/24")
        def test_ping_is_answered(tun_device):
            proc = tun_device.peer.popen(["ping", "-c1", "-W2", "198.18.0.2"])
            request = tun_device.device.recv()
            tun_device.device.send(packets.echo_reply(request))
            assert proc.wait() == 0
        ```
    """
    with _tun_handle(request, tunlab_name_prefix, tunlab_tun_defaults, asynchronous=False) as handle:
        yield handle


@pytest.fixture(scope=_scope)
def async_tun_device(
    request: pytest.FixtureRequest, tunlab_name_prefix: str, tunlab_tun_defaults: dict[str, Any]
) -> Iterator[TunDeviceHandle]:
    """tun_device with an AsyncDevice (use it from asyncio, uvloop or trio tests)."""
    with _tun_handle(request, tunlab_name_prefix, tunlab_tun_defaults, asynchronous=True) as handle:
        yield handle


# ---- labs -----------------------------------------------------------------------------------------
def _resolve_topology(spec: Any, request: pytest.FixtureRequest, variables: dict[str, Any]) -> Topology:
    from tunlab.topologies._loader import load_file
    from tunlab.topologies._models import Topology

    if isinstance(spec, Topology):
        return spec
    path = Path(spec)
    if not path.is_absolute():
        path = Path(str(request.node.path)).parent / path if request.node.path else path
    if not path.exists() and Path(spec).name == str(spec):
        from tunlab._shipped import example

        shipped = example(str(spec))  # a bare name tunlab ships: "demo.yaml", "wireguard"
        if shipped is not None:
            path = shipped
    return load_file(path, variables)


def _cluster(request: pytest.FixtureRequest) -> str | None:
    found = request.config.getoption("--tunlab-cluster")
    return str(found) if found else None


def _start_lab(request: pytest.FixtureRequest, spec: Any, variables: dict[str, Any]) -> Lab:
    """Bring a lab up under a unique name (across the hosts of --tunlab-cluster when given);
    the test's failure report will describe it."""
    from tunlab.topologies._lab import Lab

    topo = _resolve_topology(spec, request, variables)
    cluster = _cluster(request)
    if cluster is not None:
        from tunlab.cluster import ClusterLab

        spanning = ClusterLab(
            topo,
            cluster=cluster,
            unique=True,
            insecure=bool(request.config.getoption("--tunlab-cluster-insecure")),
            detached=bool(request.config.getoption("--tunlab-keep-on-failure")),  # a kept lab stays
        ).up()
        _remember(request, LABS, spanning)
        return spanning  # type: ignore[return-value]
    lab = Lab(topo, unique=True).up()
    _remember(request, LABS, lab)
    return lab


def _finish_lab(request: pytest.FixtureRequest, lab: Lab, keep: bool) -> None:
    item = _item(request)
    failed = item is not None and item.stash.get(FAILED, False)
    if failed and keep:
        from tunlab.errors import LabError

        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        nodes = ", ".join(lab.topology.nodes)
        name = lab.name
        cluster = _cluster(request)
        if cluster is not None:
            lab.detach()  # its parts were made detached: they stay on their hosts
            message = (
                f"\ntunlab: kept lab '{name}' of the failing test {request.node.nodeid} "
                f"on the cluster {cluster}\n"
                f"  enter a node ({nodes}): tunlab exec {name} <node> --cluster {cluster} -- bash\n"
                f"  remove it: tunlab down {name} --cluster {cluster}\n"
            )
            if reporter is not None:
                reporter.write_line(message)
            return
        try:
            held = f"held by supervisor pid {lab.hand_over()}, it outlives pytest"
        except LabError as exc:  # VM nodes end with pytest: keep what outlives it
            lab.detach()
            held = f"not handed over ({exc}); what outlives pytest stays until `tunlab gc`"
        message = (
            f"\ntunlab: kept lab '{name}' of the failing test {request.node.nodeid} ({held})\n"
            f"  enter a node ({nodes}): tunlab exec {name} <node> -- bash\n"
            f"  look at it: tunlab inspect {name}; tunlab ps {name}\n"
            f"  remove it: tunlab down {name}\n"
        )
        if reporter is not None:
            reporter.write_line(message)
        return
    lab.down()


@pytest.fixture(scope=_scope)
def topology(request: pytest.FixtureRequest, tunlab_keep_on_failure: bool) -> Iterator[Lab]:
    """The running lab of @pytest.mark.topology("file.yaml", vars={...}) (paths relative to the
    test; a bare name no file next to the test has is looked up in tunlab's shipped examples,
    `tunlab example` lists them).

    Example:
        ```python
        import pytest
        from tunlab import traffic
        from tunlab.testing import assert_delivered_exactly


        @pytest.mark.topology("demo.yaml")
        def test_stream(topology):
            h1, h2 = topology.node("h1"), topology.node("h2")
            assert_delivered_exactly(traffic.tcp_stream(h1, h2, "198.18.2.2", nbytes=1 << 20))
        ```
    """
    if _cluster(request) is None:  # a client of a cluster needs no namespaces of its own
        _skip_unless_able()
    marker = request.node.get_closest_marker("topology")
    param = getattr(request, "param", None)
    if marker is None and param is None:
        raise pytest.UsageError("the topology fixture needs @pytest.mark.topology('lab.yaml') or a param")
    spec = param if param is not None else marker.args[0] if marker and marker.args else None
    if spec is None:
        raise pytest.UsageError(
            "@pytest.mark.topology needs the topology file or model as its first argument"
        )
    variables = dict(marker.kwargs.get("vars") or {}) if marker else {}
    lab = _start_lab(request, spec, variables)
    try:
        yield lab
    finally:
        _finish_lab(request, lab, tunlab_keep_on_failure)


@pytest.fixture
def lab_factory(request: pytest.FixtureRequest, tunlab_keep_on_failure: bool) -> Iterator[Callable[..., Lab]]:
    """lab_factory(path_or_model, **vars) -> a running Lab; all of them go down after the test.

    Example:
        ```python
        def test_two_mtus(lab_factory):
            small = lab_factory("lab.yaml", mtu=1280)
            large = lab_factory("lab.yaml", mtu=9000)
        ```
    """
    _skip_unless_able()
    labs: list[Lab] = []

    def make(spec: str | os.PathLike[str] | Topology, **variables: Any) -> Lab:
        lab = _start_lab(request, spec, variables)
        labs.append(lab)
        return lab

    try:
        yield make
    finally:
        for lab in reversed(labs):
            _finish_lab(request, lab, tunlab_keep_on_failure)


# ---- impairments ----------------------------------------------------------------------------------
@pytest.fixture
def impair() -> Iterator[Callable[..., Any]]:
    """impair(lab, "h1:eth0", delay="50ms", loss="1%") for this test: the link's previous
    impairment comes back after it (direction=Direction.A_TO_B changes one way only).

    Example:
        ```python
        def test_slow_link(topology, impair):
            impair(topology, "h2:tun0", delay="50ms")
            assert_rtt(traffic.ping(topology.node("h1"), "198.18.2.2", count=5), 100.0, rel=0.1)
        ```
    """
    undo: list[Callable[[], None]] = []

    def set_(lab: Lab, link: int | str, impairment: Any = None, *, direction: Direction | None = None,
             **netem: Any) -> Any:  # fmt: skip
        handle = lab.link(link)
        before = handle.impairment
        result = handle.impair(impairment, direction=direction, **netem)

        def restore() -> None:
            if before is not None:
                handle.impair(before)
            else:
                handle.clear()

        undo.append(restore)
        return result

    try:
        yield set_
    finally:
        for fn in reversed(undo):
            with contextlib.suppress(Exception):  # the lab may be down already
                fn()


# ---- captures -------------------------------------------------------------------------------------
class CaptureFactory:
    """capture(lab, "node", "iface") or capture(tun_device) -> a Capture to use with `with`."""

    def __init__(self, request: pytest.FixtureRequest, directory: Path) -> None:
        self._request = request
        self._directory = directory
        self.captures: list[Capture] = []

    def __call__(
        self,
        target: Any,
        node: str | None = None,
        interface: str | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        raw: bool = False,
    ) -> Capture:
        from tunlab.topologies._lab import Lab

        ns: NetNamespace | None
        if isinstance(target, TunDeviceHandle):
            ns, iface, label = target.netns, interface or target.device.name, target.device.name
        elif isinstance(target, Lab):
            if node is None or interface is None:
                raise TypeError("capture(lab, node, interface): name the node and the interface")
            ns, iface, label = target.node(node).netns, interface, f"{node}-{interface}"
        elif isinstance(target, NetNamespace):
            if node is None:
                raise TypeError("capture(netns, interface)")
            ns, iface, label = target, node, node
        else:
            raise TypeError(f"capture: cannot capture on {type(target).__name__}")
        pcap = Path(path) if path is not None else self._directory / f"{label}-{len(self.captures)}.pcap"
        cap = Capture(ns, iface, pcap, raw=raw)
        self.captures.append(cap)
        _remember(self._request, CAPTURES, cap)
        return cap


@pytest.fixture
def capture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CaptureFactory]:
    """Record packets on an interface of a lab or a tun_device to a pcap file (+ a parsed view).

    Example:
        ```python
        with capture(topology, "r1", "tun0") as cap:
            traffic.tcp_stream(topology.node("h1"), topology.node("h2"), "198.18.2.2", nbytes=8 << 20)
        assert_gso_seen(cap, gso_type="tcpv4", min_count=10)
        ```
    """
    factory = CaptureFactory(request, tmp_path)
    try:
        yield factory
    finally:
        for cap in factory.captures:
            cap.stop()


# ---- offload matrix -------------------------------------------------------------------------------
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "offload_matrix" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("offload_matrix")
    combos: list[Combination] = (
        [combination(c) for c in marker.args] if marker and marker.args else list(DEFAULT_COMBINATIONS)
    )
    metafunc.parametrize("offload_matrix", combos, ids=[c.id for c in combos], indirect=True)


@pytest.fixture
def offload_matrix(request: pytest.FixtureRequest) -> OffloadCase:
    """The offload combination of this run: offload_matrix.apply(lab, "r1:eth0", ...).

    Example:
        ```python
        @pytest.mark.offload_matrix(gro=[True, False], tso=[True, False])
        @pytest.mark.topology("demo.yaml")
        def test_each_combination(topology, offload_matrix):
            offload_matrix.apply(topology, "r1:eth1")
        ```
    """
    _skip_unless_able()
    return OffloadCase(request.param, request.addfinalizer)


# ---- a lab that degrades fails the test -----------------------------------------------------------
def _labs_of(item: pytest.Item) -> list[Lab]:
    """The running labs a test uses: its fixtures' (any scope) and the ones it made."""
    found: list[Lab] = item.stash.get(LABS, [])
    found = found + [
        v for v in getattr(item, "funcargs", {}).values() if hasattr(v, "health") and hasattr(v, "running")
    ]
    unique = {id(lab): lab for lab in found}
    return [lab for lab in unique.values() if lab.running]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """A part of a lab that died during the test (a relay worker, a VM, a container) fails it,
    naming the part and the cause, even when the test's own assertions passed."""
    labs = _labs_of(item)
    before = {id(lab): set(lab.health()) for lab in labs}
    yield
    for lab in labs:
        if not lab.running:
            continue
        new = {part: cause for part, cause in lab.health().items() if part not in before[id(lab)]}
        if new:
            lines = "; ".join(f"{part}: {cause}" for part, cause in new.items())
            pytest.fail(f"lab '{lab.name}' degraded during the test: {lines}", pytrace=False)


# ---- diagnostics on failure -----------------------------------------------------------------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when != "call" or not report.failed:
        return report
    item.stash[FAILED] = True
    for lab in item.stash.get(LABS, []):
        with contextlib.suppress(Exception):
            report.sections.append((f"tunlab: lab {lab.name}", _describe_lab(lab)))
    for handle in item.stash.get(DEVICES, []):
        with contextlib.suppress(Exception):
            report.sections.append((f"tunlab: tun_device {handle.device.name}", _describe_device(handle)))
    captures = item.stash.get(CAPTURES, [])
    if captures:
        lines = [f"{c.path} ({len(c.packets)} packets on {c.interface})" for c in captures if c.path]
        report.sections.append(("tunlab: packet captures (tcpdump -r / wireshark)", "\n".join(lines)))
    return report


def _describe_lab(lab: Lab) -> str:
    from tunlab.topologies._inspect import describe

    if not lab.running:
        return "(the lab is down)"
    data = lab.inspect()
    if "hosts" in data and "nodes" not in data:  # a lab across hosts: each host's part
        lines = []
        for host, part in data["hosts"].items():
            lines.append(f"host {host}:")
            lines += [f"  {line}" for line in (describe(part) if "error" not in part else [part["error"]])]
        return "\n".join(lines)
    lines = describe(data)
    if data.get("relays"):
        lines += ["relays:", *_relay_lines(data["relays"])]
    return "\n".join(lines)


def _relay_lines(relays: dict[str, Any]) -> list[str]:
    """One line per relay direction: frames and bytes through, drops, errors, and the
    impairment counters that are not zero (a raw JSON line is hard to read in a report)."""
    out = []
    for link, directions in relays.items():
        for direction, c in directions.items():
            if not isinstance(c, dict):
                continue
            line = (
                f"  {link} {direction}: {c.get('frames_in', 0)} frames in, {c.get('frames_out', 0)} out "
                f"({c.get('bytes_in', 0)} -> {c.get('bytes_out', 0)} bytes), "
                f"{c.get('super_frames_in', 0)} super-frames, {c.get('dropped', 0)} dropped"
            )
            impair = {k: v for k, v in (c.get("impairment") or {}).items() if v and k != "generation"}
            if impair:
                line += "; impairment: " + ", ".join(f"{k} {v}" for k, v in impair.items())
            if c.get("errors"):
                line += f"; errors: {'; '.join(str(e) for e in c['errors'][-3:])}"
            out.append(line)
    return out


def _describe_device(handle: TunDeviceHandle) -> str:
    from tunlab.topologies._inspect import format_interface, interfaces_and_routes

    if handle.netns is None:  # macOS/BSD: the host's stack, read through the device itself
        device = handle.device.sync if isinstance(handle.device, AsyncDevice) else handle.device
        return f"options: {handle.options}\naddresses: {[str(a) for a in device.addresses()]}"
    data = interfaces_and_routes(handle.netns)
    lines = [f"options: {handle.options}"]
    lines += [format_interface(i) for i in data["interfaces"]]
    lines += [f"route {r}" for r in data["routes"]]
    return "\n".join(lines)


__all__ = ["CaptureFactory", "HostPeer", "OffloadCase", "Peer", "TunDeviceHandle"]

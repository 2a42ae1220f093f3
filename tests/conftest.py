"""Suite-wide guards: the root network namespace must be exactly as it was, and no namespace,
interface or fd made by a test may survive it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support import HAS_TUN, IS_LINUX, IS_ROOT, unique_name

pytest_plugins = ["pytester"]


def _root_snapshot() -> dict[str, set[tuple[object, ...]]]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = {}
        for link in ipr.get_links():
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info else None
            links[link["index"]] = (link.get_attr("IFLA_IFNAME"), kind)
        addrs = {
            (links.get(a["index"], ("?",))[0], a.get_attr("IFA_ADDRESS"), a["prefixlen"])
            for a in ipr.get_addr()
        }
        routes = set()
        for family in (2, 10):
            for r in ipr.get_routes(family=family, table=0):
                oif = r.get_attr("RTA_OIF")
                routes.add(
                    (
                        family,
                        r.get_attr("RTA_TABLE"),
                        r.get_attr("RTA_DST"),
                        r["dst_len"],
                        r.get_attr("RTA_GATEWAY"),
                        links.get(oif, ("?",))[0] if oif else None,
                    )
                )
    return {"links": set(links.values()), "addresses": addrs, "routes": routes}


@pytest.fixture(scope="session", autouse=True)
def private_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Lab state files of this test run live in a private directory, not /run/tunlab."""
    path = str(tmp_path_factory.mktemp("tunlab-run"))
    old = os.environ.get("TUNLAB_RUN_DIR")
    os.environ["TUNLAB_RUN_DIR"] = path
    yield path
    if old is None:
        os.environ.pop("TUNLAB_RUN_DIR", None)
    else:
        os.environ["TUNLAB_RUN_DIR"] = old


@pytest.fixture(scope="session", autouse=True)
def root_namespace_unchanged() -> Iterator[None]:
    """Fail the run if any test added or removed links, addresses or routes in the root ns."""
    if not IS_ROOT:
        yield
        return
    before = _root_snapshot()
    netns_before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    mounts_before, groups_before = _tunlab_mounts(), _tunlab_groups()
    yield
    after = _root_snapshot()
    problems = []
    for key in before:
        added, removed = after[key] - before[key], before[key] - after[key]
        if added or removed:
            problems.append(f"root namespace {key} changed: added {added}, removed {removed}")
    netns_after = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    leaked = {n for n in netns_after - netns_before if n.startswith(("tlt-", "tunlab-", "tl-"))}
    if leaked:
        problems.append(f"network namespaces left behind: {sorted(leaked)}")
    mounts = _tunlab_mounts() - mounts_before
    if mounts:
        problems.append(f"mounts left behind in the host's mount table: {sorted(mounts)}")
    groups = _tunlab_groups() - groups_before
    if groups:
        problems.append(f"cgroups left behind: {sorted(groups)}")
    assert not problems, "\n".join(problems)


def _tunlab_mounts() -> set[str]:
    """Mount points of the host's mount table that a lab's nodes could have left."""
    with open("/proc/self/mountinfo") as f:
        points = {line.split()[4] for line in f}
    return {p for p in points if "/nodes/" in p or p.endswith("/nodes")}


def _tunlab_groups() -> set[str]:
    from tunlab._linux import cgroups

    base = cgroups.root()
    if base is None or not (base / cgroups.BASE).is_dir():
        return set()
    return {str(p) for p in (base / cgroups.BASE).iterdir() if p.is_dir()}


@pytest.fixture(scope="session")
def needs_root() -> None:
    if not IS_LINUX:
        pytest.skip("needs Linux")
    if not IS_ROOT:
        pytest.skip("needs root (CAP_NET_ADMIN) to create namespaces and devices")
    if not HAS_TUN:
        pytest.skip("needs /dev/net/tun (the tun driver)")


@pytest.fixture
def ns(needs_root: None) -> Iterator[object]:
    """A fresh named network namespace, deleted after the test."""
    from tunlab._linux.netns import NetNamespace

    space = NetNamespace.create(unique_name())
    try:
        yield space
    finally:
        space.delete()


@pytest.fixture
def quiet_ns(ns):
    """A namespace whose new links get no IPv6: nothing (RS, MLD) arrives on a device unasked."""
    ns.write_sysctl("net.ipv6.conf.default.disable_ipv6", 1)
    return ns

"""Impairments on real links: traffic through real devices in namespaces, fixed seeds, stated
tolerances. One lab for the module; each test sets the impairment it needs and clears it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support import require_tool
from tunlab import traffic
from tunlab.errors import LabError
from tunlab.relay._direction import Direction
from tunlab.testing import assert_delay, assert_loss_rate, assert_rtt, assert_shaped, expected_quantile
from tunlab.topologies import Lab, load_text
from tunlab.topologies._impairments import kernel_qdiscs
from tunlab.topologies._live_links import ImpairmentError

pytestmark = [pytest.mark.root, pytest.mark.slow]

LAB = """
name: impair
defaults:
  sysctls: {net.ipv6.conf.all.disable_ipv6: 1, net.ipv6.conf.default.disable_ipv6: 1}
nodes: {a: {}, b: {}}
links:
  - type: tun-pair
    endpoints: [{node: a, interface: t0, ipv4: 198.18.80.1/24}, {node: b, interface: t0, ipv4: 198.18.80.2/24}]
  - endpoints: [{node: a, interface: e0, ipv4: 198.18.81.1/24}, {node: b, interface: e0, ipv4: 198.18.81.2/24}]
    impair: {}
  - endpoints: [{node: a, interface: e1, ipv4: 198.18.82.1/24}, {node: b, interface: e1, ipv4: 198.18.82.2/24}]
  - type: bridge
    endpoints: [{node: a, interface: s0, ipv4: 198.18.83.1/24}, {node: b, interface: s0, ipv4: 198.18.83.2/24}]
    impair: {}
  - endpoints: [{node: a, interface: u0, ipv4: 198.18.84.1/24}, {node: b, interface: u0, ipv4: 198.18.84.2/24}]
  - type: vxlan
    vni: 7
    endpoints:
      - {node: a, interface: vx0, underlay: u0, ipv4: 198.18.85.1/24}
      - {node: b, interface: vx0, underlay: u0, ipv4: 198.18.85.2/24}
    impair: {}
"""
PEER = {"a:t0": "198.18.80.2", "a:e0": "198.18.81.2", "a:e1": "198.18.82.2", "a:s0": "198.18.83.2",
        "a:vx0": "198.18.85.2"}  # fmt: skip


@pytest.fixture(scope="module")
def lab(needs_root: None) -> Iterator[Lab]:
    with Lab(load_text(LAB, "yaml"), unique=True) as running:
        for address in PEER.values():  # neighbours resolved before any timing
            traffic.ping(running.node("a"), address, count=1, timeout=2)
        yield running


@pytest.fixture
def link(lab: Lab, request: pytest.FixtureRequest) -> Iterator[object]:
    """The link named by the test's parameter (default the tun-pair), cleared afterwards."""
    name = getattr(request, "param", "a:t0")
    handle = lab.link(name)
    yield handle
    handle.clear()


class Since:
    """A link's counters from now on (they add up over the link's life, as tc's do)."""

    def __init__(self, link) -> None:
        self.link = link
        self.start = link.stats()

    def __getitem__(self, key: str) -> dict[str, int]:
        now = self.link.stats()[key]
        return {k: v - self.start[key].get(k, 0) for k, v in now.items()}


def probes(lab: Lab, link: str, **kw: object) -> traffic.OneWayResult:
    return traffic.one_way(lab.node("a"), lab.node("b"), PEER[link], **kw)  # type: ignore[arg-type]


# ---- delay ------------------------------------------------------------------------------------
@pytest.mark.parametrize("link", ["a:t0", "a:e0", "a:s0", "a:vx0"], indirect=True)
def test_delay_50ms_each_way_gives_a_100ms_rtt(lab: Lab, link) -> None:
    link.impair(delay="50ms")
    res = traffic.ping(lab.node("a"), PEER[link.spec.endpoints[0].node + ":" + link.spec.endpoints[0].interface],
                       count=6, interval=0.05)  # fmt: skip
    assert_rtt(res, 100.0, rel=0.05)
    placement = link.stats()["via"]
    assert placement in ("relay", "inserted")


def assert_delay_measured(
    lab: Lab, link, cfg: dict[str, object], base: float, quantiles: tuple[float, ...]
) -> None:
    """assert_delay on 3000 probes, against what this machine does *now* with a plain delay.

    The 2-core VM here sometimes runs the relay late for minutes (every timer +1-3 ms, on the
    release before this one too), which says nothing about the distribution. So each run is
    calibrated in the same minute: a plain delay of the same mean, its median lateness added
    to the baseline. A run measured *late* beyond that is measured again (up to 3 runs), and
    three late runs skip the test with the numbers (a jittered delay runs later than a plain
    one on a busy host: +1-4 ms at p95 then, seen on the release before too); lateness never
    shortens a delay, so a run measured early fails at once."""
    failures = []
    delay_ms = float(str(cfg["delay"]).removesuffix("ms"))
    for _ in range(3):
        link.impair({"delay": cfg["delay"], "seed": cfg.get("seed", 1)})
        plain = probes(lab, "a:t0", count=1000, rate_pps=1000).percentile(50)
        late = max(0.0, plain - delay_ms - base)
        link.impair(cfg)
        res = probes(lab, "a:t0", count=3000, rate_pps=1000)
        try:
            assert_delay(res, cfg, baseline_ms=base + late, quantiles=quantiles)
            return
        except AssertionError as exc:
            failures.append(f"(a plain {delay_ms:g} ms delay ran {late:.2f} ms late) {exc}")
            lowest = quantiles[0]
            if res.percentile(lowest * 100) < expected_quantile(cfg, lowest) + base - 0.5:
                raise  # early: not the machine
    # late in every run, never early: this machine could not hold the timing for a minute (the
    # release before this one fails the same way on it then); say so rather than pass or fail
    pytest.skip("the relay ran late on this machine in 3 runs (never early):\n" + "\n".join(failures))


def test_jitter_follows_the_configured_distribution(lab: Lab, link) -> None:
    base = probes(lab, "a:t0", count=300, rate_pps=1000).percentile(50)
    cfg = {"delay": "20ms", "jitter": "5ms", "seed": 3}
    assert_delay_measured(lab, link, cfg, base, (0.05, 0.5, 0.95))
    normal = {**cfg, "distribution": "normal", "limit": 10000}
    assert_delay_measured(lab, link, normal, base, (0.1, 0.5, 0.9))


# ---- loss, duplication, corruption --------------------------------------------------------------
def test_loss_10_percent_over_10000_packets_is_binomial(lab: Lab, link) -> None:
    link.impair(loss="10%", seed=11)
    since = Since(link)
    res = probes(lab, "a:t0", count=10_000, rate_pps=5000)
    assert_loss_rate(res.lost, res.sent, 10.0)
    assert since["a_to_b_stats"]["lost"] == res.lost  # every loss is the impairment's


def test_gilbert_elliott_losses_come_in_bursts(lab: Lab, link) -> None:
    link.impair(loss_model={"gemodel": {"p": "1%", "r": "10%"}}, seed=4)
    res = probes(lab, "a:t0", count=20_000, rate_pps=10_000)
    runs = res.loss_runs()
    assert abs(res.loss - 1 / 11) < 0.03, res.loss  # stationary loss p / (p + r) = 9.1 %
    assert 7 < sum(runs) / len(runs) < 13  # mean burst 1 / r = 10 packets


def test_duplicate_rate(lab: Lab, link) -> None:
    link.impair(duplicate="5%", seed=12)
    since = Since(link)
    res = probes(lab, "a:t0", count=10_000, rate_pps=5000)
    assert_loss_rate(res.duplicates, res.sent, 5.0)
    assert res.duplicates == since["a_to_b_stats"]["duplicated"]


def test_corruption_is_caught_by_the_receivers_checksums(lab: Lab, link) -> None:
    link.impair(corrupt="3%", seed=13)
    since = Since(link)
    res = probes(lab, "a:t0", count=10_000, rate_pps=5000)
    corrupted = since["a_to_b_stats"]["corrupted"]
    assert_loss_rate(corrupted, res.sent, 3.0)
    # one flipped bit always breaks the IPv4 header or the UDP checksum: none is delivered
    assert res.lost == corrupted


# ---- order, rate, queues ------------------------------------------------------------------------
def test_gap_5_sends_every_fifth_packet_ahead(lab: Lab, link) -> None:
    link.impair(delay="10ms", reorder="100%", gap=5)
    since = Since(link)
    res = probes(lab, "a:t0", count=500, rate_pps=1000)
    delays = dict(zip(res.arrivals, res.delays_ms, strict=True))
    # the others are held 10 ms, never less: anything quicker was sent ahead (a loaded machine
    # can hold an undelayed packet several ms, so no tighter cut than the delay itself)
    early = [s for s, d in delays.items() if d < 9.5]
    assert sorted(early) == list(range(4, 500, 5))
    assert since["a_to_b_stats"]["reordered"] == 100
    assert res.reordered > 0


@pytest.mark.parametrize("link", ["a:t0", "a:e0"], indirect=True)
def test_rate_100mbit_gives_tcp_90_to_100_percent(lab: Lab, link) -> None:
    require_tool("iperf3")
    link.impair(rate="100mbit", limit=5000)
    peer = PEER[f"{link.spec.endpoints[0].node}:{link.spec.endpoints[0].interface}"]
    report = traffic.iperf3(lab.node("a"), lab.node("b"), peer, seconds=3)
    assert_shaped(report, "100mbit", low=0.9)


@pytest.mark.parametrize("link", ["a:t0", "a:e1"], indirect=True)
def test_token_bucket_passes_its_burst_then_paces(lab: Lab, link) -> None:
    """The relay's shaper and (on a kernel veth) the kernel's tbf behave alike: after idle the
    first `burst` bytes leave back to back, the rest at the rate."""
    name = f"{link.spec.endpoints[0].node}:{link.spec.endpoints[0].interface}"
    link.impair(shaper={"rate": "10mbit", "burst": "50k", "limit": "1mb"})
    res = probes(lab, name, count=200, rate_pps=20_000, size=1000)
    assert res.received == 200
    at = dict(zip(res.arrivals, res.received_ns, strict=True))
    first = min(at.values())
    wire = 1028 if link.spec.type == "tun-pair" else 1042  # IP packet on TUN, frame on a veth
    paced = 29 * wire / 1.25e6 * 1000  # what the first 30 packets would take at the rate, in ms
    # 30 kB of the 50 kB bucket leave without waiting: far sooner than pacing would let them
    # (half of it leaves room for a sender descheduled for a few ms on a loaded machine)
    assert (at[29] - first) / 1e6 < paced / 2
    span = (200 * wire - 50 * 1024) / 1.25e6 * 1000  # the rest at 1.25 MB/s, in ms
    got = (max(at.values()) - first) / 1e6
    assert abs(got - span) < 0.15 * span, (got, span)
    assert link.stats()["via"] in ("relay", "kernel")


def test_limit_tail_drops_what_does_not_fit(lab: Lab, link) -> None:
    link.impair(delay="1s", limit=20)
    since = Since(link)
    res = probes(lab, "a:t0", count=100, rate_pps=20_000, settle=1.5)
    assert res.received == 20 and sorted(res.arrivals) == list(range(20))
    assert since["a_to_b_stats"]["limit_drops"] == 80


# ---- determinism, GSO, run-time changes ---------------------------------------------------------
def test_the_same_seed_drops_the_same_packets(lab: Lab, link) -> None:
    runs = []
    for seed in (5, 6, 5):
        link.impair(loss="20%", seed=seed)  # a new seed re-seeds; back to 5: the first run again
        got = probes(lab, "a:t0", count=2000, rate_pps=5000)
        runs.append(set(range(got.sent)) - set(got.arrivals))
    assert runs[0] == runs[2]
    assert runs[0] != runs[1]


def test_offload_super_packets_lose_segments_not_whole_bursts(lab: Lab, link) -> None:
    link.impair(loss="1%", seed=21)
    since = Since(link)
    before = lab.relay_stats()["a:t0 <-> b:t0"][Direction.A_TO_B]
    res = traffic.tcp_stream(traffic.place(lab.node("a").netns), traffic.place(lab.node("b").netns),
                             "198.18.80.2", nbytes=40 << 20)  # fmt: skip
    assert res.exact
    after = lab.relay_stats()["a:t0 <-> b:t0"][Direction.A_TO_B]
    supers = after["super_frames_in"] - before["super_frames_in"]
    reads = after["frames_in"] - before["frames_in"]
    assert supers > 100, "no super-packets crossed: offload is not in play"
    counters = since["a_to_b_stats"]
    segments = counters["sent"] + counters["lost"]
    assert segments > 3 * reads  # each read carried several wire-size segments, impaired one by one
    assert_loss_rate(counters["lost"], segments, 1.0)


def test_packets_held_across_a_change_of_kind_all_arrive(lab: Lab, link) -> None:
    """delay only keeps super-packets whole; adding jitter switches to per-packet work, and
    the frames held at that moment are split, not lost (and back again)."""
    import threading

    link.impair(delay="300ms")
    box: dict[str, traffic.OneWayResult] = {}
    sender = threading.Thread(
        target=lambda: box.setdefault("r", probes(lab, "a:t0", count=400, rate_pps=1000))
    )
    sender.start()
    time.sleep(0.15)
    link.impair(delay="300ms", jitter="1ms", seed=2)
    time.sleep(0.15)
    link.impair(delay="300ms")
    sender.join()
    res = box["r"]
    assert res.received == 400 and res.duplicates == 0
    assert min(res.delays_ms) > 295


def test_a_bad_runtime_change_keeps_the_old_impairment(lab: Lab, link) -> None:
    link.impair(delay="30ms")
    for bad in ({"delay": "10"}, {"loss": "5"}, {"reorder": "5%", "delay": 0}, {"shaper": {"rate": "1mbit"}}):
        with pytest.raises(ImpairmentError):
            link.impair(bad)
    assert link.impairment.a_to_b.delay == 30
    assert_rtt(traffic.ping(lab.node("a"), "198.18.80.2", count=4, interval=0.05), 60.0)


def test_a_kernel_link_without_netem_says_how_to_impair_it(lab: Lab) -> None:
    if "netem" in kernel_qdiscs():
        pytest.skip("this kernel has sch_netem: the runtime change goes to the kernel")
    before = lab.link("a:e1").impairment
    with pytest.raises(ImpairmentError, match=r"declare `impair: \{\}`"):
        lab.link("a:e1").impair(delay="5ms")
    assert lab.link("a:e1").impairment == before


def test_impair_via_kernel_without_the_qdisc_fails_before_anything_exists(needs_root: None) -> None:
    if "netem" in kernel_qdiscs():
        pytest.skip("this kernel has sch_netem")
    topo = load_text(
        LAB.replace("    impair: {}\n", "    impair: {delay: 5ms}\n    impair_via: kernel\n", 1), "yaml"
    )
    with pytest.raises(LabError, match=r"links\[1\]: impair_via: kernel .* no sch_netem"):
        Lab(topo, unique=True).up()


def test_kernel_netem_delays_a_veth(lab: Lab) -> None:
    if "netem" not in kernel_qdiscs():
        pytest.skip("sch_netem is not in this kernel (the relay path covers it; CI kernels run this)")
    link = lab.link("a:e1")
    try:
        link.impair(delay="50ms")
        assert link.stats()["via"] == "kernel"
        assert_rtt(traffic.ping(lab.node("a"), PEER["a:e1"], count=6, interval=0.05), 100.0)
    finally:
        link.clear()


def test_stats_read_like_tc(lab: Lab, link) -> None:
    link.impair(delay="1ms", loss="50%", seed=1)
    since = Since(link)
    res = probes(lab, "a:t0", count=400, rate_pps=2000)
    time.sleep(0.05)
    s = link.stats()
    c = since["a_to_b_stats"]
    assert s["a_to_b"].startswith("netem ") and "loss 50%" in s["a_to_b"]
    assert c["sent"] == res.received and c["lost"] == res.lost and s["a_to_b_stats"]["backlog"] == 0

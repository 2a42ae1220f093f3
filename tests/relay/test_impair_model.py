"""Impairment settings: tc's units and rules, every validation rule with its message, the tc
round trip, and the plain parameters the engine runs on."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tunlab.relay.impair import _units as units
from tunlab.relay.impair._model import LinkImpairment, Netem
from tunlab.relay.impair._params import NetemParams


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("10ms", 10_000_000),
        ("1.5s", 1_500_000_000),
        ("250us", 250_000),
        ("100ns", 100),
        ("2 msec", 2_000_000),
        (10, 10_000_000),
        (0.5, 500_000),
    ],
)
def test_times_read_as_tc_reads_them_and_numbers_are_milliseconds(text: object, ns: int) -> None:
    assert units.time_ns(text) == ns


@pytest.mark.parametrize(
    ("text", "bps"),
    [
        ("100mbit", 100_000_000),
        ("512kbit", 512_000),
        ("1gbit", 10**9),
        ("125kbps", 1_000_000),
        ("1mibit", 2**20),
        (9600, 9600),
    ],
)
def test_rates_read_as_tc_reads_them(text: object, bps: int) -> None:
    assert units.rate_bps(text) == bps


def test_sizes_use_tc_multiples() -> None:
    assert units.size_bytes("15k") == 15 * 1024
    assert units.size_bytes(1500) == 1500
    assert units.size_bytes("1mb") == 2**20


# every rule: (settings, words the error must contain)
RULES = [
    ({"delay": "10"}, "has no unit: write 10ms"),
    ({"delay": "10parsecs"}, "unknown time unit"),
    ({"delay": -1}, "cannot be negative"),
    ({"jitter": "3s"}, "over 2147ms"),
    ({"loss": "5"}, "has no '%'"),
    ({"loss": 101}, "outside 0..100%"),
    ({"loss": "1%", "loss_correlation": 100}, "less than 100"),
    ({"rate": "100"}, "has no unit: write 100bit"),
    ({"rate": "4bit"}, "below 8 bit/s"),
    ({"rate": "10furlongs"}, "unknown rate unit"),
    ({"distribution": "normal"}, "needs a delay and a jitter"),
    ({"delay": "10ms", "jitter": "1ms", "distribution": "lognormal"}, "Input should be"),
    ({"delay": "10ms", "jitter": "1ms", "distribution": []}, "1..16384 entries"),
    ({"delay": "10ms", "jitter": "1ms", "distribution": [40000]}, "signed 16-bit"),
    ({"loss": "1%", "loss_model": {"gemodel": {"p": "1%"}}}, "not both"),
    ({"loss_model": {}}, "exactly one of gemodel or state"),
    ({"loss_model": {"state": {"p13": "60%", "p14": "50%"}}}, "p13 + p14"),
    ({"loss_model": {"state": {"p13": "10%", "p31": "80%", "p32": "30%"}}}, "p31 + p32"),
    ({"ecn": True}, "ecn needs a loss setting"),
    ({"reorder": "10%"}, "not possible without some delay"),
    ({"gap": 5, "delay": "10ms"}, "gap needs reorder"),
    ({"rate": "1mbit", "bw": 10}, "rate or bw"),
    ({"limit": 10, "max_queue_size": 10}, "limit or max_queue_size"),
    ({"limit": -1}, "greater than or equal to 0"),
    ({"seed": -1}, "greater than or equal to 0"),
    ({"slot": {"max": "1ms"}}, "a slot needs min"),
    ({"slot": {"min": "5ms", "max": "1ms"}}, "below min"),
    ({"slot": {"distribution": "pareto", "delay": "1ms"}}, "jitter > 0"),
    ({"slot": {"min": "1ms", "distribution": "pareto", "delay": "1ms", "jitter": "1ms"}}, "not both"),
    ({"shaper": {"rate": "1mbit", "burst": 1500}}, "exactly one of limit"),
    ({"shaper": {"rate": "1mbit", "burst": 1500, "limit": 10, "latency": "1ms"}}, "exactly one of limit"),
    ({"shaper": {"rate": "1mbit", "burst": 0, "limit": 10}}, "greater than 0"),
    ({"shaper": {"rate": "1mbit", "burst": 1500, "limit": 9000, "peakrate": "2mbit"}}, "peakrate needs mtu"),
    (
        {"shaper": {"rate": "2mbit", "burst": 1500, "limit": 9000, "peakrate": "1mbit", "mtu": 1500}},
        "must be above rate",
    ),
    ({"shaper": {"rate": "1mbit", "burst": "1.5x", "limit": 10}}, "unknown size unit"),
    ({"bogus": 1}, "Extra inputs"),
    ({"compat": "kernel"}, "Input should be"),
]


@pytest.mark.parametrize(("settings", "words"), RULES, ids=[str(r[0]) for r in RULES])
def test_each_rule_refuses_with_a_message_naming_the_problem(settings: dict, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        Netem.model_validate(settings)
    assert words in str(info.value), str(info.value)


def test_error_paths_name_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        LinkImpairment.model_validate({"a_to_b": {"delay": "1ms"}, "b_to_a": {"shaper": {"rate": "x"}}})
    locs = [e["loc"] for e in info.value.errors()]
    assert ("b_to_a", "shaper", "rate") in [
        tuple(p for p in loc if not str(p).startswith("function")) for loc in locs
    ]


@pytest.mark.parametrize(
    ("settings", "tc"),
    [
        ({"loss_model": {"state": {"p13": "1%"}}}, "limit 1000 loss state 1% 99% 0% 100% 0%"),
        ({"rate": 20000}, "limit 1000 rate 20kbit"),
        ({"delay": "100ms", "jitter": "10ms", "delay_correlation": "25%"}, "limit 1000 delay 100ms 10ms 25%"),
        ({"loss_model": {"gemodel": {"p": "1%"}}}, "limit 1000 loss gemodel 1% 99% 100% 0%"),
        ({"delay": "10ms", "reorder": "25%"}, "limit 1000 delay 10ms reorder 25% gap 1"),
        (
            {"slot": {"distribution": "pareto", "delay": "1ms", "jitter": "0.1ms"}},
            "limit 1000 slot distribution pareto 1ms 100us",
        ),
        (
            {"slot": {"min": "10ms", "max": "200ms", "packets": 2000, "bytes": 9000}},
            "limit 1000 slot 10ms 200ms packets 2000 bytes 9000",
        ),
    ],
)
def test_tc_strings_round_trip_as_tdc_prints_them(settings: dict, tc: str) -> None:
    assert Netem.model_validate(settings).tc() == tc


def test_a_model_dumps_and_reads_back_to_itself() -> None:
    n = Netem.model_validate(
        {
            "delay": "10ms",
            "jitter": "2ms",
            "loss_model": {"gemodel": {"p": "1%", "1-h": "50%"}},
            "shaper": {"rate": "10mbit", "burst": "15k", "latency": "20ms"},
            "seed": 3,
        }
    )
    again = Netem.model_validate(n.model_dump(by_alias=True))
    assert again == n
    assert NetemParams.from_json(n.params().to_json()) == n.params()


def test_mininet_names_and_tbf_latency_follow_their_rules() -> None:
    n = Netem.model_validate({"bw": 10, "max_queue_size": 50})
    assert n.rate_bps == 10_000_000 and n.limit == 50
    sh = Netem.model_validate({"shaper": {"rate": "8mbit", "burst": 10000, "latency": "10ms"}}).shaper
    assert sh is not None and sh.limit_bytes == 1_000_000 // 100 + 10000  # rate x latency + burst


def test_a_symmetric_impairment_with_a_seed_gets_independent_directions() -> None:
    imp = LinkImpairment.symmetric(Netem(delay="5ms", seed=7))
    assert imp.a_to_b.seed == 7 and imp.b_to_a.seed == 8
    assert LinkImpairment.model_validate({"delay": "5ms"}).b_to_a.delay == 5


def test_warnings_point_out_netems_correlation_bias() -> None:
    warned = Netem.model_validate({"loss": "1%", "loss_correlation": "25%"}).warnings()
    assert warned and "lowers the rate" in warned[0]
    assert not Netem.model_validate({"loss": "1%", "loss_correlation": "25%", "compat": "ideal"}).warnings()

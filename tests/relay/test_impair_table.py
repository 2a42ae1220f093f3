"""The one table of impairment parameters: the models, the kernel path, the relay and the CLI
all come from it, and nothing it holds can be dropped silently on the kernel path."""

from __future__ import annotations

import pytest

from tunlab.relay.impair import _table as table
from tunlab.relay.impair._model import FourState, GilbertElliott, Netem, Slot, TokenBucket

BURST = {"rate": "10mbit", "burst": "15k", "limit": 30000}
# one impairment per parameter that sets it (with what it needs); a new row needs a line here
SAMPLES: dict[str, dict] = {
    "delay": {"delay": "10ms"},
    "jitter": {"delay": "10ms", "jitter": "2ms"},
    "delay_correlation": {"delay": "10ms", "jitter": "2ms", "delay_correlation": "25%"},
    "distribution": {"delay": "10ms", "jitter": "2ms", "distribution": "normal"},
    "loss": {"loss": "1%"},
    "loss_correlation": {"loss": "1%", "loss_correlation": "25%"},
    "loss_model": {"loss_model": {"gemodel": {"p": "1%"}}},
    "ecn": {"loss": "1%", "ecn": True},
    "duplicate": {"duplicate": "1%"},
    "duplicate_correlation": {"duplicate": "1%", "duplicate_correlation": "5%"},
    "corrupt": {"corrupt": "1%"},
    "corrupt_correlation": {"corrupt": "1%", "corrupt_correlation": "5%"},
    "reorder": {"delay": "10ms", "reorder": "25%"},
    "reorder_correlation": {"delay": "10ms", "reorder": "25%", "reorder_correlation": "50%"},
    "gap": {"delay": "10ms", "reorder": "25%", "gap": 5},
    "rate": {"rate": "10mbit"},
    "bw": {"bw": 10},
    "packet_overhead": {"rate": "10mbit", "packet_overhead": 14},
    "cell_size": {"rate": "10mbit", "cell_size": 53},
    "cell_overhead": {"rate": "10mbit", "cell_size": 53, "cell_overhead": 5},
    "slot": {"slot": {"min": "1ms"}},
    "limit": {"limit": 50},
    "seed": {"loss": "1%", "seed": 3},
    "shaper": {"shaper": BURST},
    "preserve_order": {"delay": "10ms", "jitter": "2ms", "preserve_order": True},
    "compat": {"loss": "1%", "compat": "ideal"},
    "slot.min": {"slot": {"min": "1ms"}},
    "slot.max": {"slot": {"min": "1ms", "max": "5ms"}},
    "slot.distribution": {"slot": {"distribution": "normal", "delay": "2ms", "jitter": "1ms"}},
    "slot.delay": {"slot": {"distribution": "normal", "delay": "2ms", "jitter": "1ms"}},
    "slot.jitter": {"slot": {"distribution": "normal", "delay": "2ms", "jitter": "1ms"}},
    "slot.packets": {"slot": {"min": "1ms", "packets": 3}},
    "slot.bytes": {"slot": {"min": "1ms", "bytes": 3000}},
    "shaper.rate": {"shaper": BURST},
    "shaper.burst": {"shaper": BURST},
    "shaper.limit": {"shaper": BURST},
    "shaper.latency": {"shaper": {"rate": "10mbit", "burst": "15k", "latency": "20ms"}},
    "shaper.peakrate": {"shaper": {**BURST, "peakrate": "20mbit", "mtu": 1600}},
    "shaper.mtu": {"shaper": {**BURST, "peakrate": "20mbit", "mtu": 1600}},
    "shaper.mpu": {"shaper": {**BURST, "mpu": 64}},
    "shaper.overhead": {"shaper": {**BURST, "overhead": 4}},
    "shaper.linklayer": {"shaper": {**BURST, "linklayer": "atm"}},
    "loss_model.gemodel.p": {"loss_model": {"gemodel": {"p": "1%"}}},
    "loss_model.gemodel.r": {"loss_model": {"gemodel": {"p": "1%", "r": "50%"}}},
    "loss_model.gemodel.1-h": {"loss_model": {"gemodel": {"p": "1%", "1-h": "50%"}}},
    "loss_model.gemodel.1-k": {"loss_model": {"gemodel": {"p": "1%", "1-k": "1%"}}},
    **{
        f"loss_model.state.{k}": {"loss_model": {"state": {"p13": "1%", "p31": "50%", k: "1%"}}}
        for k in ("p13", "p31", "p32", "p23", "p14")
    },
}


@pytest.mark.parametrize(
    ("rows", "model"),
    [
        (table.NETEM, Netem),
        (table.SLOT, Slot),
        (table.SHAPER, TokenBucket),
        (table.GEMODEL, GilbertElliott),
        (table.FOUR_STATE, FourState),
    ],
    ids=["netem", "slot", "shaper", "gemodel", "state"],
)
def test_every_model_field_is_a_row_of_the_table(rows, model) -> None:
    assert {r.field_name for r in rows.values()} == set(model.model_fields)
    for row in rows.values():  # the description comes from the table
        assert row.meaning in (model.model_fields[row.field_name].description or "")


def test_every_parameter_is_taken_by_the_kernel_or_sends_the_link_to_the_relay() -> None:
    assert set(SAMPLES) == set(table.TABLE), "each table row needs a sample here"
    for name, settings in SAMPLES.items():
        n = Netem.model_validate(settings)
        row = table.TABLE[name]
        limits = table.kernel_limits(n)
        if row.kernel is None:
            assert limits, f"{name} has no kernel mapping, yet the kernel path would take it"
            continue
        if limits:
            continue  # a companion is relay only (the 4-state model's rows, say)
        if row.unit == "model":  # a nested model the kernel takes as a qdisc of its own
            assert row.kernel == "tbf"
            assert table.tbf_request(n)
            continue
        request = table.tbf_request(n) if name.startswith("shaper.") else table.netem_request(n)
        assert row.kernel in request, f"{name}: the kernel mapping drops it"


def test_kernel_and_relay_values_are_in_their_units() -> None:
    n = Netem.model_validate({"delay": "10ms", "jitter": "1ms", "rate": "10mbit", "shaper": {**BURST}})
    assert table.netem_request(n)["delay"] == 10_000  # microseconds
    assert table.netem_request(n)["rate"] == "10000000bit"
    assert table.tbf_request(n) == {"rate": "10000000bit", "burst": 15360, "limit": 30000}
    assert n.params().delay_ns == 10_000_000
    assert n.params().shaper is not None
    assert n.params().shaper.limit == 30000
    over = Netem.model_validate({"delay": "5000s", "rate": "40gbit"})
    assert any("delay above" in r for r in table.kernel_limits(over))
    assert any("rate above" in r for r in table.kernel_limits(over))


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"delay": "1e400ms"}, "too large"),
        ({"rate": "1e400mbit"}, "too large"),
        ({"delay": "1e308ms"}, "too large"),
        ({"slot": {"min": "1e400ms"}}, "too large"),
        ({"delay": "2592000s"}, "poll's limit"),
        ({"shaper": {"rate": "1e308gbit", "burst": 1600, "limit": 10}}, "too large"),
        ({"rate": "2000tbit"}, "no link paces that fast"),
    ],
)
def test_numbers_the_relay_cannot_honour_are_refused(settings: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Netem.model_validate(settings)


def test_the_cli_reads_settings_by_the_table() -> None:
    got = table.settings_mapping(
        ["delay=50ms", "ecn=yes", "loss=1%", "shaper.rate=10mbit", "distribution=[1,2]"]
    )
    assert got == {
        "delay": "50ms",
        "ecn": True,
        "loss": "1%",
        "shaper": {"rate": "10mbit"},
        "distribution": [1, 2],
    }
    assert table.settings_mapping(["a_to_b.delay=5ms"]) == {"a_to_b": {"delay": "5ms"}}
    with pytest.raises(ValueError, match="did you mean delay"):
        table.settings_mapping(["dealy=5ms"])
    with pytest.raises(ValueError, match="write true or false"):
        table.settings_mapping(["ecn=maybe"])
    with pytest.raises(ValueError, match="give its parts, like shaper.rate"):
        table.settings_mapping(["shaper=10mbit"])


def test_the_docs_show_the_table_as_it_is() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "impairments.md").read_text()
    shown = text.split("<!-- parameter-table:start -->\n")[1].split("<!-- parameter-table:end -->")[0]
    assert shown == table.markdown(), (
        "regenerate with python -c 'from tunlab.relay.impair._table import markdown; print(markdown(), end=)'"
    )

"""The fast paths of reading a topology give exactly what the general ones give: the YAML
construction (against PyYAML's SafeLoader), dotted IPv4 parsing (against ipaddress), and the
collector pause (re-enabled after, also after an error)."""

from __future__ import annotations

import gc
import ipaddress
import weakref

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tunlab.errors import TopologyError
from tunlab.topologies import _gcpause, _parsing
from tunlab.topologies._fields import _fast_v4_address, _fast_v4_interface
from tunlab.topologies._gcpause import gc_paused
from tunlab.topologies._limits import DEFAULT_LIMITS
from tunlab.topologies._loader import load_text

DOCUMENTS = [
    "name: t\nnodes: {a: {}, b: {mtu: 9000, up: true, x: null, f: 1.5, o: 0o17, h: 0x1f}}\n",
    "base: &b {mtu: 1400, list: [1, 2, {k: v}]}\nuse: *b\nagain: [*b, *b]\n",
    "- 1\n- -2.5e3\n- .inf\n- ~\n- 'quoted: yes'\n- yes\n- on\n- '123'\n- [ ]\n- { }\n",
    "deep: " + "[" * 40 + "1" + "]" * 40 + "\n",
    "when: 2001-12-14\nraw: !!binary aGVsbG8=\n",  # timestamp, binary: the general path
    "base: &b {a: 1}\nmerged: {<<: *b, c: 2}\n",  # a merge key: the general path
    "s: !!set {a, b}\nseq: !!omap [{a: 1}]\n",
    "=: x\nother: 1\n",
]


@pytest.mark.parametrize("text", DOCUMENTS)
def test_fast_yaml_construction_equals_pyyaml(text: str) -> None:
    assert _parsing.parse_yaml(text, "t.yaml", DEFAULT_LIMITS) == yaml.safe_load(text)


SCALARS = [
    "198.18.0.1",
    "198.18.0.1/24",
    "1.2",
    "1.2.3",
    "1.5e3",
    "1.5e+3",
    ".5",
    "-.inf",
    ".NaN",
    "190:20:30",
    "190:20:30.15",
    "1_000",
    "0x1F",
    "0o17",
    "0b101",
    "~",
    "null",
    "Null",
    "yes",
    "No",
    "on",
    "OFF",
    "true",
    "<<",
    "=",
    "",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "2001-12-14 21:59:43.10",
    "2001:db8::1",
    "fd00::1/64",
    "eth0",
    "n1:right",
    "v1.2.3",
]


@pytest.mark.parametrize("value", SCALARS)
def test_the_scalar_resolver_agrees_with_pyyamls(value: str) -> None:
    """Plain and quoted, each scalar gets the tag PyYAML's SafeLoader gives it."""
    for text in (f"k: {value}\n", f"k: '{value}'\n", f'k: "{value}"\n'):
        ours = _parsing.UniqueKeyLoader(text)
        theirs = yaml.SafeLoader(text)
        try:
            assert ours.get_single_node().value[0][1].tag == theirs.get_single_node().value[0][1].tag, text
        finally:
            ours.dispose()
            theirs.dispose()


@given(st.text(alphabet="0123456789.:-+_eExXoObB ~tTnNyYaAfFlLsSuU<=", min_size=1, max_size=14))
def test_the_scalar_resolver_agrees_on_generated_scalars(value: str) -> None:
    text = f"k: {value.strip() or 'x'}\n"
    try:
        want = yaml.safe_load(text)
    except yaml.YAMLError:
        return  # not a scalar document at all
    assert repr(_parsing.parse_yaml(text, "t.yaml", DEFAULT_LIMITS)) == repr(want)  # nan != nan


def test_aliases_stay_shared_objects() -> None:
    doc = _parsing.parse_yaml("base: &b {mtu: 1400}\nuse: *b\n", "t.yaml", DEFAULT_LIMITS)
    assert doc["base"] is doc["use"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\nb: 2\na: 3\n", "t.yaml:3: duplicate key 'a' (first on line 1)"),
        ("nodes:\n  h1: {}\n  h1: {}\n", "t.yaml:3: duplicate key 'h1' (first on line 2)"),
        ("? [a, b]\n: 1\n", "a mapping key must be a plain value"),
        ("x: &a {k: 1}\ny: {<<: *a, k: 1, k: 2}\n", "duplicate key 'k'"),  # the general path too
        ("- {a: 1}\n- {b: 1,\n   b: 2}\n", "t.yaml:3: duplicate key 'b' (first on line 2)"),
        ("1: a\n2: b\n1: c\n", "t.yaml:3: duplicate key 1 (first on line 1)"),
        ("x:\n  ? {k: v}\n  : 1\n", "t.yaml:2: a mapping key must be a plain value"),
    ],
)
def test_duplicate_and_unhashable_keys_are_refused(text: str, message: str) -> None:
    with pytest.raises(
        TopologyError,
    ) as info:
        _parsing.parse_yaml(text, "t.yaml", DEFAULT_LIMITS)
    assert message in str(info.value)


EDGE = ["0.0.0.0", "255.255.255.255/32", "1.2.3.4/0", "01.2.3.4", "1.2.3.4/024", "1.2.3.4/33",
        "256.0.0.1", "1.2.3", "1.2.3.4.5", "1.2.3.4/255.255.0.0", " 1.2.3.4", "1.2.3.4/", "\u0661.2.3.4",
        "198.18.0.1/24", "10.0.0.255/8", "1.2.3.4//8", "1.2.3.4/ 8"]  # fmt: skip


def _same_as_ipaddress(text: str) -> None:
    fast = _fast_v4_interface(text)
    try:
        want: object = ipaddress.IPv4Interface(text)
    except ValueError:
        want = None
    if isinstance(fast, ipaddress.IPv4Interface):  # the fast path took it: it must agree
        assert fast == want and fast.network == want.network  # type: ignore[union-attr]
    else:
        assert fast == text  # left to ipaddress, which decides
    address = _fast_v4_address(text)
    if isinstance(address, ipaddress.IPv4Address):
        assert address == ipaddress.IPv4Address(text)
    else:
        assert address == text


@pytest.mark.parametrize("text", EDGE)
def test_dotted_fast_path_agrees_with_ipaddress_on_edges(text: str) -> None:
    _same_as_ipaddress(text)


@given(
    st.lists(st.integers(0, 300), min_size=3, max_size=5).map(lambda o: ".".join(map(str, o))),
    st.one_of(st.none(), st.integers(0, 40).map(str), st.sampled_from(["024", "", "x"])),
)
def test_dotted_fast_path_agrees_with_ipaddress(address: str, prefix: str | None) -> None:
    _same_as_ipaddress(address if prefix is None else f"{address}/{prefix}")


class _Cell:
    """Something the collector tracks, to make a reference cycle of."""

    other: object = None


def test_what_a_read_leaves_alive_goes_to_the_oldest_generation_and_cycles_are_still_freed() -> None:
    def cycle() -> weakref.ref[_Cell]:
        a, b = _Cell(), _Cell()
        a.other, b.other = b, a
        return weakref.ref(a)

    with gc_paused():
        made = cycle()
        kept = [[i] for i in range(_gcpause._BIG + 10_000)]  # alive after the read, like a topology
    assert gc.get_count()[0] < len(kept)  # not left for the next young collection to walk
    assert made() is not None  # a cycle: reference counting alone cannot free it
    gc.collect()
    assert made() is None  # the full collection still does


def test_cycles_left_by_many_reads_are_freed_without_anyone_calling_collect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # moved objects do not count toward CPython's own trigger: the reads keep that count, and a
    # full collection comes once they moved their budget (made small here, to keep this quick)
    monkeypatch.setattr(_gcpause, "_moved", 0)
    monkeypatch.setattr(_gcpause, "_budget", 20_000)
    monkeypatch.setattr(_gcpause, "_next_budget", lambda: 20_000)
    monkeypatch.setattr(_gcpause, "_BIG", 1000)
    made = []
    for _ in range(40):
        with gc_paused():
            for _ in range(1000):
                a, b = _Cell(), _Cell()
                a.other, b.other = b, a
            made.append(weakref.ref(a))
            del a, b
    assert sum(ref() is not None for ref in made) <= 10  # the last reads' cycles may wait


def test_objects_a_program_froze_stay_frozen() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with gc_paused():
            kept = [[i] for i in range(100)]
        assert gc.get_freeze_count() == frozen and kept
    finally:
        gc.unfreeze()


def test_the_collector_runs_again_after_a_read_even_a_failed_one() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():  # nested
            pass
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(TopologyError), gc_paused():
        _parsing.parse_yaml("a: 1\na: 2\n", "t.yaml", DEFAULT_LIMITS)
    assert gc.isenabled()


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ('name: x\nnodes:\n  h1: {exec: [["echo", "a\\0b"]]}\n', "yaml"),
        ('name: x\nnodes:\n  h1: {exec: [["echo", "a\\x00b"]]}\n', "yaml"),
        ('{"name": "x", "nodes": {"h1": {"exec": [["echo", "a\\u0000b"]]}}}', "json"),
        ('name = "x"\n[nodes.h1]\nexec = [["echo", "a\\u0000b"]]\n', "toml"),
    ],
)
def test_a_nul_from_an_escape_is_refused_in_every_format(text: str, fmt: str) -> None:
    with pytest.raises(TopologyError, match=r"nodes\.h1\.exec\[0\]\[1\]: 'a\\x00b' contains a NUL byte"):
        load_text(text, fmt)


def test_a_nul_in_a_variable_given_with_clean_text_is_refused() -> None:
    with pytest.raises(TopologyError, match=r"vars\.who: 'a\\x00b' contains a NUL byte"):
        load_text("name: x\nnodes: {h1: {}}\n", "yaml", variables={"who": "a\x00b"})

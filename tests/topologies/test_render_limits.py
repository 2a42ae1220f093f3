"""The template limits hold against a single C-level call (which no Python watchdog can
interrupt): the render runs in a child process the kernel holds to render-memory (RLIMIT_AS)
and render-seconds (RLIMIT_CPU and a deadline), so the bomb costs the caller nothing."""

from __future__ import annotations

import os
import resource
import time

import pytest

from tunlab.errors import TopologyError
from tunlab.topologies._limits import Limits
from tunlab.topologies._loader import load_text
from tunlab.topologies._templating import render, render_stream

BOMBS = [
    "{{ 'x' | center(1500000000) }}",
    "{{ '%01500000000d' % 1 }}",
    "{{ 'ab' | indent(1500000000, true) }}",
]


@pytest.mark.parametrize("template", BOMBS)
def test_a_single_huge_call_stops_at_render_memory_and_costs_this_process_nothing(template: str) -> None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    with pytest.raises(TopologyError, match="render-memory=512M"):
        render(template, {}, "bomb.yaml")
    assert time.monotonic() - start < 5.0  # a watchdog, not a benchmark: the limit, not the machine
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    assert grown_mib < 64, f"this process grew {grown_mib:.0f} MiB: the render was not isolated"


def test_a_lower_memory_limit_is_the_one_that_holds() -> None:
    ok = "{{ 'x' | center(100000000) | length }}"  # 100 MB
    assert render(ok, {}, "t.yaml") == "100000000"
    with pytest.raises(TopologyError, match="render-memory=8M"):
        render(ok, {}, "t.yaml", Limits(render_memory=8 << 20))


def test_a_render_past_its_seconds_is_stopped() -> None:
    loop = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    start = time.monotonic()
    with pytest.raises(TopologyError, match="render-seconds=1"):
        render(loop, {}, "t.yaml", Limits(render_seconds=1))
    assert time.monotonic() - start < 4.0


def test_errors_and_results_cross_the_process_boundary_intact() -> None:
    assert render("{{ n * 2 }} ✓", {"n": 21}, "t.yaml") == "42 ✓"
    with pytest.raises(TopologyError, match="'nope' is undefined"):
        render("{{ nope }}", {}, "t.yaml")


# ---- parsed while it renders ------------------------------------------------------------------
# A YAML template is parsed as the child streams its text. Whatever the parser made of text cut
# short, the template's own error is the one reported, as when the render finished first.
PREFIX = "name: big\nnodes:\n{% for i in range(20000) %}  n{{ i }}: {}\n{% endfor %}"  # > 64 KiB


def _children() -> set[int]:
    with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as f:
        return {int(pid) for pid in f.read().split()}


@pytest.mark.parametrize("in_process", [False, True], ids=["child", "in-process"])
@pytest.mark.parametrize(
    ("template", "limits", "message"),
    [
        (PREFIX + "links: [{{ nope }}]\n", Limits(), r"big\.yaml:\d+: template: 'nope' is undefined"),
        (
            "name: x\nnodes: {{ '{' }}\n{{ nope }}\n",
            Limits(),
            "'nope' is undefined",
        ),  # the text so far is not YAML
        (
            PREFIX + "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            Limits(render_seconds=1),
            "render-seconds=1",
        ),
        (PREFIX + "links: []\n", Limits(rendered_size=100_000), "rendered-size"),
    ],
)
def test_a_template_error_after_text_was_parsed_is_the_one_reported(
    template: str, limits: Limits, message: str, in_process: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if in_process:
        monkeypatch.setenv("TUNLAB_RENDER_IN_PROCESS", "1")
    before = _children()
    with pytest.raises(TopologyError, match=message):
        load_text(template, "yaml", "big.yaml", limits=limits)
    assert _children() == before  # the render's child is reaped, whatever happened


def test_a_yaml_error_in_text_that_rendered_whole_names_its_line() -> None:
    with pytest.raises(TopologyError, match=r"big\.yaml:20004: "):
        load_text(PREFIX + "links: [\n  - a: {\n", "yaml", "big.yaml")


def test_a_template_streamed_into_the_parser_gives_the_same_topology() -> None:
    streamed = load_text(PREFIX + "links: []\n", "yaml", "big.yaml")
    whole = load_text(render(PREFIX + "links: []\n", {}, "big.yaml"), "yaml", "big.yaml")
    assert streamed.model_dump() == whole.model_dump() and len(streamed.nodes) == 20000


def test_a_parser_slower_than_the_render_is_not_taken_for_a_slow_render() -> None:
    # 3 MB of text rendered fast; the reader starts 1.5 s late, past render-seconds=1: the
    # text was drained as it came, so the child never waited on the pipe, and nothing timed out
    template = "{% for i in range(100000) %}n{{ i }}: 0123456789012345678901\n{% endfor %}"
    with render_stream(template, {}, "slow.yaml", Limits(render_seconds=1)) as stream:
        time.sleep(1.5)
        text = stream.finish()
    assert len(text) > 3_000_000 and text.endswith("n99999: 0123456789012345678901\n")

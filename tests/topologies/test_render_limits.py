"""The template limits hold against a single C-level call (which no Python watchdog can
interrupt): the render runs in a child process the kernel holds to render-memory (RLIMIT_AS)
and render-seconds (RLIMIT_CPU and a deadline), so the bomb costs the caller nothing."""

from __future__ import annotations

import resource
import time

import pytest

from tunlab.errors import TopologyError
from tunlab.topologies._limits import Limits
from tunlab.topologies._templating import render

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

"""The bad-input corpus (tests/topologies/bad/): every file gets exit 2 and the message it must
produce, from `tunlab validate` and from `tunlab up` (before anything is created), quickly and
without a traceback."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support import IS_ROOT, cli
from tunlab.topologies._state import owned_namespaces

BAD = Path(__file__).with_name("bad")
EXPECTED: dict[str, str] = json.loads((BAD / "expected.json").read_text())


def test_the_corpus_is_big_enough_and_complete() -> None:
    files = {p.name for p in BAD.iterdir() if p.name != "expected.json"}
    assert files == set(EXPECTED), "every corpus file needs its expected message (and vice versa)"
    assert len(files) >= 60
    assert {p.suffix for p in BAD.iterdir()} >= {".yaml", ".json", ".toml"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_validate_refuses_with_the_message(name: str) -> None:
    start = time.monotonic()
    code, text = cli("validate", str(BAD / name))
    assert code == 2, text
    assert EXPECTED[name] in text, text
    assert "Traceback" not in text
    assert time.monotonic() - start < 10  # a watchdog, not a benchmark: hostile input costs seconds


@pytest.mark.skipif(not IS_ROOT, reason="tunlab up needs root")
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_up_refuses_before_creating_anything(name: str) -> None:
    before = set(owned_namespaces())
    code, text = cli("up", str(BAD / name))
    assert code == 2, text
    assert EXPECTED[name] in text, text
    assert "Traceback" not in text
    assert set(owned_namespaces()) == before

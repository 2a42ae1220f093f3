"""Every offload test runs against both implementations: the compiled core and the pure Python."""

from collections.abc import Iterator

import pytest

from tests.offload.helpers import accel
from tests.support import UNDER_WINE
from tunlab.devices import offload


@pytest.fixture(autouse=True, params=["python", "compiled"])
def implementation(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param not in offload.available():
        pytest.skip(
            "the compiled offload core is not built for this Windows interpreter here (the wheels "
            "CI job builds and tests it on Windows)"
            if UNDER_WINE
            else "the compiled offload core is not built here (no C compiler at install?)"
        )
    with offload.using(request.param):
        yield request.param


__all__ = ["accel", "implementation"]

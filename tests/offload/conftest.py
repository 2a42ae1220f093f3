"""Every offload test runs against both implementations: the compiled core and the pure Python."""

from collections.abc import Iterator

import pytest

from tests.offload.helpers import accel
from tunlab.devices import offload


@pytest.fixture(autouse=True, params=["python", "compiled"])
def implementation(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param not in offload.available():
        pytest.skip("the compiled offload core is not built here (no C compiler at install?)")
    with offload.using(request.param):
        yield request.param


__all__ = ["accel", "implementation"]

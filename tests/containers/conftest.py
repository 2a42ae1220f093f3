"""Container tests need a docker engine (make test starts one) and the tunlab/base image."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def docker_engine(needs_root_session: None):
    try:
        from tunlab.topologies._containers import docker_client

        client = docker_client()
    except Exception as exc:
        pytest.skip(f"no docker engine: {exc}")
    from tunlab.topologies._images import build_base_image

    build_base_image(client)  # cached after the first build (~1 min from the Debian mirror)
    return client


@pytest.fixture(scope="session")
def needs_root_session() -> None:
    from tests.support import HAS_TUN, IS_LINUX, IS_ROOT

    if not (IS_LINUX and IS_ROOT and HAS_TUN):
        pytest.skip("needs root on Linux with /dev/net/tun")

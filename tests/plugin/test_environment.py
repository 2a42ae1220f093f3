"""Why the plugin's fixtures skip, on each kind of OS (the checks themselves, not the OS)."""

from __future__ import annotations

import os

import pytest
from pytest_tunlab import _environment as environment


@pytest.fixture
def elsewhere(monkeypatch: pytest.MonkeyPatch):
    """Pretend to be an OS without network namespaces."""
    monkeypatch.setattr(environment, "HAS_NAMESPACES", False)

    def be(platform: str, admin: bool) -> None:
        monkeypatch.setattr("tunlab.devices._platform.current_platform", lambda: platform)
        monkeypatch.setattr(environment, "is_admin", lambda: admin)

    return be


def test_labs_need_namespaces_but_tun_device_does_not(elsewhere) -> None:
    elsewhere("darwin", True)
    assert "needs Linux network namespaces" in (environment.missing() or "")
    assert environment.missing(namespaces=False) is None


@pytest.mark.parametrize(("platform", "how"), [("win32", "as Administrator"), ("freebsd", "sudo -E")])
def test_without_privilege_tun_device_says_how_to_get_it(elsewhere, platform: str, how: str) -> None:
    elsewhere(platform, False)
    assert how in (environment.missing(namespaces=False) or "")


def test_an_os_without_a_backend_is_named(elsewhere) -> None:
    elsewhere("sunos5", True)
    assert environment.missing(namespaces=False) == "tun_device has no device backend on sunos5 yet"


def test_is_admin_without_geteuid_asks_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows has no os.geteuid: the check must not crash there (off Windows: no windll, False)."""
    monkeypatch.delattr(os, "geteuid", raising=False)
    import ctypes

    if not hasattr(ctypes, "windll"):
        assert environment.is_admin() is False
    else:  # pragma: no cover - on Windows
        assert isinstance(environment.is_admin(), bool)

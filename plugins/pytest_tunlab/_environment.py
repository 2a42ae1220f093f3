"""What this machine can do, and the reason to skip when it cannot."""

from __future__ import annotations

import os
import shutil
import sys

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
HAS_NAMESPACES = sys.platform.startswith("linux")
NATIVE_DEVICES = ("darwin", "freebsd", "openbsd", "netbsd", "win32")  # devices in the host's stack


def is_admin() -> bool:
    """root on Unix; an elevated (Administrator) process on Windows."""
    geteuid = getattr(os, "geteuid", None)
    if geteuid is not None:
        return bool(geteuid() == 0)
    import ctypes

    windll = getattr(ctypes, "windll", None)
    return bool(windll is not None and windll.shell32.IsUserAnAdmin())


def _effective_caps() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def missing(*, tools: tuple[str, ...] = (), namespaces: bool = True) -> str | None:
    """Why tunlab's fixtures cannot run here, or None when they can.

    namespaces=False: only a device is needed (tun_device), which macOS and the BSDs make in
    the host's own stack; labs need Linux network namespaces.
    """
    if not HAS_NAMESPACES:
        from tunlab.devices._platform import current_platform

        platform = current_platform()
        if namespaces:
            return (
                f"needs Linux network namespaces: labs, netns and captures on lab nodes run on "
                f"Linux only (this is {platform}; tun_device works here)"
            )
        if platform not in NATIVE_DEVICES:
            return f"tun_device has no device backend on {platform} yet"
        if not is_admin():
            how = "as Administrator" if platform == "win32" else "as root (sudo -E pytest)"
            return f"tun_device on {platform} makes a real interface: run the tests {how}"
        for tool in tools:
            if shutil.which(tool) is None:
                return f"{tool} is not installed"
        return None
    caps = _effective_caps()
    if not caps & (1 << CAP_NET_ADMIN):
        return "tunlab fixtures need CAP_NET_ADMIN: run the tests as root (sudo -E pytest)"
    if not caps & (1 << CAP_SYS_ADMIN):
        return "tunlab fixtures need CAP_SYS_ADMIN to create network namespaces: run the tests as root"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun: the tun driver is missing (modprobe tun, or --device /dev/net/tun)"
    for tool in tools:
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None

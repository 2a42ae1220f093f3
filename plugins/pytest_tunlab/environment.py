"""What this machine can do, and the reason to skip when it cannot."""

from __future__ import annotations

import os
import shutil
import sys

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21


def _effective_caps() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def missing(*, tools: tuple[str, ...] = ()) -> str | None:
    """Why tunlab's fixtures cannot run here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return f"tunlab fixtures need Linux network namespaces (this is {sys.platform})"
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

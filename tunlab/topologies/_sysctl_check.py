"""What `validate` can know of a node's sysctls without making anything: that the key exists in
the running kernel (/proc/sys; per-interface keys resolved against the node's own interfaces)
and that a value is of the kind the key holds now (integers where it holds integers).

Keys are looked up twice: in the host's /proc/sys (the key exists, its current value's kind)
and as a new network namespace sees /proc/sys (a thread unshares one for a few milliseconds,
once per process; it vanishes with the thread): many keys — net.core.netdev_max_backlog,
net.ipv4.inet_peer_* — exist only in the host's initial namespace, so no node can set them.
Without the privilege to unshare, only the first lookup is made and `up` names the field."""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

PROC_SYS = Path("/proc/sys")
# net.<family>.<conf|neigh>.<interface>.<knob>: the interface is the node's, or all/default
PER_INTERFACE = {
    ("net", "ipv4", "conf"),
    ("net", "ipv6", "conf"),
    ("net", "ipv4", "neigh"),
    ("net", "ipv6", "neigh"),
}
ALWAYS = ("all", "default", "lo")


@functools.lru_cache(maxsize=4096)
def _current(path: Path) -> tuple[bool, tuple[str, ...] | None]:
    """(the key exists, its value split in words, or None when it cannot be read)."""
    if not path.is_file():
        return path.exists(), None
    try:
        return True, tuple(path.read_text().split())
    except OSError:  # write-only keys (route.flush), or not readable by this user
        return True, None


@functools.lru_cache(maxsize=1)
def _namespace_keys() -> frozenset[str] | None:
    """Every key path under /proc/sys/net that a new network namespace has (None: could not
    make one to look, e.g. without CAP_SYS_ADMIN)."""
    found: list[frozenset[str]] = []

    def look() -> None:
        from tunlab._linux.mounts import unshare
        from tunlab._linux.netns import CLONE_NEWNET

        try:
            unshare(CLONE_NEWNET, "network")  # this thread only; the namespace dies with it
        except OSError:
            return
        keys = []
        for root, _dirs, files in os.walk(PROC_SYS / "net"):
            keys += [os.path.relpath(os.path.join(root, f), PROC_SYS) for f in files]
        found.append(frozenset(keys))

    thread = threading.Thread(target=look, name="tunlab-sysctl-keys")
    thread.start()
    thread.join()
    return found[0] if found else None


def _integer(word: str) -> bool:
    return word.removeprefix("-").isdigit()


def sysctl_issue(key: str, value: object, interfaces: set[str], node: str, *, in_guest: bool) -> str | None:
    """What is wrong with `key: value` in node `node` (None: nothing validate can see)."""
    parts = key.split(".")
    lookup = parts
    if tuple(parts[:3]) in PER_INTERFACE and len(parts) >= 5:
        iface = parts[3]
        if iface not in interfaces and iface not in ALWAYS:
            known = ", ".join(sorted(interfaces)) or "none"
            return (
                f"node '{node}' has no interface '{iface}' (its interfaces: {known}; "
                "or all, default, lo): use one of its interface names"
            )
        if parts[2] == "neigh" and iface == "all":
            return f"there is no '{key}': neighbour settings are per interface or default"
        # an interface's keys are those of a stand-in every namespace has: conf/default, and
        # neigh/lo (a new namespace has no neigh/default)
        stand_in = iface if iface in ALWAYS else ("lo" if parts[2] == "neigh" else "default")
        lookup = [*parts[:3], stand_in, *parts[4:]]
    if in_guest or not _have_proc_sys():
        return None  # a guest kernel's keys, or no /proc/sys to ask: up will tell
    text = str(int(value)) if isinstance(value, bool) else str(value)
    fresh = _namespace_keys()
    host_only = fresh is not None and "/".join(lookup) not in fresh
    return _kernel_issue(key, tuple(lookup), text, host_only)


@functools.lru_cache(maxsize=1)
def _have_proc_sys() -> bool:
    return (PROC_SYS / "net").is_dir()


@functools.lru_cache(maxsize=4096)
def _kernel_issue(key: str, lookup: tuple[str, ...], text: str, host_only: bool) -> str | None:
    """sysctl_issue's questions to the kernel, asked once per key and value in a process (a
    10,000-node lab sets the same few keys on every node)."""
    path = PROC_SYS.joinpath(*lookup)
    exists, now = _current(path)
    if not exists:
        return f"this kernel has no sysctl '{key}' (no {path}): check the spelling"
    if now is None and path.is_dir():
        return f"'{key}' is a group of keys, not a key: name one of the keys in it"
    if host_only:
        return (
            f"'{key}' exists only in the host's own network namespace (the kernel gives a node's "
            "namespace no such key): it cannot be set per node; leave it out"
        )
    if now and all(_integer(w) for w in now):
        words = text.split()
        if not words or len(words) > len(now) or not all(_integer(w) for w in words):
            shape = "an integer" if len(now) == 1 else f"up to {len(now)} integers separated by spaces"
            return f"{text!r} is not a value for {key}: it takes {shape} (now {' '.join(now)!r})"
    return None

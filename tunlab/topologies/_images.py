"""tunlab/base: a small Debian image built locally (no registry needed), cached and reused.

debootstrap (minbase) with iproute2, iputils-ping, python3 and a few tools, imported with the
docker SDK. Users' CI is often offline too: only the distribution mirror is needed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunlab.errors import LabError

BASE_IMAGE = "tunlab/base:latest"
BASE_NAMES = ("tunlab/base", "tunlab/base:latest")
SUITE = os.environ.get("TUNLAB_DEBIAN_SUITE", "bookworm")
MIRROR = os.environ.get("TUNLAB_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ["iproute2", "iputils-ping", "python3-minimal", "procps", "ethtool", "netcat-openbsd"]
Say = Callable[[str], None]


def is_base(image: str) -> bool:
    return image in BASE_NAMES


def image_exists(client: Any, image: str) -> bool:
    try:
        client.images.get(image)
    except Exception:
        return False
    return True


def build_base_image(client: Any, *, rebuild: bool = False, say: Say | None = None) -> str:
    """Build tunlab/base:latest unless it exists (or rebuild); returns the image id."""
    note = say or (lambda text: None)
    if not rebuild and image_exists(client, BASE_IMAGE):
        note(f"{BASE_IMAGE} is already built")
        return str(client.images.get(BASE_IMAGE).id)
    if shutil.which("debootstrap") is None:
        raise LabError(f"building {BASE_IMAGE} needs debootstrap (apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise LabError(f"building {BASE_IMAGE} needs root (debootstrap)")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tunlab-image-") as tmp:
        root = Path(tmp) / "rootfs"
        note(f"debootstrap {SUITE} (minbase + {', '.join(PACKAGES)}) from {MIRROR}")
        done = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(root),
                MIRROR,
            ],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if done.returncode != 0:
            tail = " | ".join(done.stdout.strip().splitlines()[-3:] + done.stderr.strip().splitlines()[-3:])
            raise LabError(f"debootstrap failed ({done.returncode}): {tail}")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (root / junk).glob("*"):
                with contextlib.suppress(OSError):
                    if entry.is_file():
                        entry.unlink()
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(tarball), "."], check=True, timeout=600)
        note(f"importing into docker as {BASE_IMAGE}")
        with open(tarball, "rb") as f:
            client.api.import_image_from_data(
                f.read(),
                repository="tunlab/base",
                tag="latest",
                changes=['CMD ["sleep", "infinity"]', "ENV LANG=C.UTF-8"],
            )
    note(f"built {BASE_IMAGE} in {time.monotonic() - start:.0f} s")
    return str(client.images.get(BASE_IMAGE).id)

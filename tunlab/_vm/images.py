"""Guest images from the recipes in vm-images/: built offline from Debian packages, cached.

An image is a kernel (vmlinux), an initramfs (busybox, modules, tunlab's agent) and, for the
`debian` recipe, an ext4 root. It is built on first use under a lock, into a directory named
by the hash of its recipe, its guest files and the kernel package version, with a manifest;
an up-to-date image is never rebuilt. TUNLAB_VM_IMAGE_DIR moves the cache, TUNLAB_VM_RECIPES
the recipes (default: the ones tunlab ships, tunlab._shipped).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunlab._shipped import shipped_dir
from tunlab._vm import cpio, kernel
from tunlab.errors import LabError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

BUILDER_VERSION = "1"  # bump when the way images are assembled changes
SUITE = os.environ.get("TUNLAB_DEBIAN_SUITE", "bookworm")
MIRROR = os.environ.get("TUNLAB_DEBIAN_MIRROR", "http://deb.debian.org/debian")
Say = Callable[[str], None]


def recipes_dir() -> Path:
    env = os.environ.get("TUNLAB_VM_RECIPES")
    if env:
        return Path(env)
    return shipped_dir("vm-images")


def cache_dir() -> Path:
    return Path(os.environ.get("TUNLAB_VM_IMAGE_DIR", "/var/cache/tunlab/vm-images"))


@dataclass(frozen=True)
class Recipe:
    """A recipe file (vm-images/<name>/recipe.toml) and the guest files next to it."""

    name: str
    path: Path
    data: dict[str, Any] = field(repr=False)

    @classmethod
    def load(cls, name: str) -> Recipe:
        folder = recipes_dir() / name
        file = folder / "recipe.toml"
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) or not file.is_file():
            known = ", ".join(available()) or "none"
            raise LabError(f"no VM image recipe {name!r} (recipes in {recipes_dir()}: {known})")
        try:
            data = tomllib.loads(file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise LabError(f"{file}: {exc}") from None
        return cls(name, folder, data)

    @property
    def base(self) -> str | None:
        return self.data.get("base")

    def kernel_package(self, pinned: str | None = None) -> str:
        return pinned or str(self.data.get("kernel_package", "linux-image-amd64"))

    def fingerprint(self) -> str:
        """What the image's content depends on, besides the kernel version."""
        h = hashlib.sha256(BUILDER_VERSION.encode())
        for recipe in self.chain():
            for p in sorted(recipe.path.iterdir()):
                if p.is_file():
                    h.update(p.name.encode() + b"\0" + p.read_bytes())
        return h.hexdigest()

    def chain(self) -> list[Recipe]:
        """This recipe and the ones it builds on, base first."""
        out = [self]
        while out[0].base:
            out.insert(0, Recipe.load(str(out[0].base)))
        return out


def available() -> list[str]:
    root = recipes_dir()
    return sorted(p.name for p in root.iterdir() if (p / "recipe.toml").is_file()) if root.is_dir() else []


@dataclass(frozen=True)
class Image:
    """A built image: where its files are and what went into it."""

    name: str
    directory: Path
    manifest: dict[str, Any]

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinux"

    @property
    def initrd(self) -> Path:
        return self.directory / "initramfs.cpio"

    @property
    def rootfs(self) -> Path | None:
        p = self.directory / "rootfs.ext4"
        return p if p.exists() else None


# ---- apt ------------------------------------------------------------------------------------
def _run(argv: list[str], *, cwd: Path | None = None, timeout: float = 1800) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-4:])
        raise LabError(f"{' '.join(argv[:3])} failed ({done.returncode}): {tail}")
    return done.stdout


def _apt_show(package: str) -> dict[str, str]:
    try:
        text = _run(["apt-cache", "show", "--no-all-versions", package], timeout=120)
    except LabError:
        _run(["apt-get", "update", "-q"], timeout=600)  # a fresh machine has no package lists
        text = _run(["apt-cache", "show", "--no-all-versions", package], timeout=120)
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep and not line.startswith(" ") and key not in fields:
            fields[key] = value.strip()
    return fields


def _lists_stamp() -> str:
    """What changes when apt's package lists do (an update, a new source)."""
    parts = []
    for path in ("/var/lib/apt/lists", "/var/cache/apt/pkgcache.bin", "/etc/apt/sources.list.d"):
        with contextlib.suppress(OSError):
            parts.append(f"{path}:{os.stat(path).st_mtime_ns}")
    return ";".join(parts)


def resolve_kernel(package: str) -> tuple[str, str]:
    """(versioned image package, its version) for linux-image-amd64 or a pinned package.

    Asking apt costs ~0.5 s per call (two calls for a metapackage), which every lab with a VM
    paid; the answer is kept in the cache directory until apt's package lists change.
    """
    stamp = _lists_stamp()
    memo = cache_dir() / "kernels.json"
    known: dict[str, list[str]] = {}
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(memo.read_text())
    hit = known.get(package)
    if isinstance(hit, list) and len(hit) == 3 and hit[2] == stamp and stamp:
        return hit[0], hit[1]
    versioned, version = _resolve_kernel(package)
    known[package] = [versioned, version, stamp]
    with contextlib.suppress(OSError):
        memo.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        tmp = memo.with_name(f".kernels-{os.getpid()}.json")
        tmp.write_text(json.dumps(known))
        os.chmod(tmp, 0o644)  # whatever the umask: readable, never writable by others
        os.replace(tmp, memo)
    return versioned, version


def _resolve_kernel(package: str) -> tuple[str, str]:
    if shutil.which("apt-cache") is None:
        raise LabError("building a VM image needs apt (Debian/Ubuntu): apt-cache is missing")
    info = _apt_show(package)
    if not info:
        raise LabError(f"no kernel package {package!r} in the apt sources")
    depends = info.get("Depends", "")
    m = re.match(r"(linux-image-[0-9][^\s,(]*)", depends)
    if package.startswith("linux-image-") and m and not re.match(r"linux-image-[0-9]", package):
        versioned = m.group(1)  # a metapackage: the kernel it depends on
        return versioned, _apt_show(versioned).get("Version", "?")
    return package, info.get("Version", "?")


def _download(packages: list[str], into: Path) -> None:
    _run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", *packages], cwd=into, timeout=1800)


def _extract(into: Path, pattern: str) -> Path:
    debs = sorted(into.glob(pattern))
    if not debs:
        raise LabError(f"apt-get download left no {pattern} in {into}")
    out = into / debs[0].name.split("_")[0]
    _run(["dpkg-deb", "-x", str(debs[0]), str(out)])
    return out


# ---- cache ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked() -> Iterator[None]:
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def key_for(recipe: Recipe, kernel_version: str) -> str:
    h = hashlib.sha256(f"{recipe.fingerprint()}\0{kernel_version}".encode()).hexdigest()
    return f"{recipe.name}-{h[:12]}"


def installed() -> list[Image]:
    """Every built image in the cache (manifest present)."""
    out: list[Image] = []
    root = cache_dir()
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        m = d / "manifest.json"
        if m.is_file():
            with contextlib.suppress(OSError, ValueError):
                out.append(Image(d.name.rsplit("-", 1)[0], d, json.loads(m.read_text())))
    return out


def remove(name: str | None = None) -> list[Path]:
    """Delete the cached images of a recipe (all when name is None); returns what went."""
    gone = []
    with _locked():
        for image in installed():
            if name is None or image.name == name:
                shutil.rmtree(image.directory)
                gone.append(image.directory)
    return gone


def ensure(
    name: str, *, kernel_package: str | None = None, rebuild: bool = False, say: Say | None = None
) -> Image:
    """The image of a recipe, built if missing or out of date (under the cache lock)."""
    note = say or (lambda text: None)
    recipe = Recipe.load(name)
    package, version = resolve_kernel(recipe.kernel_package(kernel_package))
    key = key_for(recipe, f"{package}={version}")
    target = cache_dir() / key
    with _locked():
        manifest = target / "manifest.json"
        if manifest.is_file() and not rebuild:
            return Image(name, target, json.loads(manifest.read_text()))
        note(f"building VM image {name} ({package} {version})")
        start = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir()))
        try:
            _build(recipe, package, version, tmp, note)
            data = {
                "name": name,
                "key": key,
                "kernel_package": package,
                "kernel_version": version,
                "recipe": recipe.fingerprint(),
                "built_at": time.time(),
                "build_seconds": round(time.monotonic() - start, 1),
                "files": sorted(p.name for p in tmp.iterdir()),
            }
            (tmp / "manifest.json").write_text(json.dumps(data, indent=2))
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        note(f"built VM image {name} in {data['build_seconds']} s")
        return Image(name, target, data)


def _build(recipe: Recipe, package: str, version: str, out: Path, note: Say) -> None:
    chain = recipe.chain()
    work = Path(tempfile.mkdtemp(prefix="tunlab-vm-build-"))
    try:
        note(f"apt-get download {package} busybox-static")
        _download([package, "busybox-static"], work)
        kdir = _extract(work, "linux-image-*.deb")
        bbdir = _extract(work, "busybox-static_*.deb")
        vmlinuz = next((kdir / "boot").glob("vmlinuz-*"), None)
        if vmlinuz is None:
            raise LabError(f"{package} has no boot/vmlinuz")
        note("extracting the uncompressed kernel (vmlinux)")
        (out / "vmlinux").write_bytes(kernel.vmlinux_from_bzimage(vmlinuz.read_bytes()))
        modules_dir = next((kdir / "lib" / "modules").iterdir())
        wanted: list[str] = []
        for r in chain:
            wanted += [m for m in r.data.get("modules", []) if m not in wanted]
        order = kernel.closure(wanted, kernel.module_index(modules_dir), kernel.builtin_modules(modules_dir))
        index = kernel.module_index(modules_dir)
        files = {f: chain[0].path / f for f in chain[0].data.get("guest_files", [])}
        for r in chain[1:]:
            files.update({f: r.path / f for f in r.data.get("guest_files", [])})
        entries = [cpio.directory(d) for d in ("bin", "sbin", "etc", "etc/tunlab", "lib", "lib/modules",
                                               "dev", "proc", "sys", "run", "tmp", "mnt")]  # fmt: skip
        entries += [
            cpio.chardev("dev/console", 5, 1),
            cpio.chardev("dev/null", 1, 3, 0o666),
            cpio.file("bin/busybox", (bbdir / "bin" / "busybox").read_bytes(), 0o755),
            cpio.file("init", files["init"].read_bytes(), 0o755),
            cpio.file("etc/tunlab/agent.sh", files["agent.sh"].read_bytes(), 0o644),
            cpio.file("etc/tunlab/modules", ("\n".join(order) + "\n").encode()),
            cpio.file("etc/tunlab/kernel", f"{package} {version}\n".encode()),
        ]
        entries += [cpio.file(f"lib/modules/{m}.ko", index[m].read_bytes()) for m in order]
        note(f"initramfs: busybox, agent, {len(order)} modules")
        with open(out / "initramfs.cpio", "wb") as f:
            cpio.write(f, entries)
        root_packages = [p for r in chain for p in r.data.get("root_packages", [])]
        if root_packages:
            _build_root(root_packages, int(recipe.data.get("root_size_mib", 384)), out, work, note)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _build_root(packages: list[str], size_mib: int, out: Path, work: Path, note: Say) -> None:
    """An ext4 root from debootstrap minbase (read-only in the guest, an overlay on top)."""
    for tool in ("debootstrap", "mkfs.ext4"):
        if shutil.which(tool) is None:
            raise LabError(f"building a root image needs {tool} (apt-get install debootstrap e2fsprogs)")
    root = work / "rootfs"
    note(f"debootstrap {SUITE} minbase + {', '.join(packages)}")
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", SUITE, str(root), MIRROR])
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
        target = root / junk
        if target.is_dir():
            for entry in target.iterdir():
                if entry.is_dir() and junk.endswith(("doc", "man")):
                    shutil.rmtree(entry, ignore_errors=True)
                elif entry.is_file():
                    entry.unlink()
    note(f"mkfs.ext4 ({size_mib} MiB)")
    _run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            "tunlab-root",
            "-d",
            str(root),
            str(out / "rootfs.ext4"),
            f"{size_mib}M",
        ]
    )

"""Reaching a cluster safely: which addresses are allowed, TLS, and the Dask client.

The workers run as root, so whoever reaches the scheduler has root on every host: a plain
`tcp://` address that is not loopback is refused unless the caller says --insecure; `tls://`
takes certificate paths from the options or TUNLAB_TLS_CA / TUNLAB_TLS_CERT / TUNLAB_TLS_KEY.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tunlab.errors import LabError

if TYPE_CHECKING:
    from distributed import Client

ENV_ADDRESS = "TUNLAB_CLUSTER"
ENV_TLS = {"ca": "TUNLAB_TLS_CA", "cert": "TUNLAB_TLS_CERT", "key": "TUNLAB_TLS_KEY"}
SCHEMES = ("tcp", "tls")


class ClusterError(LabError):
    """A cluster could not be reached, or a host of it failed; the message names the host."""


class ClusterAddressError(ClusterError, ValueError):
    """A cluster address or its TLS settings are not usable as given (bad input: nothing was
    contacted)."""


@dataclass(frozen=True)
class Tls:
    """Certificate paths for tls:// (the CA that signed the scheduler's and workers' certificates,
    and this client's certificate and key)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @classmethod
    def from_env(cls, ca: str | None = None, cert: str | None = None, key: str | None = None) -> Tls:
        """The given paths, each missing one from its environment variable."""
        env = os.environ
        return cls(
            ca or env.get(ENV_TLS["ca"]), cert or env.get(ENV_TLS["cert"]), key or env.get(ENV_TLS["key"])
        )

    def security(self) -> Any:
        """Dask's Security for these paths (ClusterError naming what is missing or unreadable)."""
        missing = [f"{name} ({ENV_TLS[name]})" for name in ("ca", "cert", "key") if not getattr(self, name)]
        if missing:
            raise ClusterAddressError(
                f"tls:// needs certificate paths: give --tls-{missing[0].split()[0]} or set "
                f"{', '.join(m.split()[1].strip('()') for m in missing)} (docs/cluster.md, Security)"
            )
        for name in ("ca", "cert", "key"):
            path = str(getattr(self, name))
            if not os.access(path, os.R_OK):
                raise ClusterAddressError(f"tls {name} file {path!r} cannot be read")
        from distributed.security import Security

        return Security(  # type: ignore[no-untyped-call]
            tls_ca_file=self.ca,
            tls_client_cert=self.cert,
            tls_client_key=self.key,
            require_encryption=True,
        )


def check_address(address: str, *, insecure: bool = False) -> str:
    """A scheduler address this client may use (ClusterError saying what to do otherwise)."""
    if not isinstance(address, str) or not address:
        raise ClusterAddressError(f"cluster address: expected SCHEME://HOST:PORT, got {address!r}")
    if "://" not in address:
        address = f"tcp://{address}"
    parts = urlsplit(address)
    if parts.scheme not in SCHEMES:
        raise ClusterAddressError(
            f"cluster address {address!r}: use tls://HOST:PORT (or tcp:// on loopback), not {parts.scheme}://"
        )
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise ClusterAddressError(f"cluster address {address!r}: write it as {parts.scheme}://HOST:PORT")
    if parts.scheme == "tcp" and not insecure and not _loopback(parts.hostname):
        raise ClusterAddressError(
            f"cluster address {address!r}: plain tcp:// to another machine lets anyone on the network "
            "run commands as root on every host; use tls:// with certificates (docs/cluster.md, "
            "Security), or pass --insecure on a network you trust"
        )
    return address


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect(
    cluster: str | Client | None,
    *,
    insecure: bool = False,
    tls: Tls | None = None,
    timeout: float = 15.0,
) -> Client:
    """A Dask client for `cluster` (an address, TUNLAB_CLUSTER when None, or a Client as is)."""
    try:
        from distributed import Client
    except ImportError:
        raise ClusterError("labs across hosts need Dask distributed: pip install 'tunlab[cluster]'") from None
    if isinstance(cluster, Client):
        return cluster
    address = cluster or os.environ.get(ENV_ADDRESS)
    if not address:
        raise ClusterError(f"no cluster given: pass --cluster ADDRESS or set {ENV_ADDRESS}")
    address = check_address(address, insecure=insecure)
    security = (tls or Tls.from_env()).security() if address.startswith("tls://") else None
    try:
        return Client(address, security=security, timeout=timeout, set_as_default=False)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"cannot reach the cluster scheduler at {address}: {exc} (is `dask scheduler` running there?)"
        ) from None


def workers(client: Client) -> dict[str, tuple[str, str]]:
    """Every worker by name: (its Dask address, the host part of that address)."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    out: dict[str, tuple[str, str]] = {}
    for addr, w in info.items():
        name = str(w.get("name", addr))
        host = urlsplit(addr).hostname or str(w.get("host", ""))
        out[name] = (addr, host)
    return out

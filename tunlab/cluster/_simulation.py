"""SimulatedCluster: a Dask cluster of N "hosts" on one machine, to try labs across hosts.

Each host is a network namespace with its own `dask worker --name hN` (started as a user
would, root, its own TUNLAB_RUN_DIR and owners directory as a separate machine has), all on
an underlay bridge (198.18.250.0/24) in a hub namespace; the scheduler and the clients run
in a client namespace on the same bridge. Cross-host traffic really crosses the underlay.
Nothing is made in the root namespace; close() removes every namespace, process and file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tunlab._linux.netns import NetNamespace
from tunlab.errors import LabError

UNDERLAY = "198.18.250.{}"
SCHEDULER_PORT = 8786


class SimulatedCluster:
    """hosts: how many worker hosts (h1..hN); tls: certificates made with openssl (tls://),
    else plain tcp:// (clients then need insecure=True: the scheduler is not on loopback)."""

    def __init__(
        self, hosts: int = 3, *, tls: bool = True, mtu: int = 1500, prefix: str | None = None
    ) -> None:
        if not 1 <= hosts <= 200:
            raise ValueError(f"hosts: expected 1..200, got {hosts!r}")
        self.count = hosts
        self.tls = tls
        self.mtu = mtu
        self.prefix = prefix or f"tlsim{uuid.uuid4().hex[:6]}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        os.chmod(self.dir, 0o700)
        self.namespaces: dict[str, NetNamespace] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.names = [f"h{i}" for i in range(1, hosts + 1)]
        self._clients: list[Any] = []

    # ---- addresses and environments ---------------------------------------------------------
    @property
    def address(self) -> str:
        """The scheduler's address, as clients give it (--cluster, TUNLAB_CLUSTER)."""
        return f"{'tls' if self.tls else 'tcp'}://{UNDERLAY.format(1)}:{SCHEDULER_PORT}"

    def underlay(self, host: str) -> str:
        """A host's address on the underlay (what its cross-host links use)."""
        return UNDERLAY.format(10 + self.names.index(host))

    def host_env(self, host: str) -> dict[str, str]:
        """A host's environment: its own run and owners directories."""
        root = self.dir / host
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNLAB_", "DASK_"))}
        env.update(
            TUNLAB_RUN_DIR=str(root / "run"),
            TUNLAB_OWNERS_DIR=str(root / "owners"),
        )
        return env

    def client_env(self) -> dict[str, str]:
        """What a client in the client namespace needs: the address and the certificates."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TUNLAB_CLUSTER")}
        env["TUNLAB_CLUSTER"] = self.address
        if self.tls:
            env.update(
                TUNLAB_TLS_CA=str(self.dir / "ca.pem"),
                TUNLAB_TLS_CERT=str(self.dir / "node.pem"),
                TUNLAB_TLS_KEY=str(self.dir / "node-key.pem"),
            )
        return env

    def client(self) -> Any:
        """A Dask client connected from the client namespace (its event loop thread is started
        there, so every connection it makes is), for ClusterLab(..., cluster=sim.client()) in
        this process; close() closes it."""
        from tunlab.cluster._connect import Tls, connect

        env = self.client_env()
        tls = Tls(env.get("TUNLAB_TLS_CA"), env.get("TUNLAB_TLS_CERT"), env.get("TUNLAB_TLS_KEY"))
        found = self.client_ns.call(connect, self.address, insecure=not self.tls, tls=tls)
        self._clients.append(found)
        return found

    @property
    def client_ns(self) -> NetNamespace:
        """The namespace clients run in (with the scheduler), on the underlay."""
        return self.namespaces["client"]

    # ---- bringing it up ---------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> SimulatedCluster:
        """Underlay, certificates, scheduler, workers: returns once every worker has joined."""
        try:
            self._underlay()
            if self.tls:
                self._certificates()
            self._scheduler()
            for host in self.names:
                self.start_worker(host)
            self.wait_for_workers(self.names, timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _underlay(self) -> None:
        hub = self.namespaces["hub"] = NetNamespace.create(f"{self.prefix}-hub")
        with hub.iproute() as ipr:
            ipr.link("add", ifname="br0", kind="bridge")
            ipr.link("set", index=ipr.link_lookup(ifname="br0")[0], state="up", mtu=self.mtu)
        for i, name in enumerate(["client", *self.names]):
            ns = self.namespaces[name] = NetNamespace.create(f"{self.prefix}-{name}")
            address = UNDERLAY.format(1 if name == "client" else 10 + i - 1)
            with hub.iproute() as ipr:
                ipr.link("add", ifname=f"p{i}", kind="veth", peer={"ifname": "u0", "net_ns_fd": ns.path})
                port = ipr.link_lookup(ifname=f"p{i}")[0]
                ipr.link("set", index=port, master=ipr.link_lookup(ifname="br0")[0], state="up", mtu=self.mtu)
            with ns.iproute() as ipr:
                idx = ipr.link_lookup(ifname="u0")[0]
                ipr.link("set", index=idx, state="up", mtu=self.mtu)
                ipr.addr("add", index=idx, address=address, prefixlen=24)

    def _certificates(self) -> None:
        """A CA and one certificate for the scheduler, workers and clients (docs/cluster.md has
        the same commands for real machines)."""
        d = str(self.dir)
        openssl = shutil.which("openssl")
        if openssl is None:
            raise LabError("the simulated cluster's tls:// needs openssl (apt-get install openssl)")
        steps = [
            [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=tunlab-sim-ca", "-keyout", f"{d}/ca-key.pem", "-out", f"{d}/ca.pem"],
            [openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=tunlab-node",
             "-keyout", f"{d}/node-key.pem", "-out", f"{d}/node.csr"],
            [openssl, "x509", "-req", "-in", f"{d}/node.csr", "-CA", f"{d}/ca.pem", "-CAkey",
             f"{d}/ca-key.pem", "-CAcreateserial", "-days", "2", "-out", f"{d}/node.pem"],
        ]  # fmt: skip
        for argv in steps:
            subprocess.run(argv, check=True, capture_output=True, timeout=60)

    def _tls_args(self) -> list[str]:
        if not self.tls:
            return []
        d = self.dir
        return [f"--tls-ca-file={d}/ca.pem", f"--tls-cert={d}/node.pem", f"--tls-key={d}/node-key.pem"]

    @staticmethod
    def _dask() -> list[str]:
        """`dask` as this interpreter runs it (what `dask scheduler`/`dask worker` are)."""
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise LabError(
                "the simulated cluster needs Dask distributed: pip install 'tunlab[cluster]'"
            ) from None
        return [sys.executable, "-m", "dask"]

    def _start(self, name: str, ns: NetNamespace, argv: list[str], env: dict[str, str]) -> None:
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 (the process writes it)
        with log:
            self.processes[name] = ns.popen(
                argv,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _scheduler(self) -> None:
        protocol = "tls" if self.tls else "tcp"
        argv = [*self._dask(), "scheduler", "--host", UNDERLAY.format(1), "--port", str(SCHEDULER_PORT),
                "--no-dashboard", "--protocol", protocol, *self._tls_args()]  # fmt: skip
        self._start("scheduler", self.client_ns, argv, self.host_env("scheduler"))

    def start_worker(self, host: str) -> None:
        """Start (or start again) host's `dask worker`."""
        argv = [*self._dask(), "worker", self.address, "--name", host, "--nthreads", "4",
                "--no-dashboard", "--host", self.underlay(host), "--local-directory",
                str(self.dir / host / "dask"), *self._tls_args()]  # fmt: skip
        self._start(host, self.namespaces[host], argv, self.host_env(host))

    def wait_for_workers(self, hosts: list[str], timeout: float = 60.0) -> None:
        """Until these hosts' workers are in the cluster (LabError with their logs if not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.run_client([sys.executable, "-c", _LIST_WORKERS], timeout=30)
            names = set(found.stdout.decode().split())
            if set(hosts) <= names:
                return
            dead = [h for h in hosts if self.processes[h].poll() is not None]
            if dead:
                break
            time.sleep(0.5)
        logs = "\n".join(f"--- {h}.log\n{self.log(h)[-2000:]}" for h in ["scheduler", *hosts])
        raise LabError(f"the simulated cluster's workers did not come up in {timeout:g} s\n{logs}")

    def log(self, name: str) -> str:
        """What a process of the cluster wrote (scheduler, h1, ...)."""
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ---- using it ---------------------------------------------------------------------------
    def run_client(
        self, argv: list[str], *, timeout: float = 300.0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a client program (tunlab, python) in the client namespace."""
        return self.client_ns.run(argv, timeout=timeout, env={**self.client_env(), **(env or {})})

    def run_on(
        self, host: str, argv: list[str], timeout: float = 120.0
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a program on a host, as a shell there would (its namespace and environment)."""
        return self.namespaces[host].run(argv, timeout=timeout, env=self.host_env(host))

    def kill(self, host: str) -> None:
        """SIGKILL a host's worker and everything it started (a machine that died)."""
        proc = self.processes[host]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    # ---- taking it down -----------------------------------------------------------------------
    def close(self) -> None:
        """Stop every process, collect what a killed worker left on its host, remove the
        namespaces and files."""
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()
        for proc in list(self.processes.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.processes.clear()
        for host in self.names:  # what a stopped worker held: its host's own gc removes it
            if host in self.namespaces and (self.dir / host / "owners").exists():
                with contextlib.suppress(Exception):
                    self.run_on(host, [sys.executable, "-m", "tunlab._cli.main", "gc"], timeout=120)
        for ns in reversed(list(self.namespaces.values())):
            with contextlib.suppress(Exception):
                ns.delete()
        self.namespaces.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SimulatedCluster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


_LIST_WORKERS = """
import os
from tunlab.cluster._connect import connect, workers
client = connect(os.environ["TUNLAB_CLUSTER"], insecure=True, timeout=5)
print(" ".join(workers(client)))
client.close()
"""

"""An iperf3 adapter: a server in one place, the client in another, its JSON report."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

from tunlab.errors import LabError

if TYPE_CHECKING:
    pass


def iperf3(
    client: Any,
    server: Any,
    address: str,
    *,
    seconds: int = 5,
    udp: bool = False,
    bitrate: str | None = None,
    parallel: int = 1,
) -> dict[str, Any]:
    """Run iperf3 between two places (needs iperf3 installed); returns its JSON report.

    parallel > 1 runs that many streams at once (iperf3 -P)."""
    if shutil.which("iperf3") is None:
        raise LabError("iperf3 is not installed (apt-get install iperf3)")
    argv_srv = ["iperf3", "-s", "-1", "-B", address]
    guest_server: threading.Thread | None = None
    if getattr(server, "in_guest", False):  # no popen in a guest: the agent runs it meanwhile
        guest_server = threading.Thread(target=server.run, args=(argv_srv,), kwargs={"timeout": seconds + 60})
        guest_server.start()
        srv = None
    else:
        srv = server.popen(argv_srv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        argv = ["iperf3", "-c", address, "-t", str(seconds), "-J"]
        if udp:
            argv.append("-u")
        if bitrate:
            argv += ["-b", bitrate]
        if parallel > 1:
            argv += ["-P", str(parallel)]
        for _ in range(50):
            done = client.run(argv, timeout=seconds + 30)
            report = json.loads(done.stdout or b"{}")
            if "connection refused" not in str(report.get("error", "")).lower():
                break
            time.sleep(0.1)
        if "error" in report:
            raise LabError(f"iperf3: {report['error']}")
        return dict(report)
    finally:
        if srv is not None:
            srv.kill()
            srv.wait()
        if guest_server is not None:
            guest_server.join(seconds + 70)

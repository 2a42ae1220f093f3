"""The device demo: the kernel pings an address behind a TUN device and tunlab answers."""

from __future__ import annotations

import os
import select
import struct
import time

from rich.console import Console

from tunlab import DeviceBuilder
from tunlab import packets as pk
from tunlab.netns import NetNamespace, list_named_netns


def run(console: Console, count: int = 3) -> bool:
    """Bring up a TUN in a fresh namespace, answer `count` pings with the library, clean up."""
    name = f"tunlab-demo-{os.getpid()}"
    console.print(f"[bold]1.[/] network namespace [cyan]{name}[/] (nothing touches the root namespace)")
    ns = NetNamespace.create(name)
    try:
        dev = DeviceBuilder().name("tun0").ipv4("198.18.0.1", 24).netns(name).build_sync()
        with dev:
            addrs = ", ".join(str(a) for a in dev.addresses() if a.version == 4)
            console.print(
                f"[bold]2.[/] TUN device [cyan]{dev.name}[/] (ifindex {dev.if_index}, "
                f"mtu {dev.mtu}, {addrs}); its fd stays in this process"
            )
            console.print(f"[bold]3.[/] kernel side: [green]ping -c {count} 198.18.0.2[/]")
            ping = ns.popen(
                ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", "198.18.0.2"],
                stdout=-1,
                stderr=-1,
            )
            answered = 0
            deadline = time.monotonic() + 10
            while ping.poll() is None and time.monotonic() < deadline:
                ready, _, _ = select.select([dev.fileno()], [], [], 0.2)
                if not ready:
                    continue
                frame = dev.recv()
                reply = pk.echo_reply(frame)
                if reply is None:
                    continue
                ip = pk.parse_ip(frame)
                seq = struct.unpack_from("!H", ip.payload, 6)[0]
                dev.send(reply)
                answered += 1
                console.print(
                    f"   library read echo request {ip.src} -> {ip.dst} seq={seq} "
                    f"({len(frame)} bytes) and wrote the reply"
                )
            out, _ = ping.communicate(timeout=10)
            summary = [ln for ln in out.decode().splitlines() if "packets transmitted" in ln or "rtt" in ln]
            for line in summary:
                console.print(f"   ping: {line}")
            ok = ping.returncode == 0 and answered == count
    finally:
        ns.delete()
    left = name in list_named_netns()
    verdict = "LEFT BEHIND" if left else "nothing left"
    console.print(f"[bold]4.[/] cleaned up: device closed, namespace removed ({verdict})")
    status = "[green]OK[/]" if ok else "[red]FAILED[/]"
    console.print(f"{status}: {answered}/{count} echo requests answered by tunlab")
    return ok and not left

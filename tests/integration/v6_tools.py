"""A routed IPv6 path built by hand on real namespaces, for the v6 verify and
explain tests that need no lab (or a path a lab would not make).

    host (2001:db8:1::2/64, default via 2001:db8:1::1)
      eth0 --- eth1  router (forwarding on)  eth0 (2001:db8:ff::116/64) --- eth0  inet
                                                  (2001:db8:ff::1/64, 2001:db8:ffff::114 on lo,
                                                   2001:db8:1::/64 via 2001:db8:ff::116)

DAD is off in the namespaces (addresses usable at once). Everything is made with
`ip` argument lists in namespaces named from the test's uid and removed
afterwards, also on failure.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass

from natns.kernel import netns

HOST6, GW6, EXT6, INET6, FAR6 = "2001:db8:1::2", "2001:db8:1::1", "2001:db8:ff::116", "2001:db8:ff::1", "2001:db8:ffff::114"
PREFIX6 = "2001:db8:1::/64"


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True)


def sysctl(ns: str, key: str, value: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}"], check=True,
                   capture_output=True, text=True)


def settle(ns: str, addr: str, seconds: float = 30.0) -> None:
    """Wait until `addr` answers a ping from `ns`: a v6 link that just came up drops the
    first packets while its neighbours are being discovered (seconds on a loaded machine)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        p = subprocess.run(["ip", "netns", "exec", ns, "ping", "-c1", "-W0.5", addr], capture_output=True)
        if p.returncode == 0:
            return
    raise AssertionError(f"{addr} never answered from {ns} within {seconds:g} s")


@dataclass
class Chain6:
    host: str
    router: str
    inet: str


@contextlib.contextmanager
def chain6(uid: str):
    """The three namespaces above, up and routed; removed on exit."""
    c = Chain6(f"t{uid}-h6", f"t{uid}-r6", f"t{uid}-i6")
    made = []
    try:
        for ns in (c.host, c.router, c.inet):
            netns.create(ns)
            made.append(ns)
            ip(ns, "link", "set", "lo", "up")
            for scope in ("all", "default"):  # no DAD on any link: addresses usable at once
                sysctl(ns, f"net.ipv6.conf.{scope}.accept_dad", "0")
        ip(c.host, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1", "netns", c.router)
        ip(c.router, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", c.inet)
        ip(c.host, "addr", "add", f"{HOST6}/64", "dev", "eth0")
        ip(c.router, "addr", "add", f"{GW6}/64", "dev", "eth1")
        ip(c.router, "addr", "add", f"{EXT6}/64", "dev", "eth0")
        ip(c.inet, "addr", "add", f"{INET6}/64", "dev", "eth0")
        ip(c.inet, "addr", "add", f"{FAR6}/128", "dev", "lo")
        for ns, dev in ((c.host, "eth0"), (c.router, "eth0"), (c.router, "eth1"), (c.inet, "eth0")):
            ip(ns, "link", "set", dev, "up")
        sysctl(c.router, "net.ipv6.conf.all.forwarding", "1")
        ip(c.host, "-6", "route", "add", "default", "via", GW6, "dev", "eth0")
        ip(c.router, "-6", "route", "add", "default", "via", INET6, "dev", "eth0")
        ip(c.inet, "-6", "route", "add", PREFIX6, "via", EXT6, "dev", "eth0")
        settle(c.host, FAR6)
        yield c
    finally:
        for ns in made:
            netns.remove(ns)


# --------------------------------------------------------------------------- the dual-stack lab

TENANT6, INET_HOST6, EXT6_LAB = "2001:db8:1::2", "2001:db8:ffff::114", "2001:db8:ff::116"


def dual(uid: str, backend: str = "nftables", snat6: str = "off") -> dict:
    """examples/dual-stack.yaml with the run's names (t<uid>-tenant1, t<uid>-vm, t<uid>-inet)."""
    import pathlib

    import yaml

    text = (pathlib.Path(__file__).resolve().parents[2] / "examples" / "dual-stack.yaml").read_text()
    data = yaml.safe_load(text.replace("dual-", f"t{uid}-"))
    data["name"] = f"dual{uid}"
    data["backend"] = backend
    r = data["routers"][0]
    r["snat6"] = snat6
    if snat6 != "off":
        r.pop("ingress", None)  # NAT66 hides the hosts: an ingress opening would be refused
    return data

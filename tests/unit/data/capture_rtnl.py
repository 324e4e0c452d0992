"""How tests/unit/data/rtnl_replies.json was captured (as root): `python tests/unit/data/capture_rtnl.py`.

Two throw-away namespaces joined by a veth (v0 192.0.2.1/24 in A, v1 192.0.2.2/24 in B, B
answering ARP), a route and an unreachable route in A; then each read of kernel/rtnl is
made in A over a socket that records the bytes sent and received. The unit test replays
the kernel's bytes to the same calls (no root needed).
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))

from natns.kernel import netns, nsexec, rtnl  # noqa: E402


class Recorder:
    def __init__(self, sock):
        self.sock, self.log = sock, []

    def setsockopt(self, *a):
        return self.sock.setsockopt(*a)

    def bind(self, a):
        return self.sock.bind(a)

    def send(self, data):
        self.log.append({"sent": bytes(data).hex(), "recv": []})
        return self.sock.send(data)

    def recv(self, n):
        data = self.sock.recv(n)
        self.log[-1]["recv"].append(data.hex())
        return data

    def close(self):
        self.sock.close()


def main() -> None:
    a, b = f"caprtnlA{os.getpid()}", f"caprtnlB{os.getpid()}"
    try:
        netns.create(a)
        netns.create(b)
        run = lambda *x: subprocess.run(list(x), check=True)  # noqa: E731
        run("ip", "-n", a, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", b)
        run("ip", "-n", a, "addr", "add", "192.0.2.1/24", "dev", "v0")
        run("ip", "-n", b, "addr", "add", "192.0.2.2/24", "dev", "v1")
        for ns, dev in ((a, "v0"), (b, "v1"), (a, "lo"), (b, "lo")):
            run("ip", "-n", ns, "link", "set", dev, "up")
        run("ip", "-n", a, "route", "add", "203.0.113.0/24", "via", "192.0.2.2", "proto", "233")
        run("ip", "-n", a, "route", "add", "unreachable", "198.51.100.0/24")
        nsexec.run(a, ["ping", "-c1", "-W1", "192.0.2.2"])
        fd = os.open(f"/run/netns/{b}", os.O_RDONLY)
        calls = [("link_details", [], {}), ("addrs", [], {}), ("neighbours", [], {}),
                 ("index", ["v0"], {}), ("index", ["nope"], {}), ("link_by_index", [1], {}),
                 ("route_get", ["203.0.113.9"], {}), ("route_get", ["203.0.113.9"], {"fibmatch": True}),
                 ("route_get", ["198.51.100.7"], {}), ("route_get", ["192.0.2.1"], {"src": "192.0.2.2", "iif": 2}),
                 ("route_dump", [], {"table": 254}), ("nsid_of", [fd], {})]
        sock = nsexec.call_in(a, lambda: rtnl.socket.socket(rtnl.socket.AF_NETLINK, rtnl.socket.SOCK_RAW,
                                                             rtnl.NETLINK_ROUTE))
        rec = Recorder(sock)
        h = rtnl.Rtnl(rec)
        out = []
        for name, args, kw in calls:
            start = len(rec.log)
            try:
                getattr(h, name)(*args, **kw)
            except rtnl.RtnlError:
                pass
            out.append({"call": name, "args": args if name != "nsid_of" else ["FD"], "kwargs": kw,
                        "exchanges": rec.log[start:]})
        h.close()
        os.close(fd)
        path = os.path.join(os.path.dirname(__file__), "rtnl_replies.json")
        with open(path, "w") as fh:
            json.dump(out, fh, indent=1)
    finally:
        netns.remove(a)
        netns.remove(b)


if __name__ == "__main__":
    main()

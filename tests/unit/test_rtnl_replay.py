"""natns.kernel.rtnl's reads on the kernel's own bytes, without root.

data/rtnl_replies.json holds, for each read, the request rtnl sent and the
kernel's answer, recorded by data/capture_rtnl.py in two throw-away
namespaces: A with veth v0 (192.0.2.1/24) whose peer v1 (192.0.2.2/24) is
in B, a route to 203.0.113.0/24 via 192.0.2.2 (proto 233), an unreachable
route to 198.51.100.0/24 and B's neighbour entry after a ping. The test
replays the answers to the same calls and checks the requests are
byte for byte what the kernel got.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from natns.explain import path as P
from natns.kernel import rtnl

DATA = json.loads((Path(__file__).parent / "data" / "rtnl_replies.json").read_text())


class Replay:
    """A netlink socket that answers with the recorded bytes, checking each request."""

    def __init__(self, exchanges: list[dict], check_sent: bool = True):
        self.exchanges, self.check_sent = list(exchanges), check_sent
        self.recv_queue: list[bytes] = []

    def setsockopt(self, *a):
        pass

    def bind(self, a):
        pass

    def send(self, data):
        ex = self.exchanges.pop(0)
        if self.check_sent:
            assert bytes(data).hex() == ex["sent"]
        self.recv_queue = [bytes.fromhex(r) for r in ex["recv"]]
        return len(data)

    def recv(self, n):
        return self.recv_queue.pop(0)

    def close(self):
        pass


def call(name: str, *args, check_sent: bool = True, **kw):
    """Replay recorded call `name` (the first with these args) on a fresh Rtnl."""
    rec = next(c for c in DATA if c["call"] == name and c["kwargs"] == kw
               and (c["args"] == list(args) or c["args"] == ["FD"]))
    h = rtnl.Rtnl(Replay(rec["exchanges"], check_sent))
    # the recorded calls were made one after another on one socket: start at its sequence number
    h.seq = _seq_of(rec["exchanges"][0]["sent"]) - 1
    return getattr(h, name)(*args, **kw)


def _seq_of(sent_hex: str) -> int:
    return int.from_bytes(bytes.fromhex(sent_hex)[8:12], "little")


def test_link_details_follow_the_veth_to_its_peer_namespace():
    links = {ln.name: ln for ln in call("link_details")}
    assert set(links) == {"lo", "v0"}
    v0 = links["v0"]
    assert (v0.kind, v0.operstate, v0.mtu, v0.peer_nsid) == ("veth", "UP", 1500, 0)
    assert v0.peer_index and v0.mac and len(v0.mac.split(":")) == 6
    assert v0.inet_conf["forwarding"] == 0 and "rp_filter" in v0.inet_conf
    assert links["lo"].kind is None and links["lo"].peer_nsid is None


def test_addresses_neighbours_and_index_lookups():
    assert [(a.address, a.prefixlen, a.local) for a in call("addrs") if a.address != "127.0.0.1"] == \
        [("192.0.2.1", 24, "192.0.2.1")]
    (n,) = [n for n in call("neighbours") if n.dst == "192.0.2.2"]
    assert rtnl.NUD_NAMES[n.state] == "REACHABLE" and n.lladdr
    assert call("index", "v0") == 2
    assert call("index", "nope") is None  # ENODEV is an answer, not an error
    assert call("link_by_index", 1).name == "lo"


def test_route_get_and_fibmatch():
    r = call("route_get", "203.0.113.9")
    assert (r["type"], r.get_attr("RTA_GATEWAY"), r.get_attr("RTA_OIF"), r.get_attr("RTA_PREFSRC")) == \
        (rtnl.RTN_UNICAST, "192.0.2.2", 2, "192.0.2.1")
    fib = call("route_get", "203.0.113.9", fibmatch=True)
    assert P.route_text(fib, {2: "v0"}) == "203.0.113.0/24 via 192.0.2.2 dev v0 proto 233"
    local = call("route_get", "192.0.2.1", src="192.0.2.2", iif=2)
    assert local["type"] == 2  # RTN_LOCAL: an input lookup that delivers here


def test_a_refused_lookup_is_an_rtnl_error_and_a_netlink_error():
    with pytest.raises(NetlinkError) as exc:
        call("route_get", "198.51.100.7")
    e = exc.value
    assert isinstance(e, rtnl.RtnlError) and e.code == rtnl.EHOSTUNREACH and e.reason == "No route to host"
    assert P.err_text(e) == "No route to host"


def test_route_dump_and_nsid():
    texts = [P.route_text(m, {1: "lo", 2: "v0"}) for m in call("route_dump", table=254)]
    assert "203.0.113.0/24 via 192.0.2.2 dev v0 proto 233" in texts
    assert "unreachable 198.51.100.0/24" in texts
    assert call("nsid_of", 99, check_sent=False) == 0  # B, as A numbers it (the veth's peer)


def test_requests_are_reused_bytes():
    """The same request is encoded once: a second lookup sends the cached bytes (new sequence number)."""
    rtnl._ENCODED.clear()
    call("route_get", "203.0.113.9")
    assert any(k[0] == rtnl.RTM_GETROUTE and k[2][0] == "get" for k in rtnl._ENCODED)
    call("route_get", "203.0.113.9")  # sent bytes still checked against the kernel's record

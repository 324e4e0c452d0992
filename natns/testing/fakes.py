"""An in-memory kernel for doctor and the path walk: `FakeSnapshot` (and `FakeProber`).

A `FakeSnapshot` answers every question of natns.explain.snapshot.Snapshot
from a small literal description, so doctor's checks run without root::

    FakeSnapshot({
        "tenant": {"links": {"eth0": {"peer": "vm:eth0", "addresses": ["192.0.2.2/24"]}},
                   "routes": ["default via 192.0.2.3"]},
        "vm": {"links": {"eth0": {"addresses": ["192.0.2.3/24"]},
                         "eth1": {"peer": "inet:eth0", "addresses": ["198.51.100.116/24"]}},
               "sysctls": {"net.ipv4.ip_forward": "1"},
               "iptables": IPTABLES_SAVE_TEXT},
        "inet": {...},
    }, host={"sysctls": {...}, "default_dev": "eth0"})

Per namespace (every key optional):

``links``
    name -> {``peer``: "NS:NAME" (a veth; the other end is made if not described;
    "(host):NAME" for the namespace natns runs in), ``kind`` (veth / bridge / dummy;
    veth when there is a peer), ``addresses`` ["A.B.C.D/LEN", "2001:db8::2/64"], ``up`` (True),
    ``mtu`` (1500), ``master`` (a bridge's name), ``hairpin`` (a bridge port's hairpin
    mode, False), ``mac``, ``dadfailed`` [IPv6 addresses whose duplicate address
    detection failed (IFA_F_DADFAILED)]}. "lo" (127.0.0.1/8) is added.
``routes``
    main-table routes in `ip route` words: "default via 192.0.2.3",
    "198.51.100.0/24 dev eth1", "unreachable 203.0.113.0/24", "blackhole ...",
    "prohibit ..."; IPv6 alike ("default via 2001:db8:1::1": a v6 gateway makes a v6
    default). Connected routes come from the addresses of links that are up.
``sysctls``
    "net.ipv4.ip_forward" ("0" unless given), "net.ipv4.conf.all.rp_filter",
    "net.ipv4.conf.IF.rp_filter" / ".forwarding" (the link's devconf),
    "net.ipv6.conf.all.forwarding" ("0" unless given; as the kernel, an IPv6 input
    lookup succeeds with it off: ip6_forward drops the packet later),
    "net.netfilter.nf_conntrack_count" / "_max" (absent unless given).
``iptables`` / ``iptables_legacy`` / ``ip6tables``
    `iptables-nft-save` / `iptables-legacy-save` / `ip6tables-nft-save` output, as the tools
    print it (a table iptables-nft-save calls incompatible in its comments is read from
    ``nft`` instead).
``nft`` / ``nft_text``
    `nft -j list ruleset` JSON (text or the parsed object) and, for rule texts,
    `nft -a list ruleset` output.
``firewall_problems``
    what a real read could not dump (strings).
``neighbours``
    [{"addr", "dev", "state", "lladdr"}] (or addr -> state).
``conntrack_stats``
    {"insert_failed": N, "drop": N, "early_drop": N}.
``conntrack``
    the entries as `conntrack -L` prints them, one line each:
    "icmp 1 29 src=192.0.2.2 dst=203.0.113.114 type=8 code=0 id=7 [UNREPLIED]
    src=203.0.113.114 dst=192.0.2.2 type=0 code=0 id=7 mark=0 use=1" (read by
    `parse_conntrack_line` into natns.kernel.conntrack.Entry, NAT off the tuples);
    ``"unreadable"`` makes reading them fail (OSError).
``mark``
    the alias of ``lo``: natns's ownership mark ("natns:LAB:router:NAME") on a lab's namespace.

The rules are read by the rule walk's own composition (natns.explain.rules
`assemble`), as `read_firewall` does with the kernel's dumps; `-m addrtype` and
nft `fib daddr type` see the described links' addresses.
Route lookups are a longest-prefix match over the routes (lowest metric first),
with the kernel's answers for the rest: local addresses (reported in the main
table, as the kernel does while the local and main tables are merged),
ENETUNREACH with no route, EHOSTUNREACH / EACCES / EINVAL for unreachable /
prohibit / blackhole, and for an input lookup (`iif`) EHOSTUNREACH when
forwarding is off on it and EINVAL when rp_filter rejects the source (a
martian). tests/integration/test_doctor.py checks that doctor's reports on
the fake and on real namespaces set up alike are identical.

`host` describes the namespace natns runs in the same way (its links only
name the host ends of veths), plus ``default_dev``.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
from dataclasses import dataclass, field

from ..explain.path import HOST, LinkInfo, NsView, RouteLookup
from ..kernel.conntrack import CtTuple, Entry, translations
from ..explain.rules import AddrTypes, Firewall, assemble
from ..kernel.netfilter import parse_nft_json
from ..explain.snapshot import RouteLookupError
from ..explain.doctor.findings import ProbeResult
from ..kernel.rtnl import IFA_F_DADFAILED, IFA_F_TENTATIVE

#: The namespace of a veth peer that is not under /run/netns: "peer": "(unlisted):eth0".
UNLISTED = "(unlisted)"

_RTN = {"unicast": 1, "local": 2, "broadcast": 3, "blackhole": 6, "unreachable": 7, "prohibit": 8}
_REFUSE = {7: (errno.EHOSTUNREACH, "No route to host"), 8: (errno.EACCES, "Permission denied"),
           6: (errno.EINVAL, "Invalid argument")}


def _addr(text: str) -> tuple[str, int]:
    """"A/LEN" (LEN 32 or 128 when left out) as (address, prefix length)."""
    a, _, plen = text.partition("/")
    return a, int(plen) if plen else (128 if ":" in a else 32)


def _err(code: int, text: str | None = None) -> RouteLookupError:
    return RouteLookupError(code, text or os.strerror(code))


@dataclass
class _Route:
    type: int
    net: ipaddress.IPv4Network | ipaddress.IPv6Network
    via: str | None = None
    dev: str | None = None
    src: str | None = None
    metric: int = 0
    proto: str | None = None
    scope: str | None = None
    extra: list[str] = field(default_factory=list)

    def text(self) -> str:
        parts = [] if self.type == 1 else [{v: k for k, v in _RTN.items()}[self.type]]
        parts.append("default" if self.net.prefixlen == 0 else
                     (str(self.net.network_address) if self.net.prefixlen == self.net.max_prefixlen
                      else str(self.net)))
        if self.via:
            parts += ["via", self.via]
        if self.dev:
            parts += ["dev", self.dev]
        if self.proto and self.proto != "boot":
            parts += ["proto", self.proto]
        if self.scope:
            parts += ["scope", self.scope]
        if self.src:
            parts += ["src", self.src]
        if self.metric:
            parts += ["metric", str(self.metric)]
        return " ".join(parts)


def _parse_route(text: str) -> _Route:
    w = text.split()
    rtype = 1
    if w and w[0] in _RTN:
        rtype = _RTN[w.pop(0)]
    if not w:
        raise ValueError(f"route {text!r}: no destination")
    dst = w.pop(0)
    default = "::/0" if ":" in text.replace(dst, "", 1) or ":" in dst else "0.0.0.0/0"
    r = _Route(rtype, ipaddress.ip_network(default if dst == "default" else dst, strict=False))
    while w:
        k = w.pop(0)
        v = w.pop(0) if w else None
        if k == "via":
            r.via = v
        elif k == "dev":
            r.dev = v
        elif k == "src":
            r.src = v
        elif k == "metric":
            r.metric = int(v)
        elif k == "proto":
            r.proto = v
        elif k == "scope":
            r.scope = v
        else:
            raise ValueError(f"route {text!r}: {k!r} is not understood by the fake")
    return r


class _Ns:
    def __init__(self, name: str, desc: dict):
        self.name = name
        self.desc = desc
        self.sysctls: dict[str, str] = {k: str(v) for k, v in (desc.get("sysctls") or {}).items()}
        self.links: dict[str, LinkInfo] = {}
        self.routes = [_parse_route(r) for r in desc.get("routes") or []]
        nb = desc.get("neighbours") or []
        if isinstance(nb, dict):
            nb = [{"addr": a, "state": s} for a, s in nb.items()]
        self.neighbours: list[dict] = [dict(n) for n in nb]
        self.conntrack_stats = dict(desc.get("conntrack_stats") or {})

    def by_index(self, index: int | None) -> LinkInfo | None:
        return next((lk for lk in self.links.values() if lk.index == index), None)


class FakeSnapshot:
    """A Snapshot from a literal description (see the module's text)."""

    def __init__(self, namespaces: dict[str, dict], host: dict | None = None, *, iptables: str = "nft"):
        self._flavour = iptables  # what plain `iptables` is on the pretend machine: "nft" or "legacy"
        self._ns = {name: _Ns(name, desc or {}) for name, desc in namespaces.items()}
        self._host = _Ns(HOST, host or {})
        self._default_dev = (host or {}).get("default_dev")
        self._nsid = {name: i for i, name in enumerate([HOST, *self._ns])}
        self._fw: dict[str | None, Firewall] = {}
        self._views: dict[str, NsView] = {}
        index = iter(range(1, 1 << 20))
        peers: list[tuple[_Ns, str, str, str]] = []
        for ns in [*self._ns.values(), self._host]:
            if ns is not self._host:
                ns.links["lo"] = LinkInfo(next(index), "lo", "loopback", True, True, "UNKNOWN", 65536, None, None,
                                          None, "00:00:00:00:00:00", [("127.0.0.1", 8)])
            for lname, ld in (ns.desc.get("links") or {}).items():
                ld = ld or {}
                if lname == "lo" and "lo" in ns.links:
                    ns.links["lo"].addresses += [_addr(a) for a in ld.get("addresses", [])]
                    continue
                peer = ld.get("peer")
                kind = ld.get("kind") or ("veth" if peer else "dummy")
                i = next(index)
                up = ld.get("up", True)
                ns.links[lname] = LinkInfo(
                    i, lname, kind, up, up, "UP" if up else "DOWN", ld.get("mtu", 1500), None, None, None,
                    ld.get("mac") or f"02:00:00:00:{i >> 8 & 255:02x}:{i & 255:02x}",
                    sorted((_addr(a) for a in ld.get("addresses", [])), key=lambda x: ":" in x[0]),
                    addr_flags={a: IFA_F_DADFAILED | IFA_F_TENTATIVE for a in ld.get("dadfailed", [])})
                if peer:
                    pns, _, pname = peer.rpartition(":")
                    peers.append((ns, lname, pns, pname))
        for ns, lname, pns, pname in peers:
            if pns == UNLISTED:  # a peer in a namespace not under /run/netns
                a = ns.links[lname]
                a.peer_index, a.peer_nsid = next(index), len(self._nsid) + 100
                continue
            other = self._host if pns == HOST else self._ns.get(pns)
            if other is None:
                raise ValueError(f"{ns.name} {lname}: peer namespace {pns!r} is not described")
            a = ns.links[lname]
            b = other.links.get(pname)
            if b is None:
                i = next(index)
                b = other.links[pname] = LinkInfo(i, pname, "veth", True, True, "UP", a.mtu, None, None, None,
                                                  f"02:00:00:00:{i >> 8 & 255:02x}:{i & 255:02x}")
            b.kind = "veth"
            for x, xns, y, yns in ((a, ns, b, other), (b, other, a, ns)):
                x.peer_index = y.index
                x.peer_nsid = None if xns is yns else self._nsid[yns.name]
        for ns in [*self._ns.values(), self._host]:
            for lname, ld in (ns.desc.get("links") or {}).items():
                master = (ld or {}).get("master")
                if master:
                    if master not in ns.links:
                        raise ValueError(f"{ns.name} {lname}: no bridge {master!r}")
                    ns.links[lname].master = ns.links[master].index
                    ns.links[lname].hairpin = bool((ld or {}).get("hairpin", False))
            for lk in ns.links.values():
                if lk.kind == "veth" and lk.peer_index:
                    peer_ns = ns if lk.peer_nsid is None else self._by_nsid(lk.peer_nsid)
                    p = peer_ns.by_index(lk.peer_index) if peer_ns is not None else None
                    lk.lower_up = lk.up and p is not None and p.up
                    lk.operstate = "UP" if lk.lower_up else ("LOWERLAYERDOWN" if lk.up else "DOWN")
        for ns in self._ns.values():
            for lk in ns.links.values():
                lk.conf = {"forwarding": int(self.sysctl(ns.name, f"net.ipv4.conf.{lk.name}.forwarding") or 0),
                           "rp_filter": int(self.sysctl(ns.name, f"net.ipv4.conf.{lk.name}.rp_filter") or 0)}

    def _by_nsid(self, nsid: int) -> _Ns | None:
        name = next((n for n, i in self._nsid.items() if i == nsid), None)
        return self._host if name == HOST else self._ns.get(name)

    def _n(self, ns: str | None) -> _Ns:
        if ns is None or ns == HOST:
            return self._host
        if ns not in self._ns:
            raise FileNotFoundError(f"no namespace {ns!r} in the fake")
        return self._ns[ns]

    # -- changing the pretend kernel (as a test's probe or fix would) -----------

    def set_neighbour(self, ns: str, addr: str, dev: str, state: str | None, lladdr: str | None = None) -> None:
        """Set (state None: remove) the neighbour entry for `addr` on `dev`."""
        n = self._n(ns)
        n.neighbours = [e for e in n.neighbours if not (e["addr"] == addr and e.get("dev") in (None, dev))]
        if state:
            n.neighbours.append({"addr": addr, "dev": dev, "state": state, "lladdr": lladdr})

    # -- the Snapshot protocol ------------------------------------------------------

    def has_namespace(self, ns: str) -> bool:
        return ns in self._ns

    def get(self, ns: str) -> NsView:
        if ns not in self._views:
            n = self._n(ns)
            self._views[ns] = NsView(ns, {lk.index: lk for lk in n.links.values()}, self._nsid[ns],
                                     {i: name for name, i in self._nsid.items()})
        return self._views[ns]

    def sysctl(self, ns: str | None, key: str) -> str | None:
        n = self._n(ns)
        if key in n.sysctls:
            return n.sysctls[key]
        if key in ("net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter",
                   "net.ipv6.conf.all.forwarding"):
            return "0"
        parts = key.split(".")
        if len(parts) == 5 and parts[:3] == ["net", "ipv4", "conf"] and parts[3] in n.links:
            if parts[4] == "forwarding":
                return self.sysctl(ns, "net.ipv4.ip_forward")
            if parts[4] == "rp_filter":
                return "0"
        return None

    def conntrack_stats(self, ns: str) -> dict[str, int]:
        return dict(self._n(ns).conntrack_stats)

    def conntrack_entries(self, ns: str) -> list[Entry]:
        lines = self._n(ns).desc.get("conntrack") or []
        if lines == "unreadable":
            raise OSError(f"conntrack table of {ns} unreadable (fake)")
        return [parse_conntrack_line(ln) for ln in lines]

    def ns_mark(self, ns: str) -> str | None:
        return self._n(ns).desc.get("mark")

    def default_dev(self) -> str | None:
        return self._default_dev

    def host_link_name(self, index: int | None) -> str | None:
        lk = self._host.by_index(index)
        return lk.name if lk else None

    def host_link_master(self, index: int | None) -> str | None:
        lk = self._host.by_index(index)
        br = self._host.by_index(lk.master) if lk and lk.master else None
        return br.name if br else None

    def ipt_tool(self, source: str) -> str:
        flavour = "legacy" if source == "iptables-legacy" else "nft"
        return "iptables" if flavour == self._flavour else f"iptables-{flavour}"

    def neighbour(self, ns: str, addr: str, iface: str | None = None) -> dict | None:
        for e in self._n(ns).neighbours:
            if e["addr"] != addr or (iface and e.get("dev") and e["dev"] != iface):
                continue
            return {"state": e["state"], "lladdr": e.get("lladdr"), "dev": e.get("dev") or iface}
        return None

    def firewall(self, ns: str | None) -> Firewall:
        if ns not in self._fw:
            self._fw[ns] = self._read_firewall(ns)
        return self._fw[ns]

    def _read_firewall(self, ns: str | None) -> Firewall:
        """As explain.rules.read_firewall composes the kernel's dumps (rules.assemble), from the
        description's text."""
        d = self._n(ns).desc
        js = d.get("nft")
        rs = None
        if js is not None:
            rs = parse_nft_json(js if isinstance(js, str) else json.dumps(js))
            rs.listing = d.get("nft_text") or ""
        addrs = AddrTypes.of_view(self.get(ns)) if ns is not None else None
        fw = assemble(ns, rs, d.get("iptables"), d.get("iptables_legacy") or None, addrs,
                      ip6tables_nft=d.get("ip6tables"))
        fw.problems += list(d.get("firewall_problems") or [])
        return fw

    # -- routes -----------------------------------------------------------------

    def _table(self, ns: str) -> list[_Route]:
        """The main table: the described routes usable now, and the connected routes."""
        n = self._n(ns)
        up = {lk.name: lk for lk in n.links.values() if lk.up and lk.kind != "loopback"}
        out: list[_Route] = []
        for lk in up.values():
            for a, plen in lk.addresses:
                net = ipaddress.ip_network(f"{a}/{plen}", strict=False)
                if plen < net.max_prefixlen:
                    out.append(_Route(1, net, dev=lk.name, src=a, proto="kernel",
                                      scope=None if net.version == 6 else "link"))
        for r in n.routes:
            r = _Route(r.type, r.net, r.via, r.dev, r.src, r.metric, r.proto, r.scope)
            if r.via and not r.dev:
                r.dev = next((c.dev for c in out if c.proto == "kernel" and ipaddress.ip_address(r.via) in c.net),
                             None)
                if r.dev is None:
                    continue  # the kernel refuses a gateway it cannot reach
            if r.type == 1 and (r.dev not in up):
                continue  # routes through a down (or missing) link are gone
            out.append(r)
        return out

    def _local(self, ns: str, dst: str) -> LinkInfo | None:
        n = self._n(ns)
        ip = ipaddress.ip_address(dst)
        if ip in ipaddress.ip_network("127.0.0.0/8"):
            return n.links["lo"]
        return next((lk for lk in n.links.values() if lk.up and any(a == dst for a, _ in lk.addresses)), None)

    def _match(self, ns: str, dst: str) -> _Route | None:
        ip = ipaddress.ip_address(dst)
        best = None
        for r in self._table(ns):
            if ip in r.net and (best is None or (r.net.prefixlen, -r.metric) > (best.net.prefixlen, -best.metric)):
                best = r
        return best

    def routes_text(self, ns: str, version: int = 4) -> list[str]:
        return [r.text() for r in sorted((r for r in self._table(ns) if r.net.version == version),
                                         key=lambda r: (int(r.net.network_address), r.net.prefixlen, r.metric))]

    def fib_match_text(self, ns: str, dst: str) -> str | None:
        lk = self._local(ns, dst)
        if lk is not None:
            return self._local_route(dst, lk).text()
        b = self._broadcast(ns, dst)
        if b is not None:
            return b[1].text()
        r = self._match(ns, dst)
        return r.text() if r else None

    def _broadcast(self, ns: str, dst: str) -> tuple[LinkInfo, _Route] | None:
        """The broadcast route of a connected subnet (/30 and wider) `dst` is the broadcast address of."""
        ip = ipaddress.ip_address(dst)
        for lk in self._n(ns).links.values():
            if not lk.up:
                continue
            for a, plen in lk.addresses:
                net = ipaddress.ip_network(f"{a}/{plen}", strict=False)
                if net.version == 4 and plen < 31 and ip == net.broadcast_address:
                    return lk, _Route(3, ipaddress.IPv4Network(f"{dst}/32"), dev=lk.name, src=a, proto="kernel",
                                      scope="link")
        return None

    @staticmethod
    def _local_route(dst: str, lk: LinkInfo) -> _Route:
        net = ipaddress.ip_network(dst)
        return _Route(2, net, dev=lk.name, src=dst, proto="kernel", scope="host")

    def route_get(self, ns: str, dst: str, *, src: str | None = None, iif: str | None = None) -> RouteLookup:
        n = self._n(ns)
        lo = n.links["lo"]
        if iif is not None and iif not in n.links:
            raise _err(errno.ENODEV, f"no interface {iif} in {ns}")
        # an input lookup (iif) answers as ip_route_input_slow does: no route or a refusing one is
        # EHOSTUNREACH where the interface doesn't forward, rp_filter's rejection is a martian (EINVAL)
        in_link = n.links[iif] if iif is not None else None
        v6 = ":" in dst
        # IPv6: the input lookup does not ask whether the namespace forwards (ip6_forward drops
        # later), and there is no rp_filter
        fwd = in_link is None or v6 or bool(int(self.sysctl(ns, f"net.ipv4.conf.{iif}.forwarding") or 0))
        rp_rejects = not v6 and in_link is not None and src is not None and self._rp_rejects(ns, in_link, src)
        lk = self._local(ns, dst)
        if lk is not None:
            if rp_rejects:
                raise _err(errno.EINVAL, "Invalid argument")
            return RouteLookup(2, lo.index, None, dst, 254, self._local_route(dst, lk).text())
        b = self._broadcast(ns, dst)
        if b is not None:
            return RouteLookup(3, b[0].index, None, b[1].src, 254, b[1].text())
        r = self._match(ns, dst)
        if r is None or r.type in _REFUSE or not fwd:
            if not fwd:
                raise _err(errno.EHOSTUNREACH, "No route to host")
            raise _err(*_REFUSE[r.type]) if r is not None else _err(errno.ENETUNREACH, "Network is unreachable")
        if rp_rejects:
            raise _err(errno.EINVAL, "Invalid argument")
        out = n.links.get(r.dev)
        return RouteLookup(r.type, out.index if out else None, r.via, r.src or self._prefsrc(out, r.via or dst),
                           254, r.text())

    def _rp_rejects(self, ns: str, in_link: LinkInfo, src: str) -> bool:
        mode = max(int(self.sysctl(ns, "net.ipv4.conf.all.rp_filter") or 0), int(in_link.conf.get("rp_filter", 0)))
        if mode == 0:
            return False
        rev = self._match(ns, src)
        if rev is None or rev.type != 1:
            return True
        return mode == 1 and rev.dev != in_link.name

    @staticmethod
    def _prefsrc(link: LinkInfo | None, towards: str) -> str | None:
        if link is None or not link.addresses:
            return None
        ip = ipaddress.ip_address(towards)
        for a, plen in link.addresses:
            if ip in ipaddress.ip_network(f"{a}/{plen}", strict=False):
                return a
        same = [a for a, _ in link.addresses if ipaddress.ip_address(a).version == ip.version
                and a not in link.addr_flags]  # not a DAD-failed one: the kernel never picks it
        return same[0] if same else (None if ip.version == 6 else link.addresses[0][0])


_TUPLE_KEYS = {"src", "dst", "sport", "dport", "type", "code", "id"}


def parse_conntrack_line(line: str) -> Entry:
    """One line of `conntrack -L` (protocol name and number, timeout, TCP state, the
    original then the reply tuple as key=value, [FLAGS], mark=...) as an Entry."""
    w = line.split()
    if not w:
        raise ValueError("empty conntrack line")
    proto, i = w[0], 1
    nums = []
    while i < len(w) and w[i].isdigit() and len(nums) < 2:
        nums.append(int(w[i]))
        i += 1
    timeout = nums[1] if len(nums) == 2 else None
    state = None
    if i < len(w) and "=" not in w[i] and not w[i].startswith("["):
        state, i = w[i], i + 1
    tuples: list[dict[str, str]] = [{}]
    flags: list[str] = []
    mark = None
    for tok in w[i:]:
        if tok.startswith("["):
            flags.append(tok.strip("[]"))
            continue
        k, eq, v = tok.partition("=")
        if not eq:
            raise ValueError(f"conntrack line {line!r}: {tok!r} is not key=value")
        if k in _TUPLE_KEYS:
            if k == "src" and "src" in tuples[-1]:
                tuples.append({})
            tuples[-1][k] = v
        elif k == "mark":
            mark = int(v)
    if len(tuples) != 2:
        raise ValueError(f"conntrack line {line!r}: needs an original and a reply tuple")

    def tup(d: dict[str, str]) -> CtTuple:
        num = (lambda k: int(d[k]) if k in d else None)
        if proto == "icmp":
            return CtTuple(d["src"], d["dst"], icmp_type=num("type"), icmp_code=num("code"), icmp_id=num("id"))
        return CtTuple(d["src"], d["dst"], num("sport"), num("dport"))

    orig, reply = tup(tuples[0]), tup(tuples[1])
    nat = translations(orig, reply)
    status = []
    if "UNREPLIED" not in flags:
        status.append("SEEN_REPLY")
    if "ASSURED" in flags:
        status.append("ASSURED")
    status += [{"SNAT": "SRC_NAT", "DNAT": "DST_NAT"}[n.kind] for n in nat]
    if state is None:
        state = "ASSURED" if "ASSURED" in flags else ("UNREPLIED" if "UNREPLIED" in flags else "REPLIED")
    return Entry(proto, orig, reply, nat, state, status, timeout, mark=mark)


class FakeProber:
    """doctor's probes, answered as told: `ok`/`detail` for the probe, `df` for the DF ping.

    `then(snapshot)` runs after the probe (e.g. the probe resolving a neighbour entry).
    """

    def __init__(self, ok: bool | None = True, detail: str = "3 packets transmitted, 3 received",
                 df: tuple[bool, str] = (True, ""), then=None):
        self.ok, self.detail, self.df, self.then = ok, detail, df, then
        self.sent: list[tuple] = []

    def probe(self, src_ns: str, dst: str, proto: str, port: int | None) -> ProbeResult:
        self.sent.append(("probe", src_ns, dst, proto, port))
        if self.then:
            self.then()
        return ProbeResult(proto, self.ok, self.detail, f"(fake probe {proto} {src_ns} -> {dst})")

    def df_probe(self, src_ns: str, dst: str, size: int) -> tuple[bool, str]:
        self.sent.append(("df", src_ns, dst, size))
        return self.df


__all__ = ["UNLISTED", "FakeProber", "FakeSnapshot", "parse_conntrack_line"]

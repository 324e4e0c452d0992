"""Read the actual state of a lab from the kernel, and nothing else.

No state file: a namespace belongs to lab L when the alias of its `lo` is
natns's mark for L; links, routes and firewall rules are recognised by their
own marks (see marks.py). `observe_lab` reads every namespace the topology
names plus every namespace marked for the lab, so leftovers are found too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable

from . import firewall
from .kernel import link, netns, nftlib, route, rtnl, sysctl
from .kernel.nsexec import NETNS_DIR, call_in, map_in, ns_path
from .marks import is_uplink_of, parse_ns_mark, uplink_scope
from .state import RT_PROTO, ObservedLab, ObservedNs, RouteState

#: sysctls natns reads back in every namespace it owns (drift detection).
WATCHED_SYSCTLS = ["net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables",
                   "net.ipv6.conf.all.forwarding", "net.ipv6.conf.default.accept_dad"]

#: the sysctls that netlink's netconf messages report (the family's "all" forwarding):
#: read there, in the rtnetlink round that reads the links, not through /proc/sys.
NETCONF_SYSCTLS = {"net.ipv4.ip_forward": 2, "net.ipv6.conf.all.forwarding": 10}  # AF_INET, AF_INET6


def read_mark(ns: str) -> str | None:
    """The alias of `lo` in namespace `ns` (natns's ownership mark), or None."""
    try:
        with rtnl.open_in(ns) as h:
            lo = h.link("lo")
            return lo.alias if lo else None
    except (FileNotFoundError, OSError):
        return None


def _mark_here(name: str) -> str | None:
    """read_mark, on a thread `map_in` has put into namespace `name`."""
    try:
        with rtnl.here() as h:
            lo = h.link("lo")
            return lo.alias if lo else None
    except OSError:
        return None


def marked_namespaces(lab: str | None = None) -> dict[str, tuple[str, str, str]]:
    """Namespaces carrying a natns mark (for `lab`, or any lab): name -> (lab, role, name)."""
    out = {}
    names = netns.list_names()
    for name, mark in zip(names, map_in(names, _mark_here, lambda name, exc: None)):
        owner = parse_ns_mark(mark)
        if owner and (lab is None or owner[0] == lab):
            out[name] = owner
    return out


def labs_by_mark() -> dict[str, list[tuple[str, str]]]:
    """Labs present in the kernel: lab name -> [(namespace, role)], from marks alone."""
    out: dict[str, list[tuple[str, str]]] = {}
    for name, (lab, role, _) in marked_namespaces().items():
        out.setdefault(lab, []).append((name, role))
    return out


def observe_ns(name: str, *, with_firewall: bool = True) -> ObservedNs:
    """Everything natns cares about in namespace `name`, as the kernel has it.

    One thread enters the namespace and reads it all there: links, addresses
    and routes over one netlink socket, the sysctls, and the firewall (whose
    nft and iptables reads then need no further thread or nsenter).
    """
    if not netns.exists(name):
        return ObservedNs(name=name, mark=None, role="", exists=False)
    try:
        return call_in(name, lambda: _observe_here(name, with_firewall))
    except (FileNotFoundError, OSError):
        return _unreadable(name)


def _unreadable(name: str, exc: OSError | None = None) -> ObservedNs:
    """A namespace that could not be entered or read: gone, or a file that is no namespace."""
    present = netns.exists(name)
    placeholder = present and netns.is_placeholder(name)
    return ObservedNs(name=name, mark=None, role="", exists=False, not_a_namespace=present and not placeholder,
                      placeholder=placeholder)


def observe_many(names: list[str], sysctls: dict[str, Iterable[str]] | None = None) -> dict[str, ObservedNs]:
    """observe_ns of each namespace, read on a few threads that enter one namespace after another.

    `sysctls`: the sysctls wanted in each namespace (a desired state's), when the caller
    knows them: of WATCHED_SYSCTLS, those read from /proc/sys are read only where wanted
    (an open of /proc/sys/net costs ~0.45 ms, two per namespace were half of reading a
    500-router lab); namespaces it doesn't name get all of them read, as without it.
    """
    present = [n for n in names if netns.exists(n)]

    def entered(name: str) -> ObservedNs:
        try:
            return _observe_here(name, True, None if sysctls is None else sysctls.get(name))
        except (FileNotFoundError, OSError):
            return _unreadable(name)

    seen = dict(zip(present, map_in(present, entered, _unreadable)))
    return {n: seen.get(n) or ObservedNs(name=n, mark=None, role="", exists=False) for n in names}


def _observe_here(name: str, with_firewall: bool, wanted: Iterable[str] | None = None) -> ObservedNs:
    """observe_ns on a thread that is in namespace `name` (`wanted`: see observe_many)."""
    with rtnl.here() as h:
        links = link.dump(h)
        routes = route.dump_owned(h, {ln.index: n for n, ln in links.items()})
        sysctls = _read_sysctls(h, name, wanted)
    lo = links.pop("lo", None)
    mark = lo.alias if lo else None
    owner = parse_ns_mark(mark)
    st = ObservedNs(
        name=name,
        mark=mark,
        role=owner[1] if owner else "",
        links=links,
        loopback_addresses=tuple(a for a in (lo.addresses if lo else ()) if not a.startswith("127.") and a != "::1/128"),
        routes=routes,
        owner=owner,
    )
    st.sysctls = sysctls
    st.lo_up = bool(lo and lo.up)
    if with_firewall and owner:
        with nftlib.one_reading():
            for b in firewall.backends():
                rs = b.observe(name)
                if rs is not None:
                    st.firewalls[b.name] = rs
    return st


def _read_sysctls(h: rtnl.Rtnl, name: str | None, wanted: Iterable[str] | None = None) -> dict[str, str]:
    """WATCHED_SYSCTLS in the namespace of `h` (None: the kernel lacks them): forwarding
    switches over netlink (RTM_GETNETCONF, on the socket that is open anyway), the
    others from /proc/sys, and with `wanted` only those of them it names."""
    out: dict[str, str] = {}
    rest = []
    proc = None if wanted is None else set(wanted)
    for k in WATCHED_SYSCTLS:
        v = h.forwarding(NETCONF_SYSCTLS[k]) if k in NETCONF_SYSCTLS else None
        if v is None and (proc is None or k in proc):
            rest.append(k)
        else:
            out[k] = str(v)
    if rest:
        out.update({k: v for k, v in sysctl.read(name, rest).items() if v is not None})
    return out


def observe_host(lab: str, with_firewall: bool) -> ObservedNs:
    """What ``uplink: host`` cares about in the namespace natns runs in (name None).

    Links and the forwarding sysctl are read always (netlink, cheap); the
    lab's uplink firewall scope only when asked, so a lab without an uplink
    runs no firewall tool in the host.
    """
    with rtnl.open_in(None) as h:
        links = link.dump(h)
        routes = _uplink_routes(h, lab, links)
    links.pop("lo", None)
    st = ObservedNs(name=None, mark=None, role="host", links=links, routes=routes)
    st.sysctls = {k: v for k, v in sysctl.read(None, WATCHED_SYSCTLS).items() if v is not None}
    if with_firewall:
        for b in firewall.backends():
            rs = b.observe(None, uplink_scope(lab))
            if rs is not None:
                st.firewalls[b.name] = rs
    return st


def _uplink_routes(h, lab: str, links: dict) -> tuple:
    """natns's routes in the host through `lab`'s own uplinks (IPv6 prefixes routed to its
    routers), sorted; other labs' routes and everyone else's are not looked at."""
    mine = {ln.index for ln in links.values() if is_uplink_of(ln.alias, lab)}
    if not mine:
        return ()
    out = [RouteState(dst=f"{r.dst or '::'}/{r.dst_len}", gateway=r.gateway)
           for r in h.routes(table=route.MAIN_TABLE, protocol=RT_PROTO, family=rtnl.AF_INET6) if r.oif in mine]
    return tuple(sorted(out, key=lambda x: (x.dst, x.gateway or "")))


def upstream_notes(routed: list[tuple[str, str, str]]) -> list[str]:
    """What the host's upstream must do for IPv6 prefixes routed through the host
    (`desired.routed_via_host`): one line per prefix with the route to add there, the
    next hop and this host's address read from the host's own route to the internet."""
    if not routed:
        return []
    hop = src = None
    try:
        with rtnl.open_in(None) as h:
            answer = h.route_get("2000::")  # any global unicast address: the default route
            hop, src = answer.get_attr("RTA_GATEWAY"), answer.get_attr("RTA_PREFSRC")
    except (OSError, rtnl.RtnlError):
        pass
    out = []
    for router, prefix, addr6 in routed:
        head = (f"router {router}'s IPv6 prefix {prefix} is routed (snat6: off): this host routes it to the "
                f"router ({addr6}); the host's upstream must route it to this host")
        if hop and src:
            out.append(f"{head}: on {hop} run: ip -6 route add {prefix} via {src}")
        else:
            out.append(f"{head}, and this host has no IPv6 route to the internet: give it one, then on its "
                       f"next hop run: ip -6 route add {prefix} via <this host's IPv6 address on that link>")
    return out


def observe_lab(lab: str, backend: str | None = None, names: Iterable[str] = (), host: bool = True,
                uplink_wanted: bool = False, sysctls: dict[str, Iterable[str]] | None = None) -> ObservedLab:
    """The lab as the kernel holds it: the named namespaces and all marked for `lab`.

    With `host`, also the lab's part of the namespace natns runs in (its
    ``uplink: host`` links, forwarding, and, when there is an uplink or
    `uplink_wanted`, its uplink firewall scope). `backend` is not used: the
    rules of every backend are read (kept for the callers that pass it).
    `sysctls`: the sysctls wanted in each namespace (see observe_many).
    """
    wanted = list(dict.fromkeys(names))
    known = set(wanted)
    others = [n for n in netns.list_names() if n not in known]
    for name, mark in zip(others, map_in(others, _mark_here, lambda name, exc: None)):
        owner = parse_ns_mark(mark)
        if owner and owner[0] == lab:
            wanted.append(name)
    state = ObservedLab(lab=lab)
    state.namespaces.update(observe_many(wanted, sysctls))
    if host:
        state.host = observe_lab_host(lab, uplink_wanted)
    return state


def observe_lab_host(lab: str, uplink_wanted: bool) -> ObservedNs:
    """The host namespace as `lab` sees it; its firewall only if it has or wants an uplink."""
    h = observe_host(lab, with_firewall=uplink_wanted)
    if not uplink_wanted and any(is_uplink_of(ln.alias, lab) for ln in h.links.values()):
        h = observe_host(lab, with_firewall=True)
    return h


@dataclass(frozen=True)
class Holder:
    """A process whose network namespace is one no name leads to any more."""

    pid: int
    command: str

    def to_json(self) -> dict:
        return {"pid": self.pid, "command": self.command}


@dataclass(frozen=True)
class Orphaned:
    """The other end of a veth lives in a namespace without a name under /run/netns:
    one deleted (``ip netns del``) while something still holds it open.

    `key` is that namespace's (st_dev, st_ino) when a process in it was found, and
    `holders` those processes; both empty when what holds it is no process's
    network namespace (a bind mount elsewhere, an open file descriptor)."""

    namespace: str | None  # where the surviving end is (None: the namespace natns runs in)
    link: str
    peer_nsid: int
    key: tuple[int, int] | None = None
    holders: tuple[Holder, ...] = field(default=())


def orphaned_peer(ns: str | None, name: str) -> Orphaned | None:
    """If link `name` in `ns` is a veth whose other end is in a namespace that no file
    under /run/netns names (nor is the one natns runs in): what holds that namespace.

    The veth's peer namespace is known to `ns` by a netns id (IFLA_LINK_NETNSID).
    Every named namespace is asked for its id there (RTM_GETNSID with its file
    descriptor, which assigns none): if one has it, the peer is not orphaned.
    Otherwise each network namespace a process is in (/proc/PID/ns/net, grouped by
    device and inode, never by name) is asked the same way, and the processes of the
    one with the veth's id are its holders. Read-only; None if `name` is not such a
    veth or `ns` can't be read.
    """
    try:
        with rtnl.open_in(ns) as h:
            detail = next((d for d in h.link_details() if d.name == name), None)
            if detail is None or detail.kind != "veth" or detail.peer_nsid is None:
                return None
            nsid = detail.peer_nsid
            named: set[tuple[int, int]] = set()
            paths = [ns_path(None)] + [os.path.join(NETNS_DIR, n) for n in netns.list_names()]
            for path in paths:
                key = _ns_key(path)
                if key is None:
                    continue
                named.add(key)
                if _nsid_of(h, path) == nsid:
                    return None  # the other end is in a namespace that has a name
            by_key: dict[tuple[int, int], list[int]] = {}
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    key = _ns_key(f"/proc/{entry}/ns/net")
                    if key is not None and key not in named:
                        by_key.setdefault(key, []).append(int(entry))
            for key, pids in by_key.items():
                if any(_nsid_of(h, f"/proc/{pid}/ns/net") == nsid for pid in pids[:3]):
                    live = [Holder(pid, _command(pid)) for pid in sorted(pids) if os.path.exists(f"/proc/{pid}")]
                    return Orphaned(ns, name, nsid, key, tuple(live))
            return Orphaned(ns, name, nsid)
    except (FileNotFoundError, OSError):
        return None


def _ns_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _nsid_of(h, path: str) -> int | None:
    """The id namespace `h` gives the namespace at `path` (None: none, or unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return h.nsid_of(fd)
    finally:
        os.close(fd)


def _command(pid: int) -> str:
    """A process's command line (its name in brackets when it has none)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            words = [w.decode(errors="replace") for w in fh.read().split(b"\0") if w]
        if words:
            return " ".join(words)
        with open(f"/proc/{pid}/comm") as fh:
            return f"[{fh.read().strip()}]"
    except OSError:
        return "?"

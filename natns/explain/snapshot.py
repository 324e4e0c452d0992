"""What doctor (and the path walk) read from the kernel, behind one Protocol.

A `Snapshot` answers, read-only, the questions `doctor` and `path.walk` ask of
the kernel: which namespaces exist, their links (veth peers, bridges and their
ports, masters, MTUs, per-interface IPv4 settings) and addresses, route
lookups and the main table, neighbour entries, sysctls (ip_forward,
rp_filter, conntrack limits), conntrack's statistics and entries, every
netfilter rule as the rule walk's `Firewall`, a namespace's ownership mark
(natns's labs), and of the namespace natns runs in the names of its links and
its default route's interface.

`KernelSnapshot` reads the real kernel, each thing once per run (links,
addresses, rules, sysctls, marks and conntrack entries are cached; route lookups and neighbour entries
are asked each time: doctor asks for neighbours again after its probe).
`natns.testing.fakes.FakeSnapshot` answers from a literal description, so
doctor's checks run without root.

Namespaces are named as under /run/netns; `None` is the namespace natns runs
in (path.HOST in a path). Failed route lookups raise `RouteLookupError`
(kernel.rtnl.RtnlError: `.code` is the errno, as the kernel answers).

All kernel reading of doctor lives in `KernelSnapshot`: through
natns.kernel (netns, nsexec, sysctl, rtnl, conntrack), explain.path's
readers and explain.rules' `read_firewall`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..kernel import netns, nsexec, rtnl, sysctl
from ..kernel.rtnl import RtnlError
from . import path
from .path import LinkInfo, NsView, RouteLookup
from .rules import AddrTypes, Firewall, ipt_tool, read_firewall
from .uplink import default_dev

if TYPE_CHECKING:
    from ..kernel.conntrack import Entry

#: What a failed route lookup raises (errno in `.code`; the kernel's text in `.reason`).
RouteLookupError = RtnlError


@runtime_checkable
class Snapshot(Protocol):
    """The read-only view of the kernel doctor works from."""

    def has_namespace(self, ns: str) -> bool:
        """True if `ns` names a namespace under /run/netns."""

    def get(self, ns: str) -> NsView:
        """Links (with addresses, devconf, veth peers' ifindex and netnsid) of `ns`, and its
        netnsid map (`NsView.nsid_names()`). The name `get` lets a snapshot stand where
        explain.path takes a cache of views (`segment`, `veth_peer`, `walk`)."""

    def route_get(self, ns: str, dst: str, *, src: str | None = None, iif: str | None = None) -> RouteLookup:
        """`ip route get DST [from SRC iif IIF]` in `ns`; raises RouteLookupError as the kernel does."""

    def fib_match_text(self, ns: str, dst: str) -> str | None:
        """The route `ip route get fibmatch DST` shows (also unreachable ones), or None."""

    def routes_text(self, ns: str, version: int = 4) -> list[str]:
        """The main table of `ns` as `ip route` prints it (`ip -6 route` with `version` 6)."""

    def neighbour(self, ns: str, addr: str, iface: str | None = None) -> dict | None:
        """The neighbour entry for `addr`: {"state", "lladdr", "dev"}, or None (read fresh)."""

    def host_link_name(self, index: int | None) -> str | None:
        """The name of link `index` in the namespace natns runs in, or None."""

    def host_link_master(self, index: int | None) -> str | None:
        """The bridge link `index` is a port of in the namespace natns runs in, or None."""

    def default_dev(self) -> str | None:
        """The interface of the default route (main table) of the namespace natns runs in."""

    def sysctl(self, ns: str | None, key: str) -> str | None:
        """A per-namespace sysctl (`net.ipv4.ip_forward`), None when the kernel lacks it."""

    def conntrack_stats(self, ns: str) -> dict[str, int]:
        """/proc/net/stat/nf_conntrack summed over CPUs (insert_failed, drop, early_drop, ...)."""

    def conntrack_entries(self, ns: str) -> list["Entry"]:
        """Every IPv4 conntrack entry of `ns` (natns.kernel.conntrack.Entry: original and reply
        tuples, the NAT read off them); raises OSError when the table cannot be read."""

    def ns_mark(self, ns: str) -> str | None:
        """The alias of `lo` in `ns`: natns's ownership mark (natns.marks) on a lab's namespace."""

    def firewall(self, ns: str | None) -> Firewall:
        """Every IPv4 netfilter rule of `ns` (nftables, iptables-nft, iptables-legacy)."""

    def ipt_tool(self, source: str) -> str:
        """The command that edits rules of `source` on this machine (`iptables` or `iptables-nft`...)."""


class KernelSnapshot:
    """A Snapshot that reads the running kernel (needs root to enter namespaces)."""

    def __init__(self):
        self._views = path._Views()
        self._fw: dict[str | None, Firewall] = {}
        self._sysctl: dict[tuple[str | None, str], str | None] = {}
        self._ct: dict[str, list["Entry"]] = {}
        self._marks: dict[str, str | None] = {}

    def has_namespace(self, ns: str) -> bool:
        return netns.exists(ns)

    def get(self, ns: str) -> NsView:
        return self._views.get(ns)

    def route_get(self, ns: str, dst: str, *, src: str | None = None, iif: str | None = None) -> RouteLookup:
        return path.route_get(ns, dst, src=src, iif=iif)

    def fib_match_text(self, ns: str, dst: str) -> str | None:
        return path.fib_match_text(ns, dst)

    def routes_text(self, ns: str, version: int = 4) -> list[str]:
        try:
            return path.routes_text(ns, family=rtnl.AF_INET6 if version == 6 else rtnl.AF_INET)
        except OSError:  # RtnlError is one
            return []

    def neighbour(self, ns: str, addr: str, iface: str | None = None) -> dict | None:
        return path.neighbour(ns, addr, iface)

    def host_link_name(self, index: int | None) -> str | None:
        return path._host_link_name(index)

    def host_link_master(self, index: int | None) -> str | None:
        iface, port = path._host_link(index)
        return iface if port else None

    def default_dev(self) -> str | None:
        return default_dev()

    def sysctl(self, ns: str | None, key: str) -> str | None:
        if (ns, key) not in self._sysctl:
            self._sysctl[(ns, key)] = sysctl.read(ns, [key])[key]
        return self._sysctl[(ns, key)]

    def conntrack_stats(self, ns: str) -> dict[str, int]:
        def go() -> dict[str, int]:
            try:
                with open("/proc/thread-self/net/stat/nf_conntrack") as fh:
                    lines = fh.read().split("\n")
            except OSError:
                return {}
            return parse_conntrack_stat(lines)

        return nsexec.call_in(ns, go)

    def conntrack_entries(self, ns: str) -> list["Entry"]:
        if ns not in self._ct:
            from pyroute2.netlink.exceptions import NetlinkError

            from ..kernel import conntrack  # pyroute2's ctnetlink: only when asked

            try:
                self._ct[ns] = conntrack.entries(ns)
            except NetlinkError as exc:  # e.g. no conntrack in this kernel: as unreadable
                raise OSError(exc.code, f"conntrack table of {ns}: {exc}") from exc
        return self._ct[ns]

    def ns_mark(self, ns: str) -> str | None:
        if ns not in self._marks:
            try:
                with rtnl.open_in(ns) as h:
                    lo = h.link("lo")
                    self._marks[ns] = lo.alias if lo else None
            except OSError:
                self._marks[ns] = None
        return self._marks[ns]

    def firewall(self, ns: str | None) -> Firewall:
        if ns not in self._fw:
            addrs = None
            if ns is not None:
                try:
                    addrs = AddrTypes.of_view(self.get(ns))
                except OSError:
                    pass
            self._fw[ns] = read_firewall(ns, addrs)
        return self._fw[ns]

    def ipt_tool(self, source: str) -> str:
        return ipt_tool(source)


def parse_conntrack_stat(lines: list[str]) -> dict[str, int]:
    """/proc/net/stat/nf_conntrack (a header, then one line of hex counters per CPU), summed."""
    if not lines:
        return {}
    head = lines[0].split()
    total: dict[str, int] = {}
    for ln in lines[1:]:
        vals = ln.split()
        if len(vals) != len(head):
            continue
        for k, v in zip(head, vals):
            total[k] = total.get(k, 0) + int(v, 16)
    return total


__all__ = ["KernelSnapshot", "LinkInfo", "NsView", "RouteLookup", "RouteLookupError", "Snapshot",
           "parse_conntrack_stat"]

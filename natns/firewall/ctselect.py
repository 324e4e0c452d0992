"""Which conntrack entries contradict a router's NAT rules (pure), and when to look.

The kernel consults the nat table for a connection's first packet only and
then translates every later packet from the conntrack entry it made. So when
`up` changes how traffic is translated (SNAT on, off or to another address; a
floating IP added, removed or moved; a port forward added or removed), the
flows already running keep their old translation until their entries go: a
ping started with ``snat: off`` keeps leaking its private source after SNAT
is switched on. This module says which entries those are:

* `NatIntent` is what a router's rules translate, read off its FirewallIntent
  (`from_firewall`) or off natns's rules in the kernel (`observed`, for doctor);
* `expectation(nat, protocol, original)` is how the rules translate a new
  connection with that original tuple (DNAT to what, SNAT to what), or None
  where natns's rules have no say (transit, multicast, the router's own);
* `stale(nat, entries)` is the entries whose translation is not that one: an
  entry of a network leaving by the external interface with no SNAT when SNAT
  is on (or SNATed to another address, or SNATed when SNAT is off), a host's
  entries that don't carry its floating address, an entry to a forwarded port
  that isn't DNATed to its target, an entry DNATed by a mapping that is gone.
  Entries that are translated as the rules say are never in it, and neither is
  an established TCP connection SNATed to one of the router's current
  addresses (`kept_tcp`: a host given a floating IP keeps its open TCP
  connections on the router's address; moving them could only reset them).

The planner asks `recheck_needed` whether a change of a router's rules needs
that check (every change but the pure removals the removal flush already
covers, plus rules restored or adopted while traffic may run), notes it in the
same transaction (FirewallIntent.flush gets `note(nat)`, nft set ``flush_nat``
/ a targetless iptables rule), runs a ``forget_conntrack`` step that reads the
table over ctnetlink and deletes `stale(...)` (natns/kernel/conntrack.py), and
clears the note after it; a natns killed in between finds the note next time.
`contradiction(ns, ...)` is the same test for one flow, for doctor.

Kept apart from the backends (it reads a FirewallIntent, not rules) and from
the kernel module (it decides; kernel/conntrack.py only reads and deletes), so
it is unit-tested without root and the planner's decision is one call.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass

from ..state import FirewallIntent

#: FirewallIntent.flush kind of the note "entries of this router still to be checked
#: against its rules"; its outside is the router's external address.
NOTE_KIND = "nat"


@dataclass(frozen=True)
class NatIntent:
    """What one router's rules translate (IPv4 strings throughout).

    `snat` is (network CIDR, address the network's connections leaving by the
    external interface get): the fixed address, or for masquerade the external
    address (what masquerade picks on that interface). `floating` is (floating
    address, host); `forwards` (protocol, address, first port, last port,
    target, target's first port).
    """

    namespace: str
    external_iface: str
    external_address: str | None
    internal: tuple[str, ...] = ()
    snat: tuple[tuple[str, str], ...] = ()
    floating: tuple[tuple[str, str], ...] = ()
    forwards: tuple[tuple[str, str, int, int, str, int], ...] = ()

    def to_json(self) -> dict:
        return {"namespace": self.namespace, "external_iface": self.external_iface,
                "external_address": self.external_address, "internal": list(self.internal),
                "snat": [list(s) for s in self.snat], "floating": [list(f) for f in self.floating],
                "forwards": [list(f) for f in self.forwards]}


@dataclass(frozen=True)
class Expectation:
    """How the rules translate a new connection: `dnat` (address, port or None) or None
    for no DNAT, `snat` the source address its replies come back to (the original
    source when there is no SNAT). `judge_dnat` False: natns's rules don't decide the
    destination (not one of the router's own external addresses)."""

    dnat: tuple[str, int | None] | None
    snat: str
    judge_dnat: bool = True


def from_firewall(intent: FirewallIntent | None) -> NatIntent | None:
    """The NatIntent of a router's FirewallIntent; None for anything but a router with an
    external interface (the host's uplink masquerade is not checked: natns never deletes
    conntrack entries in the namespace it runs in)."""
    if intent is None or intent.role != "router" or not intent.external_iface:
        return None
    ext = intent.external_address
    snat = tuple(sorted((str(ipaddress.ip_network(r.source, strict=False)), r.to or ext)
                        for r in intent.snat if not r.out_negate and (r.to or ext)))
    return NatIntent(
        namespace=intent.namespace, external_iface=intent.external_iface, external_address=ext,
        internal=tuple(sorted(str(ipaddress.ip_network(n.cidr, strict=False)) for n in intent.internal)),
        snat=snat,
        floating=tuple(sorted((f.address, f.host) for f in intent.floating)),
        forwards=tuple(sorted((pf.protocol, pf.address, pf.port, pf.port_end, pf.to, pf.to_port)
                              for pf in intent.forwards)),
    )


def note(nat: NatIntent) -> tuple[str, str]:
    """The FirewallIntent.flush element that notes a check of this router as due."""
    return (NOTE_KIND, nat.external_address or "0.0.0.0")


def _in(addr: str, nets) -> bool:
    ip = ipaddress.ip_address(addr)
    return any(ip in ipaddress.ip_network(n) for n in nets)


def expectation(nat: NatIntent, protocol: str, src: str, dst: str, dport: int | None = None) -> Expectation | None:
    """How natns's rules translate a new connection `src` -> `dst`[:`dport`]; None where
    they have no say (see the module's docstring)."""
    try:
        s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    except ValueError:
        return None
    if d.is_multicast or d.is_unspecified or dst == "255.255.255.255":
        return None
    fips = dict(nat.floating)
    owned = {a for a in (nat.external_address, *fips) if a}
    dnat: tuple[str, int | None] | None = None
    for proto, addr, port, end, to, to_port in nat.forwards:
        if proto == protocol and addr == dst and dport is not None and port <= dport <= end:
            dnat = (to, to_port + dport - port)
            break
    else:
        if dst in fips:
            dnat = (fips[dst], None)
    judge_dnat = dst in owned
    after = dnat[0] if dnat else dst
    internal_src = _in(src, nat.internal)
    if internal_src:
        if _in(after, nat.internal) or (not dnat and after in owned):
            # to a network of this router (hairpin SNAT if it was DNATed there) or to
            # the router itself: not out of the external interface
            return Expectation(dnat, nat.external_address if dnat and nat.external_address else src, judge_dnat)
        hosts = {h: a for a, h in nat.floating}
        if src in hosts:
            return Expectation(dnat, hosts[src], judge_dnat)
        for cidr, to in nat.snat:
            if s in ipaddress.ip_network(cidr):
                return Expectation(dnat, to, judge_dnat)
        return Expectation(dnat, src, judge_dnat)
    if judge_dnat:  # from outside (or the router) to one of its external addresses
        return Expectation(dnat, src, True)
    return None


def contradicts(nat: NatIntent, entry) -> bool:
    """Whether conntrack `entry` (natns.kernel.conntrack.Entry) is translated otherwise
    than the rules would translate its connection now."""
    return any(_mismatch(nat, entry)[:2])


def _mismatch(nat: NatIntent, entry) -> tuple[bool, bool, Expectation | None]:
    """(DNAT differs, SNAT differs, the expectation) of `entry` under `nat`."""
    o, r = entry.original, entry.reply
    want = expectation(nat, entry.protocol, o.src, o.dst, o.dport)
    if want is None or r.src in ("?", None):
        return False, False, want
    dnat_bad = False
    if want.judge_dnat:
        if want.dnat is None:
            dnat_bad = r.src != o.dst or (o.dport is not None and r.sport != o.dport)
        else:
            addr, port = want.dnat
            dnat_bad = r.src != addr or (port is not None and r.sport != port)
    snat_bad = r.dst != want.snat
    if snat_bad and not dnat_bad and kept_tcp(nat, entry):
        snat_bad = False
    return dnat_bad, snat_bad, want


def kept_tcp(nat: NatIntent, entry) -> bool:
    """An established TCP connection SNATed to an address the router still translates to
    (its external address, a floating address, a SNAT address) keeps that translation:
    given another source mid-stream it could only be reset by its peer. One that leaks a
    private source, or is SNATed to an address the rules no longer use, is not kept."""
    o, r = entry.original, entry.reply
    if entry.protocol != "tcp" or entry.state != "ESTABLISHED" or r.dst == o.src:
        return False
    return r.dst in {a for a in (nat.external_address, *(a for a, _ in nat.floating),
                                 *(to for _, to in nat.snat)) if a}


def stale(nat: NatIntent, entries) -> list:
    """The entries (natns.kernel.conntrack.Entry) that contradict the rules, in order."""
    return [e for e in entries if contradicts(nat, e)]


# --------------------------------------------------------------------------- planning


def recheck(fw, render, old, want, intent: FirewallIntent, existed: bool = True) -> NatIntent | None:
    """The NatIntent to check the router's entries against when its rules go from `old`
    to `want` (see `recheck_needed`), or None: no check needed. This is the planner's
    whole decision; it adds a ``forget_conntrack`` step carrying it."""
    nat = from_firewall(intent)
    return nat if nat is not None and recheck_needed(fw, render, old, want, intent, existed) else None


def recheck_needed(fw, render, old, want, intent: FirewallIntent, existed: bool = True) -> bool:
    """Whether changing a router's rules from Ruleset `old` (None: none) to `want` needs
    its conntrack entries checked against the new rules.

    `fw` is the backend (its `mappings`, `pending_flushes`), `render` the planner's. Not needed when
    the namespace is new (`existed` False: no traffic yet), when nothing changes, or
    when the change only removes floating IPs / port forwards: their entries go by the
    removal flush (every entry to or translated to the removed address or port).
    Needed for a pending note, for every other change, and for rules put into a
    namespace that has none of natns's (restored after a crash, or adopted).
    """
    nat = from_firewall(intent)
    if nat is None or fw is None or not existed:
        return False
    pending = fw.pending_flushes(old) if old is not None else set()
    if any(kind == NOTE_KIND for kind, _ in pending):
        return True
    if old is None:
        return True
    from dataclasses import replace

    if old == want or render(replace(intent, flush=tuple(sorted(pending)))) == old:
        return False  # nothing changes but removal-flush notes going
    gone = fw.mappings(old) - fw.mappings(want)
    if not gone or fw.mappings(want) - fw.mappings(old):
        return True
    from ..state import FloatingIp, PortForward

    floating, forwards = list(intent.floating), list(intent.forwards)
    for kind, outside, inside in sorted(gone):
        if kind == "fip":
            floating.append(FloatingIp(outside, inside))
        else:
            addr, port = outside.split(":")
            to, to_port = inside.split(":")
            forwards.append(PortForward(kind, addr, int(port), int(port), to, int(to_port)))
    before = render(replace(intent, floating=tuple(floating), forwards=tuple(forwards),
                               flush=tuple(sorted(pending))))
    # Only the mappings differ when the old rules are the new ones plus the removed
    # mappings (in any order: one rule per mapping, on distinct keys).
    return _unordered(before.key) != _unordered(old.key)


def _unordered(key) -> list[str]:
    """A backend's typed Ruleset key with the order of its parts left out."""
    from dataclasses import fields

    parts = []
    for f in fields(key):
        value = getattr(key, f.name)
        for item in (value if isinstance(value, tuple) else (value,)):
            parts.append(f"{f.name}:{item!r}")
    return sorted(parts)


def commands(nat: NatIntent, ns: str | None) -> list[str]:
    """The ``conntrack -D`` commands a `forget_conntrack` step amounts to (for `plan`).

    conntrack(8) cannot say "not translated to A" or "not to my own networks", so each
    command selects the candidates and the words after it in parentheses say which of
    them natns deletes (the entries `stale` picks, read and deleted over ctnetlink).
    Selected by hand, the commands would delete more than that."""
    pre = f"ip netns exec {ns} " if ns else ""
    q = shlex.quote
    ext = nat.external_iface
    out = []
    snat = dict(nat.snat)
    for cidr in nat.internal:
        to = snat.get(cidr)
        if to:
            out.append(f"{pre}conntrack -D -s {cidr} -q {cidr} (leaving by {q(ext)} not SNATed)")
            out.append(f"{pre}conntrack -D -s {cidr} --src-nat (leaving by {q(ext)} SNATed to other than {to})")
        else:
            out.append(f"{pre}conntrack -D -s {cidr} --src-nat (leaving by {q(ext)} SNATed: SNAT is off)")
    for addr, host in nat.floating:
        out.append(f"{pre}conntrack -D -s {host} (leaving by {q(ext)} with a source other than {addr})")
        out.append(f"{pre}conntrack -D -d {addr} (not DNATed to {host})")
    for proto, addr, port, end, to, to_port in nat.forwards:
        ports = str(port) if port == end else f"{port}-{end}"
        out.append(f"{pre}conntrack -D -p {proto} -d {addr} --dport {ports} (not DNATed to {to}:{to_port})")
    if nat.external_address:
        out.append(f"{pre}conntrack -D -d {nat.external_address} --dst-nat (DNATed otherwise than its port forwards say)")
    return out


# --------------------------------------------------------------------------- read back, for doctor

_NFT_SNAT = re.compile(r'oifname (!= )?"(?P<oif>[^"]+)" ip saddr (?P<src>[\d./]+) .*?'
                       r'(?:(?P<masq>masquerade)|snat (?:ip )?to (?P<to>[\d.]+)).*comment "natns snat ')
_NFT_HAIRPIN = re.compile(r'snat (?:ip )?to (?P<to>[\d.]+).*comment "natns hairpin"')


def snat_from_nft_text(text: str) -> tuple[list[tuple[str, str, str | None]], str | None]:
    """From ``nft list table ip natns``: the SNAT rules as (out interface, source,
    address or None for masquerade), and the hairpin address (the external one)."""
    rules, hairpin = [], None
    for line in text.splitlines():
        if (m := _NFT_HAIRPIN.search(line)) is not None:
            hairpin = m["to"]
        elif (m := _NFT_SNAT.search(line)) is not None and not m.group(1):
            rules.append((m["oif"], m["src"], m["to"]))
    return rules, hairpin


def snat_from_iptables_key(key) -> tuple[list[tuple[str, str, str | None]], str | None]:
    """The same from an iptables Ruleset's key (`IptKey`: natns's rules as argument tuples)."""
    rules, hairpin = [], None
    for _table, _chain, args in key.rules:

        def arg(flag: str) -> str | None:
            return args[args.index(flag) + 1] if flag in args else None
        comment = arg("--comment") or ""
        if comment == "natns hairpin":
            hairpin = arg("--to-source")
        elif comment.startswith("natns snat ") and "!" not in args and arg("-s") and arg("-o"):
            rules.append((arg("-o"), arg("-s"), arg("--to-source")))
    return rules, hairpin


def observed(ns: str) -> NatIntent | None:
    """The NatIntent of natns's rules in router namespace `ns`, read from the kernel
    (rules of either backend, the router's addresses); None if natns has no rules there.

    The external address is the hairpin rule's; the networks behind the router are the
    subnets of its addresses on every other interface."""
    from ..kernel import nftlib, rtnl
    from . import BACKENDS, get_backend

    for name in BACKENDS:
        be = get_backend(name)
        rs = be.observe(ns)
        if rs is not None:
            break
    else:
        return None
    if be.name == "nftables":
        text = nftlib.run(ns, ["nft", "list", "table", "ip", "natns"], check=False).stdout
        snat, ext_addr = snat_from_nft_text(text)
    else:
        snat, ext_addr = snat_from_iptables_key(rs.key)
    with rtnl.open_in(ns) as h:
        names = {ln.index: ln.name for ln in h.links()}
        addrs = [(names.get(a.index, ""), a.address, a.prefixlen) for a in h.addrs()]
    ext_iface = next((n for n, a, _ in addrs if a == ext_addr), None) or (snat[0][0] if snat else None)
    if ext_iface is None:
        return None
    if ext_addr is None:
        ext_addr = next((a for n, a, p in addrs if n == ext_iface and p < 32), None)
    internal = sorted({str(ipaddress.ip_network(f"{a}/{p}", strict=False)) for n, a, p in addrs
                       if n not in (ext_iface, "lo") and p < 32})
    mappings = be.mappings(rs)
    forwards = []
    for kind, outside, inside in mappings:
        if kind in ("tcp", "udp"):
            addr, port = outside.split(":")
            to, to_port = inside.split(":")
            forwards.append((kind, addr, int(port), int(port), to, int(to_port)))
    return NatIntent(
        namespace=ns, external_iface=ext_iface, external_address=ext_addr, internal=tuple(internal),
        snat=tuple(sorted((str(ipaddress.ip_network(src, strict=False)), to or ext_addr)
                          for oif, src, to in snat if oif == ext_iface and (to or ext_addr))),
        floating=tuple(sorted((o, i) for k, o, i in mappings if k == "fip")),
        forwards=tuple(sorted(forwards)),
    )


@dataclass(frozen=True)
class Contradiction:
    """A conntrack entry of a flow that the router's rules translate otherwise: what the
    entry does, what the rules say, and the command that deletes it (the next packet then
    makes a new entry, translated by the rules)."""

    namespace: str
    entry: object  # natns.kernel.conntrack.Entry
    expected: Expectation
    problem: str
    fix: str

    def to_json(self) -> dict:
        return {"namespace": self.namespace, "entry": self.entry.to_json(), "problem": self.problem,
                "fix": self.fix}


def _describe(nat: NatIntent, entry) -> str:
    o, r = entry.original, entry.reply
    dnat_bad, snat_bad, want = _mismatch(nat, entry)
    parts = []
    if dnat_bad:
        now = "is not DNATed" if r.src == o.dst else f"is DNATed to {r.endpoint('src')}"
        if want.dnat is None:
            should = "do not DNAT it"
        else:
            should = f"DNAT it to {want.dnat[0]}" + (f":{want.dnat[1]}" if want.dnat[1] is not None else "")
        parts.append(f"its entry {now}, the rules {should}")
    if snat_bad:
        now = "is not SNATed" if r.dst == o.src else f"is SNATed to {r.dst}"
        should = "do not SNAT it" if want.snat == o.src else f"SNAT it to {want.snat}"
        parts.append(f"its entry {now}, the rules {should}")
    return (f"{entry.protocol} {o.text()}: " + "; ".join(parts)
            + " (tracked before the rules changed: the kernel consults them for a connection's first packet only)")


def fix_command(ns: str, entry) -> str:
    """``conntrack -D`` for exactly this entry's connection."""
    from ..kernel.conntrack import delete_argv

    return shlex.join(delete_argv(ns, entry))


def contradiction(ns: str, protocol: str, src: str, dst: str, sport: int | None = None,
                  dport: int | None = None, nat: NatIntent | None = None, entries=None) -> list[Contradiction]:
    """For doctor: the conntrack entries in router namespace `ns` of the flow `protocol`
    `src`[:`sport`] -> `dst`[:`dport`] (as its sender sends it; ports None: any) that
    contradict the rules natns has there now, each with the command that fixes it.
    Empty: no such entry (or natns has no rules in `ns`). `nat` and `entries` default to
    what the kernel has (`observed(ns)`, `natns.kernel.conntrack.entries(ns)`)."""
    nat = nat or observed(ns)
    if nat is None:
        return []
    if entries is None:
        from ..kernel import conntrack

        entries = conntrack.entries(ns)
    out = []
    for e in entries:
        o = e.original
        if e.protocol != protocol or o.src != src or o.dst != dst:
            continue
        if (sport is not None and o.sport != sport) or (dport is not None and o.dport != dport):
            continue
        if contradicts(nat, e):
            want = expectation(nat, e.protocol, o.src, o.dst, o.dport)
            out.append(Contradiction(ns, e, want, _describe(nat, e), fix_command(ns, e)))
    return out

"""nftables backend: natns owns exactly one table per namespace (``ip natns``).

Static rules, dynamic maps (the knftables way): the chains and rules depend
only on the router's shape (its networks, its external interface, its
policy); floating IPs and port forwards are elements of maps the rules look
up, so the cost per packet does not grow with their number and adding one is
an element change, not a reload. A router's table::

    table ip natns {
        comment "natns:<lab>:<namespace> rules:<digest>"
        map fip_dnat { type ipv4_addr : ipv4_addr; counter; } # floating -> private
        map fip_snat { type ipv4_addr : ipv4_addr; counter; } # private -> floating
        map pf_tcp { type ipv4_addr . inet_service : ipv4_addr . inet_service; counter; }
        map pf_udp { ... }
        set flush_fip { type ipv4_addr; }                     # conntrack flushes still due
        set flush_tcp { ... }  set flush_udp { ... }           # (see FirewallIntent.flush)
        set flush_nat { type ipv4_addr; }                     # conntrack check still due
        chain prerouting { type nat hook prerouting priority dstnat; ...
            dnat to ip daddr map @fip_dnat ...
            meta l4proto tcp dnat to ip daddr . tcp dport map @pf_tcp ... }
        chain postrouting { type nat hook postrouting priority srcnat; ...
            ct status dnat iifname != "eth0" oifname != "eth0" snat to <external>   (hairpin)
            oifname "eth0" snat to ip saddr map @fip_snat     (counted per element)
            oifname "eth0" ip saddr 192.0.2.0/24 masquerade  (one per network) }
        chain forward { ... policy drop; established, anti-spoofing, outbound, DNATed }
        chain input   { ... anti-spoofing; nothing answers on the external interface }
    }

Every element of a map has its own counter (`counter` in the map's declaration): the
connections each floating IP and forwarded port translated, in and out
(`mapping_counters`; a rule's counter before a map lookup would count every packet
looked up, found or not). Every rule carries a comment naming what it is for. The table comment holds
a digest of the static part (everything but map elements), so reading back
needs no knowledge of how nft prints each expression: the kernel's table
matches the wanted one when the digest, the chains with their policies, the
rules' comments in order, and the map elements all match. A rule added,
removed or reordered by hand shows up as a difference; an edit that keeps a
natns comment on a changed rule does not (documented limit).

Loading is one nft transaction (``add table; delete table; table ... {}``
plus the elements), written in nft's own syntax, not JSON: nft before 1.0.8
(Debian 12 ships 1.0.6) drops a table's comment given in JSON. Every string
that goes into a script is checked first (`check_comment`, `check_iface`);
nft strings have no escapes, so those checks are what make scripts safe.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import socket
from dataclasses import dataclass, replace

from ..errors import KernelError
from ..kernel import netfilter, nftlib, nftread
from ..marks import NFT_TABLE, SCOPE, nft_table_comment
from ..state import FirewallIntent
from .base import (
    ND_TYPES,
    Ruleset,
    canonical_address6,
    canonical_source6,
    mapping_order,
    multiset_diff,
    canonical_address,
    canonical_source,
    check_comment,
    check_iface,
    check_table,
    snat_comment,
)

NAME = "nftables"
FAMILY = "ip"
#: IPv6 rules live in a table of their own, ``ip6 natns`` (docs/ipv6.md): a lab without
#: IPv6 keeps exactly the ``ip natns`` table it had, and the v4 readers read it unchanged.
FAMILY6 = "ip6"
NFPROTO_IPV6 = 10
TABLE = NFT_TABLE

#: The maps whose elements are the dynamic part, and their nft types.
MAPS = {
    "fip_dnat": "ipv4_addr : ipv4_addr",
    "fip_snat": "ipv4_addr : ipv4_addr",
    "pf_tcp": "ipv4_addr . inet_service : ipv4_addr . inet_service",
    "pf_udp": "ipv4_addr . inet_service : ipv4_addr . inet_service",
}

#: map -> the kind of mapping its elements are, for mapping_counters
_MAP_KIND = {"fip_dnat": "fip in", "fip_snat": "fip out", "pf_tcp": "tcp", "pf_udp": "udp"}


#: Sets noting the conntrack flushes still due for removed mappings (see
#: FirewallIntent.flush): written in the transaction that removes a mapping,
#: emptied after the flush. Keys as in the maps above.
SETS = {
    "flush_fip": "ipv4_addr",
    "flush_tcp": "ipv4_addr . inet_service",
    "flush_udp": "ipv4_addr . inet_service",
    "flush_nat": "ipv4_addr",  # the router's entries to check against its rules (ctselect.py)
}


@dataclass(frozen=True, order=True)
class NftChain:
    """A base chain as the key holds it: name, type, hook, priority (a number), policy."""

    name: str
    type: str | None
    hook: str | None
    prio: int | None
    policy: str | None


@dataclass(frozen=True)
class NftKey:
    """The canonical content of natns's table (the Ruleset key of this backend).

    `chains` sorted by name; `rules` as (chain, comment) in listing order,
    chain by chain; `elements` as (map or set, ((key, value), ...)) sorted,
    key and value strings ("198.51.100.50", "198.51.100.116 . 8080"; a set's
    value is "").
    """

    table: str
    comment: str | None
    chains: tuple[NftChain, ...]
    rules: tuple[tuple[str, str | None], ...]
    elements: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]
    #: The ``ip6`` table of the same name (IPv6 labs), or None.
    v6: "NftKey | None" = None

    def static(self) -> "NftKey":
        """Everything but the map and set elements."""
        return replace(self, elements=(), v6=self.v6.static() if self.v6 else None)

    def text(self) -> str:
        """A readable summary of a key read back from the kernel (no rule bodies)."""
        return ruleset_text(self)



class NftablesBackend:
    """natns's rules as the nftables table ``ip natns`` (or ``ip natnsup-<hex>``)."""

    name = NAME

    def render(self, intent: FirewallIntent) -> Ruleset:
        """The Ruleset natns wants for `intent`."""
        table = check_table(intent.scope)
        chains, maps = _static(intent)
        static = _static_text(table, chains, maps)
        digest = hashlib.sha256(static.encode()).hexdigest()[:16]
        comment = check_comment(nft_table_comment(intent.lab, intent.namespace, digest))
        elements = _elements(intent) if maps else {}
        key = _key(table, comment, chains, maps, elements)
        body6 = ""
        if intent.v6:
            key6, body6 = _render6(intent, table)
            key = replace(key, v6=key6)

        def body() -> str:
            return _table_text(table, comment, chains, maps) + _element_lines(table, elements, "add") + body6

        return Ruleset(NAME, key, body)

    def observe(self, ns: str | None, scope: str = SCOPE) -> Ruleset | None:
        """Table ``ip <scope>`` in `ns` as a Ruleset, or None if there is none."""
        # One dump says which of the two tables are there (in process); each is listed if so.
        fams = nftlib.tables_by_family(ns) if nftlib.in_process() else None
        key = _observed_key(ns, scope, FAMILY, None if fams is None else fams.get(nftlib.NFPROTO_IPV4, {}))
        key6 = _observed_key(ns, scope, FAMILY6, None if fams is None else fams.get(NFPROTO_IPV6, {}))
        if key is None and key6 is None:
            return None
        if key is None:  # only the ip6 table (a hand-deleted ip table): different from any render
            return Ruleset(NAME, NftKey(scope, None, (), (), (), key6))
        return Ruleset(NAME, replace(key, v6=key6))

    def load(self, ns: str | None, ruleset: Ruleset) -> None:
        """Replace table ``ip <scope>`` in `ns` with `ruleset`, in one nft transaction.

        Teardown is `remove`.
        """
        if ruleset.backend != NAME or not ruleset.body:
            raise ValueError("only a rendered nftables Ruleset can be loaded")
        table = ruleset.key.table
        if ruleset.key.v6 is not None or _table_exists(ns, table, FAMILY6):
            # IPv6 rules wanted or found: both tables are replaced in the one transaction.
            nftlib.run(ns, ["nft", "-f", "-"], input=_reset_lines(table) + _reset_lines(table, FAMILY6)
                       + ruleset.body)
            return
        if nftlib.in_process() and not _table_exists(ns, table):
            # Most loads are into a namespace without the table (a router being
            # made). Deleting a table, even an empty one just added, makes the
            # kernel wait for an RCU grace period (~10 ms), so when a (cheap,
            # in-process) look finds no table, `create table` instead: it fails,
            # changing nothing, if the table appeared meanwhile, and then the
            # table is replaced as below. Either way one transaction.
            try:
                create = f'create table {FAMILY} {table} {{ comment "{check_comment(ruleset.key.comment)}"; }}\n'
                nftlib.run(ns, ["nft", "-f", "-"], input=create + ruleset.body)
                return
            except KernelError:
                pass
        nftlib.run(ns, ["nft", "-f", "-"], input=_reset_lines(table) + ruleset.body)

    def check(self, ns: str | None, ruleset: Ruleset) -> str | None:
        """Whether `ruleset` would load in `ns` (what `load` sends, checked by the kernel
        and aborted: ``nft -c``); None if it would, else nft's message. Changes nothing."""
        if ruleset.backend != NAME or not ruleset.body:
            raise ValueError("only a rendered nftables Ruleset can be checked")
        six = _reset_lines(ruleset.key.table, FAMILY6) if ruleset.key.v6 is not None else ""
        return nftlib.check(ns, _reset_lines(ruleset.key.table) + six + ruleset.body)

    def remove(self, ns: str | None, scope: str = SCOPE) -> None:
        """Delete table ``ip <scope>`` in `ns` and nothing else; no error if it is absent.

        Undoes `load`.
        """
        six = _reset_lines(check_table(scope), FAMILY6) if _table_exists(ns, scope, FAMILY6) else ""
        nftlib.run(ns, ["nft", "-f", "-"], input=_reset_lines(check_table(scope)) + six)

    def element_changes(self, old: Ruleset, new: Ruleset) -> dict | None:
        """{map: (added pairs, removed pairs)} if only map elements differ, else None."""
        if getattr(old, "backend", None) != NAME or getattr(new, "backend", None) != NAME \
                or old.key.static() != new.key.static():
            return None
        before, after = dict(old.key.elements), dict(new.key.elements)
        if set(before) != set(after):
            return None
        changes = {}
        for m in after:
            b, a = dict(before[m]), dict(after[m])
            added = tuple(sorted((k, v) for k, v in a.items() if b.get(k) != v))
            removed = tuple(sorted((k, v) for k, v in b.items() if a.get(k) != v))
            if added or removed:
                changes[m] = (added, removed)
        return changes

    def mappings(self, ruleset: Ruleset | None) -> set[tuple[str, str, str]]:
        """The inbound mappings a Ruleset holds: (kind, outside, inside).

        kind is "fip", "tcp" or "udp"; outside/inside are "addr" or "addr:port".
        """
        out: set[tuple[str, str, str]] = set()
        if getattr(ruleset, "backend", None) != NAME:
            return out
        for m, pairs in ruleset.key.elements:
            kind = {"fip_dnat": "fip", "pf_tcp": "tcp", "pf_udp": "udp"}.get(m)
            if kind:
                out |= {(kind, k.replace(" . ", ":"), v.replace(" . ", ":")) for k, v in pairs}
        return out

    def update_elements(self, ns: str | None, scope: str, changes: dict) -> None:
        """Add and remove map elements in one nft transaction; rules and counters stay."""
        table = check_table(scope)
        lines = []
        for m, (added, removed) in sorted(changes.items()):
            if m not in MAPS and m not in SETS:
                raise ValueError(f"{m!r} is not a natns map or set")
            if removed:
                lines.append(f"delete element {FAMILY} {table} {m} {{ {', '.join(_check_elem(k) for k, _ in removed)} }}")
        for m, (added, removed) in sorted(changes.items()):
            if added:
                items = ", ".join(_elem_item(k, v) for k, v in added)
                lines.append(f"add element {FAMILY} {table} {m} {{ {items} }}")
        if lines:
            nftlib.run(ns, ["nft", "-f", "-"], input="\n".join(lines) + "\n")

    def pending_flushes(self, ruleset: Ruleset | None) -> set[tuple[str, str]]:
        """The conntrack flushes a Ruleset notes as still due: (kind, outside)."""
        out: set[tuple[str, str]] = set()
        if getattr(ruleset, "backend", None) != NAME:
            return out
        for m, pairs in ruleset.key.elements:
            if m in SETS:
                out |= {(m.removeprefix("flush_"), k.replace(" . ", ":")) for k, _ in pairs}
        return out

    def describe_drift(self, old: Ruleset | None, new: Ruleset | None) -> list[str]:
        """What differs from table `old` (found) to `new` (wanted): chains, rules (by their
        comments, chain by chain), map and set elements, the table's digest (pure)."""
        for rs in (old, new):
            if rs is not None and rs.backend != NAME:
                raise ValueError(f"not an nftables Ruleset: {rs.backend}")
        return drift_lines(old.key if old is not None else None, new.key if new is not None else None)

    def mapping_counters(self, ns: str | None, scope: str = SCOPE) -> list[dict]:
        """Connections translated per floating IP (in and out) and per forwarded port, from
        the counters of the map elements (NAT sees each connection's first packet)."""
        objs = _list_table(ns, scope)
        out = []
        for obj in objs or ():
            m = obj.get("map")
            kind = _MAP_KIND.get(m["name"]) if m else None
            if kind is None:
                continue
            for e in m.get("elem", []):
                if not (isinstance(e, list) and len(e) == 2):
                    continue
                ctr = e[0].get("elem", {}).get("counter") if isinstance(e[0], dict) else None
                key, value = _elem_text(e[0]).replace(" . ", ":"), _elem_text(e[1]).replace(" . ", ":")
                outside, inside = (value, key) if kind == "fip out" else (key, value)
                out.append({"kind": kind, "outside": outside, "inside": inside,
                            "packets": int((ctr or {}).get("packets", 0)), "bytes": int((ctr or {}).get("bytes", 0))})
        return sorted(out, key=mapping_order)

    def counters(self, ns: str | None, scope: str = SCOPE) -> list[dict]:
        """Packet and byte counts of each rule in table ``ip <scope>``, then in ``ip6 <scope>``
        (its rows marked ``"family": 6``); empty if there is no table."""
        out = self._counters(ns, scope)
        if _table_exists(ns, scope, FAMILY6):
            out += [dict(row, family=6) for row in self._counters(ns, scope, FAMILY6)]
        return out

    def _counters(self, ns: str | None, scope: str, family: str = FAMILY) -> list[dict]:
        objs = _list_table(ns, scope, family)
        if objs is None:
            return []
        texts = _rule_texts(ns, scope, family)
        out = []
        for obj in objs:
            rule = obj.get("rule")
            if rule is None:
                continue
            packets = byts = None  # a rule without a counter (the floating-IP map counts per element)
            for e in rule.get("expr", []):
                if isinstance(e, dict) and isinstance(e.get("counter"), dict):
                    packets = int(e["counter"].get("packets", 0))
                    byts = int(e["counter"].get("bytes", 0))
            out.append({
                "chain": rule.get("chain"),
                "rule": texts.get(rule.get("handle"), ""),
                "comment": rule.get("comment"),
                "packets": packets,
                "bytes": byts,
            })
        return out


BACKEND = NftablesBackend()


# ----------------------------------------------------------------------------- render


def _static(intent: FirewallIntent) -> tuple[list[dict], list[str]]:
    """Chains (with rules as (text, comment)) and map names for `intent`."""
    router = intent.role == "router"
    ext = check_iface(intent.external_iface) if intent.external_iface else None

    def rule(text: str, comment: str) -> tuple[str, str]:
        return (text, check_comment(comment))

    post = []
    pre = []
    maps: list[str] = []
    if router and ext:
        maps = list(MAPS) + list(SETS)
        pre = [
            rule("dnat to ip daddr map @fip_dnat", "natns floating ips in"),
            rule("meta l4proto tcp dnat to ip daddr . tcp dport map @pf_tcp", "natns port forwards tcp"),
            rule("meta l4proto udp dnat to ip daddr . udp dport map @pf_udp", "natns port forwards udp"),
        ]
        if intent.external_address:
            hair = canonical_address(intent.external_address)
            post.append(rule(f'ct status dnat iifname != "{ext}" oifname != "{ext}" counter snat to {hair}',
                             "natns hairpin"))
        # no rule counter: it would count every packet looked up; the map counts per element
        post.append(rule(f'oifname "{ext}" snat to ip saddr map @fip_snat', "natns floating ips out"))
    for r in intent.snat:
        src = canonical_source(r.source)
        src_text = str(src.network_address) if src.prefixlen == 32 else str(src)
        action = "masquerade" if r.to is None else f"snat to {canonical_address(r.to)}"
        neg = "!= " if r.out_negate else ""
        post.append(rule(f'oifname {neg}"{check_iface(r.out_iface)}" ip saddr {src_text} counter {action}',
                         snat_comment(r.network)))
    chains = []
    if pre:
        chains.append(_chain("prerouting", "nat", "prerouting", -100, "accept", pre))
    chains.append(_chain("postrouting", "nat", "postrouting", 100, "accept", post))
    if router and intent.isolate and ext:
        fwd = [
            rule("ct state established,related counter accept", "natns established"),
            rule("ct state invalid counter drop", "natns invalid"),
        ]
        inp = []
        for n in intent.internal:
            iface, cidr = check_iface(n.iface), canonical_source(n.cidr)
            spoof = rule(f'iifname "{iface}" ip saddr != {cidr} counter drop', f"natns anti-spoofing {n.name}")
            fwd.append(spoof)
            inp.append(spoof)
        for n in intent.internal:
            # From outside, no packet has a private source: it would reach a tenant
            # through a floating IP or port forward in the name of its neighbour.
            fwd.append(rule(f'iifname "{ext}" ip saddr {canonical_source(n.cidr)} counter drop',
                            f"natns anti-spoofing external {n.name}"))
        for n in intent.internal:
            fwd.append(rule(f'iifname "{check_iface(n.iface)}" counter accept', f"natns from {n.name}"))
        fwd.append(rule("ct status dnat counter accept", "natns floating ips and port forwards"))
        # The external address offers nothing but its port forwards (DNATed before
        # input), to the outside and to the router's own tenants alike.
        _policy_end(chains, fwd, inp, ext, intent.external_address and
                    f"ip daddr {canonical_address(intent.external_address)}")
    return chains, maps


def _policy_end(chains: list, fwd: list, inp: list, ext: str, external: str | None) -> None:
    """What ends a router's filter policy in both families: forward counts what its policy
    drops; input refuses new connections to the external address (`external`, the match
    for it) and takes only replies from outside. Then both chains are added to `chains`."""
    fwd.append(("counter", check_comment("natns dropped by policy")))
    if external:
        inp.append((f"{external} ct state new counter drop", check_comment("natns external address no services")))
    inp += [
        (f'iifname "{ext}" ct state established,related counter accept', check_comment("natns external replies")),
        (f'iifname "{ext}" counter drop', check_comment("natns external no services")),
    ]
    chains.append(_chain("forward", "filter", "forward", 0, "drop", fwd))
    chains.append(_chain("input", "filter", "input", 0, "accept", inp))


def _static6(intent: FirewallIntent) -> list[dict]:
    """The chains of the ``ip6`` table (docs/ipv6.md): NAT66 when asked; with isolation,
    forward default-deny but outbound, replies, ingress and packet-too-big, and on input
    neighbour discovery, anti-spoofing and nothing answering from outside."""
    ext = check_iface(intent.external_iface) if intent.external_iface else None

    def rule(text: str, comment: str) -> tuple[str, str]:
        return (text, check_comment(comment))

    post = []
    for r in intent.snat6:
        neg = "!= " if r.out_negate else ""
        post.append(rule(f'oifname {neg}"{check_iface(r.out_iface)}" ip6 saddr {canonical_source6(r.source)} '
                         f"counter masquerade", check_comment(f"natns snat6 {r.network}")))
    chains = [_chain("postrouting", "nat", "postrouting", 100, "accept", post)]
    if intent.role != "router" or not intent.isolate or not ext:
        return chains
    nd = ", ".join(str(t) for t in ND_TYPES)
    ptb = rule("icmpv6 type packet-too-big counter accept", "natns packet too big")
    fwd = [
        rule("ct state established,related counter accept", "natns established"),
        ptb,
        rule("ct state invalid counter drop", "natns invalid"),
    ]
    inp = [rule(f"icmpv6 type {{ {nd} }} counter accept", "natns neighbour discovery"), ptb]
    for n in intent.internal6:
        iface, cidr = check_iface(n.iface), canonical_source6(n.cidr)
        fwd.append(rule(f'iifname "{iface}" ip6 saddr != {cidr} counter drop', f"natns anti-spoofing6 {n.name}"))
        inp.append(rule(f'iifname "{iface}" ip6 saddr != {cidr} ip6 saddr != fe80::/10 counter drop',
                        f"natns anti-spoofing6 {n.name}"))
    for n in intent.internal6:
        fwd.append(rule(f'iifname "{ext}" ip6 saddr {canonical_source6(n.cidr)} counter drop',
                        f"natns anti-spoofing6 external {n.name}"))
    for n in intent.internal6:
        fwd.append(rule(f'iifname "{check_iface(n.iface)}" counter accept', f"natns from {n.name}"))
    opened = []
    for g in intent.ingress6:
        to = canonical_address6(g.to)
        ports = str(g.port) if g.port == g.port_end else f"{g.port}-{g.port_end}"
        fwd.append(rule(f'iifname "{ext}" ip6 daddr {to} {g.protocol} dport {ports} ct state new counter accept',
                        f"natns ingress {g.protocol} {to} {ports}"))
        if to not in opened:
            opened.append(to)
    for to in opened:
        # As a floating IP's host answers ping in IPv4, an ingress host does in IPv6.
        fwd.append(rule(f'iifname "{ext}" ip6 daddr {to} icmpv6 type echo-request counter accept',
                        f"natns ingress echo {to}"))
    _policy_end(chains, fwd, inp, ext, intent.external_address6 and
                f"ip6 daddr {canonical_address6(intent.external_address6)}")
    return chains


def _render6(intent: FirewallIntent, table: str) -> tuple[NftKey, str]:
    """The key and text of the ``ip6`` table for `intent`."""
    chains = _static6(intent)
    digest = hashlib.sha256(_static_text(table, chains, [], FAMILY6).encode()).hexdigest()[:16]
    comment = check_comment(nft_table_comment(intent.lab, intent.namespace, digest))
    return _key(table, comment, chains, [], {}), _table_text(table, comment, chains, [], FAMILY6)


def _key(table: str, comment: str, chains: list[dict], maps: list[str], elements: dict) -> NftKey:
    """The canonical key of a rendered table (see NftKey)."""
    return NftKey(
        table, comment,
        tuple(sorted(NftChain(c["name"], c["type"], c["hook"], c["prio"], c["policy"]) for c in chains)),
        tuple((c["name"], r[1]) for c in _by_name(chains) for r in c["rules"]),
        tuple(sorted((m, tuple(sorted(elements.get(m, ())))) for m in maps)),
    )


def _chain(name, ctype, hook, prio, policy, rules) -> dict:
    return {"name": name, "type": ctype, "hook": hook, "prio": prio, "policy": policy, "rules": rules}


def _by_name(chains: list[dict]) -> list[dict]:
    return sorted(chains, key=lambda c: c["name"])


_PRIO = {-100: "dstnat", 100: "srcnat", 0: "filter"}


def _chain_lines(chains: list[dict]) -> list[str]:
    lines = []
    for c in chains:
        lines.append(f"\tchain {c['name']} {{")
        lines.append(f"\t\ttype {c['type']} hook {c['hook']} priority {_PRIO[c['prio']]}; policy {c['policy']};")
        for text, comment in c["rules"]:
            lines.append(f'\t\t{text} comment "{comment}"')
        lines.append("\t}")
    return lines


def _static_text(table: str, chains: list[dict], maps: list[str], family: str = FAMILY) -> str:
    """Everything of the table but its comment and map elements: what the digest covers."""
    lines = _declarations(maps) + _chain_lines(chains)
    return f"table {family} {table}\n" + "\n".join(lines) + "\n"


def _table_text(table: str, comment: str, chains: list[dict], maps: list[str], family: str = FAMILY) -> str:
    lines = [f"table {family} {table} {{", f'\tcomment "{comment}"']
    lines += _declarations(maps)
    lines += _chain_lines(chains)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _declarations(names: list[str]) -> list[str]:
    """The maps (each element with its own counter) and sets of the table."""
    return [f"\tmap {m} {{ type {MAPS[m]}; counter; }}" if m in MAPS else f"\tset {m} {{ type {SETS[m]}; }}"
            for m in names]


def _elements(intent: FirewallIntent) -> dict[str, set[tuple[str, str]]]:
    """The map and set elements for `intent`, as (key, value) strings ("" for a set)."""
    canonical_address = _canonical_address
    out: dict[str, set[tuple[str, str]]] = {m: set() for m in [*MAPS, *SETS]}
    for kind, outside in intent.flush:
        out[f"flush_{kind}"].add((outside.replace(":", " . "), ""))
    for f in intent.floating:
        a, h = canonical_address(f.address), canonical_address(f.host)
        out["fip_dnat"].add((a, h))
        out["fip_snat"].add((h, a))
    for pf in intent.forwards:
        m = f"pf_{pf.protocol}"
        addr, to = canonical_address(pf.address), canonical_address(pf.to)
        for outer, inner in pf.pairs():
            out[m].add((f"{addr} . {outer}", f"{to} . {inner}"))
    return out


#: canonical_address, remembered: a plan renders a router's rules more than once, and a
#: router with thousands of floating IPs parses each address (ipaddress) every time.
_canonical_address = functools.lru_cache(maxsize=1 << 16)(canonical_address)


def _element_lines(table: str, elements: dict, verb: str) -> str:
    lines = []
    for m in sorted(elements):
        pairs = sorted(elements[m])
        if pairs:
            items = ", ".join(_elem_item(k, v) for k, v in pairs)
            lines.append(f"{verb} element {FAMILY} {table} {m} {{ {items} }}")
    return "\n".join(lines) + ("\n" if lines else "")


_ELEM_RE = re.compile(r"\d{1,3}(\.\d{1,3}){3}( \. \d{1,5})?")


def _elem_item(key: str, value: str) -> str:
    """An element as nft writes it: `key : value` in a map, `key` in a set."""
    return f"{_check_elem(key)} : {_check_elem(value)}" if value else _check_elem(key)


def _check_elem(text: str) -> str:
    """An element key or value: an address, or address . port."""
    if not _ELEM_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not an nft map element natns writes")
    return text


def _reset_lines(table: str = TABLE, family: str = FAMILY) -> str:
    # "add" makes the "delete" succeed when the table is absent.
    return f"add table {family} {table}\ndelete table {family} {table}\n"


def ruleset_text(key: NftKey) -> str:
    """A readable summary of a key read back from the kernel (no rule bodies)."""
    lines = [f"table {FAMILY} {key.table} {{", f'\tcomment "{key.comment}"']
    for c in key.chains:
        lines.append(f"\tchain {c.name} {{ type {c.type} hook {c.hook} priority {c.prio}; policy {c.policy}; }}")
        lines += [f"\t\t# rule: {comment}" for ch, comment in key.rules if ch == c.name]
    for m, pairs in key.elements:
        lines.append(f"\t# {m}: {len(pairs)} element(s)")
    lines.append("}")
    return "\n".join(lines) + "\n"


def drift_lines(old: NftKey | None, new: NftKey | None, family: str = FAMILY) -> list[str]:
    """`NftablesBackend.describe_drift` on keys: one sentence per difference (the ``ip6``
    table's after the ``ip`` table's)."""
    if old == new:
        return []
    if family == FAMILY and (old is not None or new is not None):
        six = drift_lines(old.v6 if old is not None else None, new.v6 if new is not None else None, FAMILY6)
        if old is not None and new is not None and six:
            four = drift_lines(replace(old, v6=None), replace(new, v6=None))
            return four + six
    if old is None:
        return [f"table {family} {new.table} is missing (natns's {len(new.rules)} rule(s) in "
                f"{len(new.chains)} chain(s): {', '.join(c.name for c in new.chains)})"]
    if new is None:
        return [f"table {family} {old.table} is there, but the file wants no natns rules here"]
    out = []
    if old.comment != new.comment:
        out.append(f"the table's comment is {old.comment!r}, this file's is {new.comment!r}: its rules "
                   "were written for another file (a rule's body, an address or an interface differs)")
    have_chains, want_chains = {c.name: c for c in old.chains}, {c.name: c for c in new.chains}
    rules_of = lambda key, chain: [comment for ch, comment in key.rules if ch == chain]  # noqa: E731
    for name, c in want_chains.items():
        h = have_chains.get(name)
        if h is None:
            n = len(rules_of(new, name))
            out.append(f"chain {name} is missing (type {c.type} hook {c.hook}, policy {c.policy}) "
                       f"with its {n} rule(s)")
            continue
        for attr in ("type", "hook", "prio", "policy"):
            if getattr(h, attr) != getattr(c, attr):
                out.append(f"chain {name}: {attr if attr != 'prio' else 'priority'} is {getattr(h, attr)}, "
                           f"want {getattr(c, attr)}")
    for name in sorted(have_chains.keys() - want_chains.keys()):
        out.append(f"chain {name} is extra (the file has no such chain), with {len(rules_of(old, name))} rule(s)")
    for name in sorted(want_chains.keys() & have_chains.keys()):
        have, want = rules_of(old, name), rules_of(new, name)
        missing, extra = multiset_diff(have, want)
        for comment in missing:
            out.append(f'rule "{comment}" is missing from chain {name}')
        for comment in extra:
            out.append(f'rule "{comment}" in chain {name} is extra' if comment is not None
                       else f"chain {name} has a rule natns didn't write (one without a comment)")
        if not missing and not extra and have != want:
            out.append(f"the rules of chain {name} are in another order")
    have_el, want_el = dict(old.elements), dict(new.elements)
    for m in sorted(have_el.keys() | want_el.keys()):
        kind = "map" if m in MAPS else "set"
        label = m.removeprefix("set ")
        if m not in have_el:
            out.append(f"{kind} {label} is missing")
            continue
        if m not in want_el:
            out.append(f"{kind} {label} is extra (the file has no such {kind})")
            continue
        h, w = dict(have_el[m]), dict(want_el[m])
        for k in sorted(w.keys() - h.keys()):
            out.append(f"element {_elem_words(k, w[k])} is missing from {kind} {label}")
        for k in sorted(h.keys() - w.keys()):
            if m in SETS and m.startswith("flush_"):
                out.append(f"set {label} notes a conntrack {'check' if m == 'flush_nat' else 'flush'} still due "
                           f"for {k.replace(' . ', ':')} (an `up` was interrupted before it finished)")
            else:
                out.append(f"element {_elem_words(k, h[k])} in {kind} {label} is extra")
        for k in sorted(h.keys() & w.keys()):
            if h[k] != w[k]:
                out.append(f"element {k} of {kind} {label} maps to {h[k]}, want {w[k]}")
    if not out:
        out.append(f"table {family} {new.table} differs from what this file renders")
    return out


def _elem_words(key: str, value: str) -> str:
    return f"{key} : {value}" if value else key


# ----------------------------------------------------------------------------- read back


def _nfproto(family: str) -> int:
    return NFPROTO_IPV6 if family == FAMILY6 else nftlib.NFPROTO_IPV4


def _list_table(ns: str | None, table: str = TABLE, family: str = FAMILY,
                present: dict | None = None) -> list[dict] | None:
    """The objects of ``nft -j list table ip <table>`` in `ns`, or None if no such table.
    `present`: the tables of `family` there, when the caller has dumped them already."""
    if present is None and nftlib.in_process():
        present = nftlib.tables(ns, _nfproto(family))
    if present is not None and check_table(table) not in present:
        return None
    flagged = getattr(present, "flagged", None)  # nftlib.Tables: the dump just made
    listed = netfilter.read_nft_list(ns, "table", family, check_table(table),
                                     unflagged=flagged is not None and check_table(table) not in flagged)
    if present is not None and listed.error is None:
        # nft < 1.0.8 lists no table comment in JSON: the dump just made has it
        for o in listed.objs:
            if "table" in o and "comment" not in o["table"] and present.get(table) is not None:
                o["table"]["comment"] = present[table]
    if listed.error is not None:
        # Tell "no such table" from real failures by asking, not by error text.
        if not _table_exists(ns, table, family):
            return None
        msg = " | ".join(listed.error.splitlines()[:3]) or "no output"
        where = f" in namespace {ns}" if ns else ""
        raise KernelError(f"nft -j list table {family} {table}{where} failed: {msg}")
    return [o for o in listed.objs if "metainfo" not in o]


def _table_exists(ns: str | None, table: str = TABLE, family: str = FAMILY) -> bool:
    """Whether `ns` has table ``ip <table>`` (asks by listing, not by error text)."""
    if nftlib.in_process():
        present = nftlib.tables(ns, _nfproto(family))
        if present is not None:
            return table in present
    listed = netfilter.read_nft_list(ns, "tables", family)
    if listed.error is not None:
        raise KernelError(f"nft -j list tables {family}: {listed.error}")
    return any(name == table for _, name in listed.tables())


def _table_comment_from_text(ns: str | None, table: str = TABLE, family: str = FAMILY) -> str | None:
    # nft < 1.0.8 has no table comment in JSON output; the kernel's table
    # dump has it (in-process), and so has the text listing.
    if nftlib.in_process():
        present = nftlib.tables(ns, _nfproto(family))
        if present is not None and table in present:
            return present[table]
    proc = nftlib.run(ns, ["nft", "-t", "list", "table", family, table])
    for line in proc.stdout.splitlines():
        m = re.fullmatch(r'\tcomment "(.*)"', line)
        if m:
            return m.group(1)
        if line.startswith("\t") and not line.startswith("\tcomment"):
            break  # the table's comment comes before its chains, sets, ...
    return None


def _rule_texts(ns: str | None, table: str, family: str = FAMILY) -> dict[int, str]:
    """Rule handle -> the rule as nft prints it (for counters' display)."""
    proc = nftlib.run(ns, ["nft", "-a", "list", "table", family, table], check=False)
    out = {}
    for line in proc.stdout.splitlines():
        m = re.fullmatch(r"\t\t(.*) # handle (\d+)", line)
        if m:
            text = re.sub(r"counter packets \d+ bytes \d+", "counter", m.group(1))
            out[int(m.group(2))] = text
    return out


def _observed_key(ns: str | None, table: str, family: str, present: dict | None, raw: bool = True) -> NftKey | None:
    """The key of table `family` `table` in `ns` as the kernel holds it, or None if there is
    no such table. `present`: the tables of `family` there (nftlib.Tables), when a dump has
    just been made; then the table is read raw over nfnetlink (kernel/nftread.py, ~10x
    cheaper than libnftables' listing), and through libnftables' JSON where the raw
    reading holds something `_key_from_raw` can't name, or without `raw`."""
    table = check_table(table)
    if present is not None and table not in present:
        return None
    if raw and present is not None:
        got = nftread.read_table(ns, _nfproto(family), table)
        key = _key_from_raw(got, table, present.get(table)) if got is not None else None
        if key is not None:
            return key
    objs = _list_table(ns, table, family, present=present)
    return None if objs is None else _key_from_json(ns, objs, table, family)


#: nft's names of the ip/ip6 hooks and of the base chains' policies
_HOOKS = {0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting"}
_POLICIES = {0: "drop", 1: "accept"}
#: nft's datatypes (key and data types of sets), by id: bytes -> the text JSON lists
_TYPE_IPV4, _TYPE_IPV6, _TYPE_SERVICE, _TYPE_BITS = 7, 8, 13, 6
_PLAIN_TYPES = {
    _TYPE_IPV4: (4, lambda b: socket.inet_ntop(socket.AF_INET, b)),
    _TYPE_IPV6: (16, lambda b: socket.inet_ntop(socket.AF_INET6, b)),
    _TYPE_SERVICE: (2, lambda b: str(int.from_bytes(b, "big"))),
}


def _decoder(dtype: int, length: int):
    """A function from an element's bytes to the text nft's JSON lists for them (for
    ``ipv4_addr``, ``ipv6_addr``, ``inet_service`` and concatenations of them), or None."""
    parts = []
    while dtype:
        parts.insert(0, dtype & ((1 << _TYPE_BITS) - 1))
        dtype >>= _TYPE_BITS
    if not parts or any(p not in _PLAIN_TYPES for p in parts):
        return None
    if len(parts) == 1:
        size, fn = _PLAIN_TYPES[parts[0]]
        return (lambda b: fn(b)) if size == length else None
    # a concatenation: each field in a slot of a multiple of 4 bytes
    slots, off = [], 0
    for p in parts:
        size, fn = _PLAIN_TYPES[p]
        slots.append((off, size, fn))
        off += (size + 3) & ~3
    if off != length:
        return None
    return lambda b: " . ".join(fn(b[o:o + n]) for o, n, fn in slots)


def _key_from_raw(raw: nftread.RawTable, table: str, comment: str | None) -> NftKey | None:
    """The canonical key of a table read raw: the very key `_key_from_json` makes of nft's
    JSON listing of it, or None where the table holds what this can't name (a hook, a
    policy or an element type of its own, interval or catch-all elements, verdict or
    object maps): the caller then reads the table through libnftables."""
    chains = []
    for c in raw.chains:
        if c.hooknum is None:
            chains.append(NftChain(c.name, None, None, None, None))
            continue
        if c.hooknum not in _HOOKS or c.policy not in _POLICIES or c.type is None or c.prio is None:
            return None
        chains.append(NftChain(c.name, c.type, _HOOKS[c.hooknum], c.prio, _POLICIES[c.policy]))
    rules: dict[str, list] = {}
    for chain, rule_comment in raw.rules:
        rules.setdefault(chain, []).append((chain, rule_comment))
    maps = {}
    for st in raw.sets:
        if st.flags & ~_PLAIN_SET_FLAGS:
            return None
        key = _decoder(st.key_type, st.key_len)
        is_map = bool(st.flags & nftread.NFT_SET_MAP)
        data = _decoder(st.data_type or 0, st.data_len or 0) if is_map else None
        if key is None or (is_map and data is None):
            return None
        pairs = []
        for k, v, eflags, has_end in st.elements:
            if eflags or has_end or (is_map and v is None):
                return None
            pairs.append((key(k), data(v) if is_map else ""))
        name = st.name if is_map or st.name in SETS else "set " + st.name
        maps[name] = tuple(sorted(pairs))
    ordered_rules = tuple(r for name in sorted(rules) for r in rules[name])
    return NftKey(table, comment, tuple(sorted(chains)), ordered_rules, tuple(sorted(maps.items())))


#: set flags a raw reading understands: constant, map, timeout, dynamic (eval), concat,
#: with expressions (a counter per element); not interval, object or anonymous
_PLAIN_SET_FLAGS = 0x2 | nftread.NFT_SET_MAP | 0x10 | 0x20 | 0x80 | 0x100


def _elem_text(v) -> str:
    if isinstance(v, dict) and "elem" in v:  # an element with its counter: {"elem": {"val": ..., "counter": ...}}
        return _elem_text(v["elem"].get("val"))
    if isinstance(v, dict) and "concat" in v:
        return " . ".join(str(x) for x in v["concat"])
    return str(v)


def _key_from_json(ns: str | None, objs: list[dict], table: str = TABLE, family: str = FAMILY) -> NftKey:
    """The canonical key of a listed table (see the layout above)."""
    tbl = next((o["table"] for o in objs if "table" in o), {})
    comment = tbl["comment"] if "comment" in tbl else _table_comment_from_text(ns, table, family)
    chains, rules, maps = [], {}, {}
    for obj in objs:
        if "chain" in obj:
            c = obj["chain"]
            chains.append(NftChain(c["name"], c.get("type"), c.get("hook"), c.get("prio"), c.get("policy")))
        elif "rule" in obj:
            r = obj["rule"]
            rules.setdefault(r["chain"], []).append((r["chain"], r.get("comment")))
        elif "map" in obj:
            m = obj["map"]
            pairs = []
            for e in m.get("elem", []):
                if isinstance(e, list) and len(e) == 2:
                    pairs.append((_elem_text(e[0]), _elem_text(e[1])))
                else:
                    pairs.append((json.dumps(e, sort_keys=True), ""))
            maps[m["name"]] = tuple(sorted(pairs))
        elif "set" in obj:
            st = obj["set"]
            name = st["name"] if st["name"] in SETS else "set " + st["name"]
            maps[name] = tuple(sorted((_elem_text(e), "") for e in st.get("elem", [])))
    ordered_rules = tuple(r for name in sorted(rules) for r in rules[name])
    return NftKey(table, comment, tuple(sorted(chains)), ordered_rules, tuple(sorted(maps.items())))

"""Read a namespace's netfilter rules and evaluate them against one packet.

`doctor` needs to know, from the configuration alone, whether a hook would
drop a packet (and which rule or chain policy does it) and whether a
postrouting NAT chain rewrites its source. This module reads every rule
a namespace holds, whatever wrote it:

* native nftables tables: `nft -j list ruleset` (structure) and
  `nft -a list ruleset` (each rule's text, by handle);
* iptables-nft tables (ip filter/nat/mangle/raw/security as written by
  iptables-nft): `iptables-nft-save`, because nft shows their xt matches and
  targets without arguments;
* iptables-legacy tables: `iptables-legacy-save`, run only when the
  namespace already has legacy tables (/proc/net/ip_tables_names is read
  first, so no table is instantiated by looking).

The reading itself (running the tools, parsing their JSON and text) is
natns.kernel.netfilter's, the one reader of rules; this module turns what
it read into `Chain`s (netfilter's chain type) of `Rule`s with matchers that answer True,
False or None (not understood) for a `Packet`. Evaluation follows the
kernel's order: base chains of a hook by priority; accept ends a base chain,
drop/reject ends the packet; jump/goto/return as in the tools. A rule whose
matches cannot all be decided is skipped, and remembered when it would drop.

Only reads: nothing here changes a ruleset.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from ..kernel import netfilter
from ..kernel.netfilter import IPT_PRIORITY, IPT_TYPE, Chain

Tri = bool | None
Matcher = Callable[["Packet"], Tri]

PROTO_NUM = {"icmp": 1, "tcp": 6, "udp": 17}
ICMP_TYPES = {"echo-reply": 0, "destination-unreachable": 3, "echo-request": 8, "time-exceeded": 11,
              # ICMPv6's own names (nft's), numbered apart: a v6 echo is matched by its name as above
              "packet-too-big": 1002, "parameter-problem": 1004, "nd-router-solicit": 1133,
              "nd-router-advert": 1134, "nd-neighbor-solicit": 1135, "nd-neighbor-advert": 1136,
              "nd-redirect": 1137, "mld-listener-query": 1130, "mld-listener-report": 1131,
              "mld-listener-done": 1132, "mld2-listener-report": 1143,
              # ip6tables' names of the same (it saves numbers; a rule is written either way)
              "router-solicitation": 1133, "router-advertisement": 1134, "neighbour-solicitation": 1135,
              "neighbour-advertisement": 1136, "neighbor-solicitation": 1135, "neighbor-advertisement": 1136}
TERMINAL = ("accept", "drop", "reject", "masquerade", "snat", "dnat", "redirect")
DROPS = ("drop", "reject")
#: Verdicts of a rule that, when doctor cannot tell whether it matches, could let the packet
#: through a hook that then drops it ("vmap": a verdict map, "unknown": a target it does not know).
PASSING = ("accept", "return", "jump", "goto", "vmap", "unknown", "masquerade", "snat", "dnat", "redirect")


def _unknown(why: str) -> Matcher:
    """A matcher doctor cannot evaluate: always None (not known), never False; `why` names it."""
    def f(pkt: "Packet") -> Tri:
        return None
    f.why = why  # type: ignore[attr-defined]
    return f


@dataclass
class AddrTypes:
    """The address types of one namespace's local routing table, for `-m addrtype` and
    nft ``fib daddr type``: its local addresses (those of its links, and 127.0.0.0/8) and
    the broadcast addresses of its subnets."""

    local: frozenset[str] = frozenset()
    broadcast: frozenset[str] = frozenset()

    @classmethod
    def of_view(cls, view) -> "AddrTypes":
        """From an explain.path.NsView (its links' addresses)."""
        local, bcast = set(), {"255.255.255.255"}
        for lk in view.links.values():
            for a, plen in lk.addresses:
                local.add(a)
                if plen < 31:
                    bcast.add(str(ipaddress.IPv4Interface(f"{a}/{plen}").network.broadcast_address))
        return cls(frozenset(local), frozenset(bcast))

    def type_of(self, addr: str) -> str:
        """local | broadcast | multicast | unicast, as the kernel's route type of `addr`."""
        ip = ipaddress.ip_address(addr)
        if addr in self.local or ip in ipaddress.ip_network("127.0.0.0/8"):
            return "local"
        if addr in self.broadcast:
            return "broadcast"
        if ip.is_multicast:
            return "multicast"
        return "unicast"


@dataclass
class Packet:
    """The packet to evaluate, as the hook sees it."""

    saddr: str
    daddr: str
    proto: str = "icmp"          # icmp | tcp | udp
    sport: int | None = None
    dport: int | None = None
    icmp_type: str | None = "echo-request"
    iif: str | None = None       # None: no input interface (output, postrouting of local packets)
    oif: str | None = None       # None: not routed yet (prerouting, input)
    ct_state: str = "new"        # new | established
    ct_status: frozenset = frozenset()  # conntrack status bits that are set: "snat", "dnat", ...

    @property
    def v6(self) -> bool:
        """An IPv6 packet (ICMP then means ICMPv6): only ip6 and inet chains see it."""
        return ":" in self.saddr or ":" in self.daddr


@dataclass
class Rule:
    """One rule, with its text as its own tool prints it."""

    source: str           # "nftables" | "iptables-nft" | "iptables-legacy"
    family: str
    table: str
    chain: str
    text: str
    handle: int | None = None
    position: int = 0     # 1-based position in its chain
    matches: list[Matcher] = field(default_factory=list)
    verdict: str | None = None  # see TERMINAL, "jump", "goto", "return", "vmap", "unknown", None (continue)
    target: str | None = None   # jump/goto chain; snat/dnat address
    target_port: int | None = None  # snat/dnat port (`dnat to 192.0.2.11:80`, `--to-destination a:p`)
    argv: list[str] | None = None  # iptables: the rule's words after "-A CHAIN"
    # nft `snat to ip saddr map @m`, `dnat ip to ip daddr . tcp dport map @m`: the packet fields
    # that form the key, and key -> value (an address, or (address, port) for concatenations)
    target_map: dict | None = None
    target_key: tuple[str, ...] | None = None
    # nft `ct state vmap { established : accept, ... }`: (does the key match this element?,
    # verdict, jump/goto target) per element, in order; verdict is "vmap" then
    vmap: list[tuple[Matcher, str, str | None]] | None = None

    def nat_rewrite(self, pkt: Packet) -> tuple[str | None, int | None]:
        """(address, port) a snat/dnat rule translates `pkt` to (None: masquerade, unknown, keep)."""
        if self.target_map is not None and self.target_key:
            key = tuple(getattr(pkt, f) for f in self.target_key)
            value = self.target_map.get(key[0] if len(key) == 1 else key)
            if isinstance(value, tuple):
                return value[0], value[1]
            return value, None
        return self.target, self.target_port

    def nat_target(self, pkt: Packet) -> str | None:
        """The address a snat/dnat rule translates `pkt` to (None: masquerade or unknown)."""
        return self.nat_rewrite(pkt)[0]

    def match(self, pkt: Packet) -> Tri:
        result: Tri = True
        for m in self.matches:
            r = m(pkt)
            if r is False:
                return False
            if r is None:
                result = None
        return result

    def decide(self, pkt: Packet) -> tuple[Tri, str | None, str | None]:
        """(matches?, verdict, target) for `pkt`: a verdict map gives the verdict of the element
        the packet's key matches (no element: the rule does not match, as in the kernel)."""
        m = self.match(pkt)
        if m is False or self.vmap is None:
            return m, self.verdict, self.target
        unsure = False
        for elem, verdict, target in self.vmap:
            r = elem(pkt)
            if r is True:
                return m, verdict, target
            if r is None:
                unsure = True
        return (None if unsure else False), self.verdict, None

    def unknown_parts(self) -> list[str]:
        """What of this rule doctor could not evaluate (the expressions or options), in words."""
        out = [getattr(m, "why", "an expression") for m in self.matches if getattr(m, "why", None)]
        if self.verdict == "unknown":
            out.append(f"the target {self.target or '?'}")
        for elem, _, _ in self.vmap or ():
            if getattr(elem, "why", None):
                out.append(elem.why)
        return list(dict.fromkeys(out)) or ["an expression"]

    def where(self) -> str:
        if self.source == "nftables":
            return f"table {self.family} {self.table} chain {self.chain}"
        return f"{self.source} table {self.table} chain {self.chain}"


@dataclass
class Verdict:
    """The outcome of one hook (or one NAT lookup) for a packet.

    "unknown": a rule doctor cannot evaluate (`rule`) comes before what would otherwise
    drop the packet (`then`): whether it is dropped depends on that rule."""

    verdict: str                 # accept | drop | reject | masquerade | snat | dnat | redirect | none | unknown
    rule: Rule | None = None     # the rule that decided (None: a chain policy or nothing); unknown: the rule
    chain: Chain | None = None   # the chain whose rule or policy decided
    maybe: list[Rule] = field(default_factory=list)  # drop rules that might match (not understood)
    then: "Verdict | None" = None  # unknown: the verdict if `rule` does not match

    @property
    def drops(self) -> bool:
        return self.verdict in DROPS

    @property
    def unknown(self) -> bool:
        return self.verdict == "unknown"

    def describe(self) -> str:
        """The rule or chain policy that decided, in words (for a drop: what drops)."""
        if self.unknown and self.rule is not None:
            then = f"; if it does not match, {self.then.describe()} drops it" if self.then else ""
            return (f"rule `{self.rule.text}` ({self.rule.where()}) cannot be evaluated "
                    f"({', '.join(self.rule.unknown_parts())}){then}")
        if self.rule is not None:
            return f"rule `{self.rule.text}` ({self.rule.where()})"
        c = self.chain
        if c is None:
            return f"no rule ({self.verdict})"
        if c.source == "nftables":
            return f"the {c.policy} policy of chain {c.name} in table {c.family} {c.table}"
        return f"the {(c.policy or '').upper()} policy of {c.source} chain {c.name} (table {c.table})"


def _collects(rule: Rule, collect: tuple[str, ...]) -> bool:
    """Whether an undecided `rule` could give one of the verdicts in `collect`."""
    if rule.verdict == "vmap":
        return any(v in collect or (v in ("jump", "goto") and collect != DROPS) for _, v, _ in rule.vmap or ())
    return rule.verdict in collect or (rule.verdict in ("jump", "goto") and collect != DROPS)


@dataclass
class Firewall:
    """Every rule of one namespace, from every tool that wrote some."""

    ns: str
    chains: dict[tuple[str, str, str, str], Chain] = field(default_factory=dict)
    nft_tables: list[str] = field(default_factory=list)       # native nftables tables, "family name"
    iptables_nft_tables: list[str] = field(default_factory=list)
    legacy_tables: list[str] = field(default_factory=list)    # legacy tables holding rules or non-accept policies
    legacy_rules: int = 0
    legacy_text: str = ""
    dormant_tables: list[str] = field(default_factory=list)  # nft tables with `flags dormant` (not run)
    problems: list[str] = field(default_factory=list)         # what could not be read
    # the namespace's address types (`-m addrtype`, `fib daddr type`); None: not known
    # (those matches are then not evaluated)
    addrs: AddrTypes | None = None

    def base_chains(self, hook: str, types: tuple[str, ...] = ("filter", "route"),
                    device: str | None = None, v6: bool = False) -> list[Chain]:
        """The base chains the kernel runs at `hook` of IPv4 processing (`v6`: IPv6's: ip6 and
        inet), by priority: not those of a dormant table; for ingress/egress, the netdev (and
        inet) chains on `device`."""
        order = {"iptables-legacy": 0, "iptables-nft": 1, "nftables": 2}
        if hook in ("ingress", "egress"):
            cs = [c for c in self.chains.values() if c.hook == hook and c.type in types and not c.dormant
                  and c.family in ("netdev", "inet") and device is not None and device in c.devices]
        else:
            families = ("ip6", "inet") if v6 else ("ip", "inet")
            cs = [c for c in self.chains.values() if c.hook == hook and c.type in types and not c.dormant
                  and c.family in families]
        return sorted(cs, key=lambda c: (c.prio if c.prio is not None else 0, order.get(c.source, 3)))

    def not_evaluated(self) -> list[str]:
        """The hooked chains doctor does not evaluate (egress, bridge and arp tables), in words."""
        return [f"table {c.family} {c.table} chain {c.name} (hook {c.hook}"
                f"{' device ' + ','.join(c.devices) if c.devices else ''}, policy {c.policy or 'accept'}, "
                f"{len(c.rules)} rule{'s' if len(c.rules) != 1 else ''})"
                for c in self.chains.values()
                if c.hook and not c.dormant and (c.hook == "egress" or c.family in ("bridge", "arp"))]

    def chain(self, ref: Chain, name: str) -> Chain | None:
        return self.chains.get((ref.source, ref.family, ref.table, name))

    def _run(self, chain: Chain, pkt: Packet, maybe: list[Rule], depth: int = 0,
             collect: tuple[str, ...] = DROPS, unsure: list[Rule] | None = None) -> Verdict | None:
        """Evaluate `chain`; a Verdict when a rule decides, None when the chain runs out or returns.

        Rules whose matches cannot be decided are skipped (as if they did not match); those
        that could give a verdict in `collect` (and, when collecting NAT verdicts, jumps into
        chains) go to `maybe`, those that could let the packet pass (accept, return, a jump,
        a verdict map, an unknown target) to `unsure`. A rule that matches with an unknown
        target goes to `unsure` too."""
        if depth > 16:
            return None
        for rule in chain.rules:
            m, v, target = rule.decide(pkt)
            if m is False:
                continue
            if m is None:
                if _collects(rule, collect):
                    maybe.append(rule)
                if unsure is not None and rule.verdict in PASSING:
                    unsure.append(rule)
                continue
            if v in TERMINAL:
                return Verdict(v, rule, chain, maybe)
            if v == "return":
                return None
            if v == "unknown" and unsure is not None:
                unsure.append(rule)
            if v in ("jump", "goto"):
                sub = self.chain(chain, target or "")
                if sub is None:
                    continue
                res = self._run(sub, pkt, maybe, depth + 1, collect, unsure)
                if res is not None:
                    return res
                if v == "goto":
                    return None
        return None

    def evaluate(self, hook: str, pkt: Packet) -> Verdict:
        """What the filter-type base chains of `hook` do with `pkt`.

        A drop that a rule doctor cannot evaluate comes before (one that could accept the
        packet, return, jump or map it to a verdict) is not certain: the verdict is then
        "unknown", naming that rule, with the drop in `then`."""
        maybe: list[Rule] = []
        for chain in self.base_chains(hook, device=pkt.iif if hook == "ingress" else pkt.oif, v6=pkt.v6):
            unsure: list[Rule] = []
            res = self._run(chain, pkt, maybe, unsure=unsure)
            if res is None:
                if chain.policy == "drop":
                    return _or_unknown(Verdict("drop", None, chain, maybe), unsure)
                continue
            if res.drops:
                return _or_unknown(res, unsure)
            # accept (or a NAT verdict in a filter chain): this base chain is done
        return Verdict("accept", None, None, maybe)

    def snat(self, pkt: Packet) -> Verdict:
        """The source NAT the postrouting nat chains apply to a new `pkt` ("none" if nothing).

        `maybe` holds the rules before the decision that doctor cannot evaluate for `pkt` and
        that could decide otherwise (NAT, accept, return, jumps): when it is not empty, the
        answer is not certain."""
        maybe: list[Rule] = []
        for chain in self.base_chains("postrouting", ("nat",), v6=pkt.v6):
            res = self._run(chain, pkt, maybe, collect=("masquerade", "snat", "accept", "return"))
            if res is None:
                continue
            if res.verdict in ("masquerade", "snat"):
                return res
            if res.verdict == "accept":
                continue
        return Verdict("none", None, None, maybe)

    def dnat(self, pkt: Packet, hook: str = "prerouting") -> Verdict:
        """The destination NAT the nat chains of `hook` (prerouting, or output for local packets)
        apply to a new `pkt`: verdict "dnat" or "redirect" with the rule, or "none" (`maybe`:
        as for `snat`)."""
        maybe: list[Rule] = []
        for chain in self.base_chains(hook, ("nat",), v6=pkt.v6):
            res = self._run(chain, pkt, maybe, collect=("dnat", "redirect", "accept", "return"))
            if res is None:
                continue
            if res.verdict in ("dnat", "redirect"):
                return res
        return Verdict("none", None, None, maybe)

    def snat_rules(self) -> list[Rule]:
        """Every masquerade/SNAT rule of the namespace."""
        return [r for c in self.chains.values() for r in c.rules if r.verdict in ("masquerade", "snat")]


def _or_unknown(v: Verdict, unsure: list[Rule]) -> Verdict:
    """`v` (a drop), or "unknown" when a rule doctor cannot evaluate could have let the packet pass."""
    if not unsure:
        return v
    return Verdict("unknown", unsure[0], v.chain, v.maybe, then=v)


# --------------------------------------------------------------------------
# Matchers


def _net(text: str) -> ipaddress.IPv4Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _any(results) -> Tri:
    out: Tri = False
    for r in results:
        if r is True:
            return True
        if r is None:
            out = None
    return out


def _as_list(v) -> list:
    return v if isinstance(v, list) else [v]


def _iface_match(name: str | None, pattern: str) -> bool:
    name = name or ""
    if pattern.endswith(("*", "+")):
        return name.startswith(pattern[:-1])
    return name == pattern


def _proto_of(v) -> int | None:
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        return PROTO_NUM.get(v, int(v) if v.isdigit() else None)
    return None


def _icmp_of(v) -> int | None:
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        return ICMP_TYPES.get(v, int(v) if v.isdigit() else None)
    return None


#: ICMPv6 type numbers -> the numbering of ICMP_TYPES (echo and the errors shared with ICMP by name).
_ICMP6_NUM = {128: 8, 129: 0, 1: 3, 3: 11}


def _icmp6_of(v) -> int | None:
    """An ICMPv6 type (a name, or its number as ip6tables and nft sets write it) in ICMP_TYPES' numbering."""
    if isinstance(v, str) and v.isdigit():
        v = int(v)
    if isinstance(v, int):
        return _ICMP6_NUM.get(v, 1000 + v)
    return _icmp_of(v)


def _negate(m: Matcher) -> Matcher:
    def f(pkt: Packet) -> Tri:
        r = m(pkt)
        return None if r is None else not r
    if getattr(m, "why", None):
        f.why = m.why  # type: ignore[attr-defined]
    return f


# Right-hand sides of nft matches: a value, a list (flags / `in`), an anonymous set
# {"set": [...]}, an element with its own counter {"elem": {"val": ...}}, a prefix or a
# range. `scalar(value, item)` compares against one item (a prefix or range included).


def _rhs(value, spec, scalar) -> Tri:
    """Does packet value `value` match nft right-hand side `spec`? None: cannot tell."""
    if isinstance(spec, dict):
        if "set" in spec:
            return _any(_rhs(value, e, scalar) for e in _as_list(spec["set"]))
        if "elem" in spec and isinstance(spec["elem"], dict):
            return _rhs(value, spec["elem"].get("val"), scalar)
        return scalar(value, spec)
    if isinstance(spec, list):
        return _any(_rhs(value, e, scalar) for e in spec)
    if isinstance(spec, str) and spec.startswith("@"):
        return None  # a named set that could not be read
    return scalar(value, spec)


def _addr_scalar(value: str, spec) -> Tri:
    ip = ipaddress.ip_address(value)
    if isinstance(spec, str):
        n = _net(spec)
        return None if n is None else ip in n
    if isinstance(spec, dict) and "prefix" in spec:
        n = _net(f"{spec['prefix']['addr']}/{spec['prefix']['len']}")
        return None if n is None else ip in n
    if isinstance(spec, dict) and "range" in spec:
        try:
            lo, hi = spec["range"]
            return ipaddress.ip_address(lo) <= ip <= ipaddress.ip_address(hi)
        except (TypeError, ValueError):
            return None
    return None


def _num_scalar(conv):
    def f(value, spec) -> Tri:
        if value is None:
            return False
        try:
            if isinstance(spec, dict) and "range" in spec:
                lo, hi = (conv(x) for x in spec["range"])
                return None if lo is None or hi is None else lo <= value <= hi
            if isinstance(spec, dict):
                return None
            v = conv(spec)
            return None if v is None else value == v
        except (TypeError, ValueError):
            return None
    return f


def _iface_scalar(value, spec) -> Tri:
    return _iface_match(value, spec) if isinstance(spec, str) else None


def _word_scalar(value, spec) -> Tri:
    return value == spec if isinstance(spec, str) else None


def _bit_scalar(value, spec) -> Tri:
    return spec in value if isinstance(spec, str) else None


def _addr_in(value: str, spec) -> Tri:
    """Does address `value` fall into an nft right-hand side `spec`?"""
    return _rhs(value, spec, _addr_scalar)


def _value_in(value, spec, conv=lambda x: x) -> Tri:
    """Does scalar `value` match an nft right-hand side (scalar, set, range)?"""
    return _rhs(value, spec, _num_scalar(conv))


# --------------------------------------------------------------------------
# nftables (JSON)

#: A packet value doctor does not know (the match is then not evaluated).
_NOT_KNOWN = object()


def _expr_words(e) -> str:
    """An nft expression (the left side of a match) in nft's words, for saying what is not evaluated."""
    if not isinstance(e, dict) or not e:
        return str(e)
    key, v = next(iter(e.items()))
    v = v if isinstance(v, dict) else {}
    if key == "payload":
        return f"{v.get('protocol', 'raw')} {v.get('field', 'payload')}"
    if key in ("meta", "ct"):
        return f"{key} {v.get('key')}"
    if key == "fib":
        return f"fib {' . '.join(v.get('flags') or [])} {v.get('result')}"
    if key == "concat":
        return " . ".join(_expr_words(x) for x in (e["concat"] or []))
    return key


def _nft_left(left, fw: "Firewall | None"):
    """(dependencies, getter, scalar) for the left side of an nft match, or None if doctor
    cannot evaluate it. The getter gives the packet's value (_NOT_KNOWN: not known)."""
    if not isinstance(left, dict):
        return None
    if "payload" in left:
        p = left["payload"]
        proto, fld = p.get("protocol"), p.get("field")
        if proto in ("ip", "ip6") and fld in ("saddr", "daddr"):
            return [], (lambda pkt, f=fld: getattr(pkt, f)), _addr_scalar
        if (proto, fld) in (("ip", "protocol"), ("ip6", "nexthdr")):
            return [], (lambda pkt: PROTO_NUM.get(pkt.proto)), _num_scalar(_proto_of)
        if proto in ("tcp", "udp", "th") and fld in ("sport", "dport"):
            dep = ((lambda pkt, pr=proto: pkt.proto == pr) if proto != "th"
                   else (lambda pkt: pkt.proto in ("tcp", "udp")))
            return [dep], (lambda pkt, f=fld: getattr(pkt, f)), _num_scalar(int)
        if proto in ("icmp", "icmpv6") and fld == "type":
            v6 = proto == "icmpv6"
            return ([lambda pkt, v6=v6: pkt.proto == "icmp" and pkt.v6 == v6], (lambda pkt: _icmp_of(pkt.icmp_type)),
                    _num_scalar(_icmp6_of if v6 else _icmp_of))
        return None
    if "meta" in left:
        key = left["meta"].get("key")
        if key in ("iifname", "oifname", "iif", "oif"):
            attr = "iif" if key.startswith("i") else "oif"
            return [], (lambda pkt, a=attr: getattr(pkt, a)), _iface_scalar
        if key == "l4proto":
            return [], (lambda pkt: PROTO_NUM.get(pkt.proto)), _num_scalar(_proto_of)
        if key == "nfproto":
            return [], (lambda pkt: "ipv6" if pkt.v6 else "ipv4"), _word_scalar
        if key == "protocol":
            return [], (lambda pkt: "ip6" if pkt.v6 else "ip"), _word_scalar
        return None
    if "ct" in left:
        key = left["ct"].get("key")
        if key == "state":
            return [], (lambda pkt: pkt.ct_state), _word_scalar
        if key == "status":
            return [], (lambda pkt: pkt.ct_status), _bit_scalar
        if key == "direction":
            return [], (lambda pkt: "original" if pkt.ct_state == "new" else "reply"), _word_scalar
        return None
    if "fib" in left:
        f = left["fib"]
        flags = f.get("flags") or []
        if f.get("result") == "type" and flags in (["daddr"], ["saddr"]):
            attr = flags[0]

            def get(pkt, a=attr):
                return _NOT_KNOWN if fw is None or fw.addrs is None else fw.addrs.type_of(getattr(pkt, a))
            return [], get, _word_scalar
        return None
    return None


def _resolve_set(right, sets: dict[str, list]):
    """A named set reference ("@name") as the anonymous set of its elements, when it was read."""
    if isinstance(right, str) and right.startswith("@") and right[1:] in sets:
        return {"set": sets[right[1:]]}
    return right


def _nft_match(expr: dict, sets: dict[str, list], fw: "Firewall | None" = None) -> list[Matcher]:
    """Matchers for one nft `match` expression (a payload dependency adds a protocol check)."""
    op = expr.get("op", "==")
    left, right = expr.get("left"), _resolve_set(expr.get("right"), sets)
    lv = _nft_left(left, fw)
    if lv is None:
        return [_unknown(f"`{_expr_words(left)}`")]
    if isinstance(right, str) and right.startswith("@"):
        return [_unknown(f"the named set {right} (not readable)")]
    deps, get, scalar = lv

    def m(pkt: Packet) -> Tri:
        v = get(pkt)
        return None if v is _NOT_KNOWN else _rhs(v, right, scalar)
    if op == "!=":
        m = _negate(m)
    elif op not in ("==", "in"):
        return [_unknown(f"`{_expr_words(left)} {op}`")]
    return deps + [m]


def _verdict_of(obj) -> tuple[str, str | None] | None:
    """{"accept": null} / {"jump": {"target": "x"}} -> ("accept", None) / ("jump", "x")."""
    if not isinstance(obj, dict) or not obj:
        return None
    key, v = next(iter(obj.items()))
    if key in ("accept", "drop", "reject", "return", "continue"):
        return ("continue" if key == "continue" else key), None
    if key in ("jump", "goto") and isinstance(v, dict):
        return key, v.get("target")
    return None


def _nft_vmap(rule: Rule, val: dict, sets: dict, maps: dict, fw: "Firewall | None") -> None:
    """`KEY vmap { k : verdict, ... }` (or `vmap @name`): the verdict of the element KEY matches."""
    key, data = val.get("key"), val.get("data")
    if isinstance(data, str) and data.startswith("@"):
        elems = maps.get(data[1:])
        if elems is None:
            rule.verdict = "vmap"
            rule.vmap = []
            rule.matches.append(_unknown(f"the verdict map {data} (not readable)"))
            return
    else:
        elems = (data or {}).get("set", []) if isinstance(data, dict) else []
    lv = _nft_left(key, fw)
    rule.verdict, rule.vmap = "vmap", []
    if lv is not None:
        rule.matches += lv[0]
    for e in elems:
        if not (isinstance(e, (list, tuple)) and len(e) == 2):
            continue
        k, vobj = e
        vt = _verdict_of(vobj)
        if vt is None:
            vt = ("unknown", None)
        if lv is None:
            elem: Matcher = _unknown(f"`{_expr_words(key)}` (the key of a verdict map)")
        else:
            _, get, scalar = lv

            def elem(pkt, k=k, get=get, scalar=scalar) -> Tri:
                v = get(pkt)
                return None if v is _NOT_KNOWN else _rhs(v, _resolve_set(k, sets), scalar)
        v, t = vt
        rule.vmap.append((elem, None if v == "continue" else v, t))


#: nft statements that don't end the rule's evaluation or change whether it matches.
_NFT_STATEMENTS = ("counter", "log", "limit", "mangle", "notrack", "meta", "ct", "set", "map", "dup",
                   "secmark", "flow", "synproxy")


def _nft_rule(obj: dict, sets: dict, text: str, maps: dict | None = None, fw: "Firewall | None" = None) -> Rule:
    rule = Rule("nftables", obj["family"], obj["table"], obj["chain"], text, handle=obj.get("handle"))
    maps = maps or {}
    for e in obj.get("expr", []):
        if not isinstance(e, dict) or not e:
            continue
        key = next(iter(e))
        val = e[key]
        if key == "match":
            rule.matches += _nft_match(val, sets, fw)
        elif key in ("accept", "drop", "return", "masquerade"):
            rule.verdict = key
        elif key == "reject":
            rule.verdict = "reject"
        elif key in ("jump", "goto"):
            rule.verdict, rule.target = key, val.get("target")
        elif key == "vmap":
            _nft_vmap(rule, val, sets, maps, fw)
        elif key in ("snat", "dnat", "redirect"):
            _nft_nat(rule, key, val, maps)
        elif key == "quota":
            rule.matches.append(_unknown("`quota`"))
        elif key in _NFT_STATEMENTS:
            continue  # a single probe is under any `limit rate`
        elif key == "xt":
            name = val.get("name") if isinstance(val, dict) else None
            if isinstance(val, dict) and val.get("type") == "target":
                rule.verdict, rule.target = "unknown", name
            else:
                rule.matches.append(_unknown(f"the iptables extension `{name or '?'}` (nft shows no options)"))
        elif key in ("queue", "fwd", "tproxy"):
            rule.verdict, rule.target = "unknown", key
        else:
            rule.matches.append(_unknown(f"`{key}`"))
    return rule


def _map_key_fields(mkey) -> tuple[list[str], list[str]] | None:
    """The packet fields of an nft map key (ip saddr/daddr, tcp/udp sport/dport) and the
    protocols the key implies; None if the key holds anything else."""
    parts = mkey["concat"] if isinstance(mkey, dict) and "concat" in mkey else [mkey]
    fields, protos = [], []
    for part in parts:
        pl = part.get("payload", {}) if isinstance(part, dict) else {}
        proto, fld = pl.get("protocol"), pl.get("field")
        if proto == "ip" and fld in ("saddr", "daddr"):
            fields.append(fld)
        elif proto in ("tcp", "udp") and fld in ("sport", "dport"):
            fields.append(fld)
            protos.append(proto)
        else:
            return None
    return fields, protos


def _map_value(v):
    """A map key or value from nft JSON: "a.b.c.d", 80, or {"concat": [...]} -> str/int/tuple
    (a key with its own counter comes as {"elem": {"val": ..., "counter": ...}})."""
    if isinstance(v, dict) and "elem" in v:
        return _map_value(v["elem"].get("val"))
    if isinstance(v, dict) and "concat" in v:
        return tuple(_map_value(x) for x in v["concat"])
    return v if isinstance(v, int) else str(v)


def _nft_nat(rule: Rule, key: str, val, maps: dict) -> None:
    """The snat/dnat/redirect statement of an nft rule: its target, or the map it looks up."""
    val = val if isinstance(val, dict) else {}
    addr, port = val.get("addr"), val.get("port")
    if isinstance(addr, dict) and "range" in addr:
        addr = addr["range"][0]
    if isinstance(port, dict) and "range" in port:
        port = port["range"][0]
    rule.verdict, rule.target = key, addr if isinstance(addr, str) else None
    rule.target_port = port if isinstance(port, int) else None
    if isinstance(addr, dict) and "map" in addr:
        mkey, data = addr["map"].get("key"), addr["map"].get("data")
        name = data[1:] if isinstance(data, str) and data.startswith("@") else None
        shape = _map_key_fields(mkey)
        if shape is None or name not in maps:
            rule.matches.append(_unknown(f"the NAT map {data or '?'}"))
            return
        fields, protos = shape
        table = {}
        for k, v in maps[name]:
            k, v = _map_value(k), _map_value(v)
            table[k] = v
        rule.target_map, rule.target_key = table, tuple(fields)
        # a key with tcp/udp ports holds only for that protocol (nft adds the dependency);
        # a failed map lookup ends the rule without a verdict (the next rule is tried)
        for pr in protos:
            rule.matches.append(lambda pkt, pr=pr: pkt.proto == pr)

        def found(pkt, t=table, f=tuple(fields)):
            k = tuple(getattr(pkt, x) for x in f)
            return (k[0] if len(k) == 1 else k) in t
        rule.matches.append(found)
    elif addr is not None and not isinstance(addr, str):
        rule.matches.append(_unknown(f"the {key} address expression"))


def _nft_texts(listing: str) -> dict[tuple[str, str, int], str]:
    """(family table, chain, handle) -> rule text, from `nft -a list ruleset`."""
    return netfilter.nft_rule_texts(listing)


def read_nft(fw: Firewall, json_text: str, listing: str, skip: set[tuple[str, str]]) -> None:
    """Add the native nftables chains (tables not in `skip`) to `fw`."""
    try:
        rs = netfilter.parse_nft_json(json_text)
    except ValueError as exc:
        fw.problems.append(f"nft -j list ruleset: {exc}")
        return
    rs.listing = listing
    _add_nft(fw, rs, skip)


def _add_nft(fw: Firewall, rs: netfilter.NftRuleset, skip: set[tuple[str, str]]) -> None:
    texts = rs.rule_texts()
    sets = rs.sets()
    maps = rs.sets("map")
    positions: dict[tuple, int] = {}
    read = {c.key: c for c in rs.chains()}  # with the devices and dormant flags of the listing
    dormant = rs.dormant_tables()
    for o in rs.objs:
        if "table" in o:
            t = o["table"]
            if (t["family"], t["name"]) not in skip:
                fw.nft_tables.append(f"{t['family']} {t['name']}")
                if (t["family"], t["name"]) in dormant:
                    fw.dormant_tables.append(f"{t['family']} {t['name']}")
        elif "chain" in o:
            c = o["chain"]
            if (c["family"], c["table"]) in skip:
                continue
            key = (c["family"], c["table"], c["name"])
            fw.chains[("nftables", *key)] = read[key]
        elif "rule" in o:
            r = o["rule"]
            if (r["family"], r["table"]) in skip:
                continue
            chain = fw.chains.get(("nftables", r["family"], r["table"], r["chain"]))
            if chain is None:
                continue
            text = texts.get((f"{r['family']} {r['table']}", r["chain"], r.get("handle")), "")
            rule = _nft_rule(r, sets.get((r["family"], r["table"]), {}), text, maps.get((r["family"], r["table"]), {}),
                             fw)
            key = (r["family"], r["table"], r["chain"])
            positions[key] = positions.get(key, 0) + 1
            rule.position = positions[key]
            chain.rules.append(rule)


def hook_info(json_text: str) -> dict[tuple[str, str], tuple[str | None, int | None, str | None]]:
    """(table, chain) -> (hook, prio, type) of the ip-family chains in `nft -j` output."""
    try:
        return netfilter.parse_nft_json(json_text).hook_info("ip")
    except ValueError:
        return {}


# --------------------------------------------------------------------------
# iptables (iptables-save text)


def _ipt_addr(spec: str) -> ipaddress.IPv4Network | None:
    if "/" in spec:
        a, m = spec.split("/", 1)
        if "." in m:
            try:
                m = str(ipaddress.IPv4Network(f"0.0.0.0/{m}").prefixlen)
            except ValueError:
                return None
        spec = f"{a}/{m}"
    return _net(spec)


def _ipt_ports(spec: str) -> list[tuple[int, int]] | None:
    out = []
    try:
        for part in spec.split(","):
            if ":" in part:
                lo, hi = part.split(":", 1)
                out.append((int(lo or 0), int(hi or 65535)))
            else:
                out.append((int(part), int(part)))
    except ValueError:
        return None
    return out


def _ipt_nat_target(spec: str) -> tuple[str | None, int | None]:
    """`--to-destination 192.0.2.11:80` (or `a-b:p-q`) -> the first address and port."""
    addr, _, ports = spec.partition(":")
    addr = addr.split("-")[0] or None
    first = ports.split("-")[0]
    return addr, int(first) if first.isdigit() else None


#: iptables matches (-m NAME) whose options parse_ipt_rule evaluates.
_IPT_MATCHES = ("tcp", "udp", "icmp", "icmp6", "comment", "conntrack", "state", "multiport", "addrtype", "limit")
#: iptables targets that don't end the rule's chain (the packet goes on to the next rule).
_IPT_NONTERMINAL = ("LOG", "NFLOG", "ULOG", "MARK", "CONNMARK", "TRACE", "CT", "NOTRACK", "TCPMSS", "CHECKSUM",
                    "CLASSIFY", "DSCP", "TOS", "TTL", "SET", "AUDIT", "SECMARK", "CONNSECMARK", "IDLETIMER",
                    "HMARK", "TEE")


def _addrtype(fw: "Firewall | None", attr: str, types: str) -> Matcher:
    """`-m addrtype --dst-type LOCAL` (or --src-type; types comma-separated), against the
    namespace's address types."""
    want = {t.lower() for t in types.split(",")}

    def f(pkt: Packet) -> Tri:
        if fw is None or fw.addrs is None:
            return None
        return fw.addrs.type_of(getattr(pkt, attr)) in want
    if fw is None or fw.addrs is None:
        f.why = f"`-m addrtype --{attr[0]}st-type {types}` (the namespace's addresses are not known)"
    return f


def parse_ipt_rule(words: list[str], fw: "Firewall | None" = None
                   ) -> tuple[list[Matcher], str | None, str | None]:
    """Matchers, verdict and target of one iptables rule (the words after -A CHAIN).

    `fw` (the namespace's Firewall) gives `-m addrtype` the namespace's addresses.
    An option this reader does not know makes a matcher that answers None (not known)."""
    matches: list[Matcher] = []
    verdict = target = None
    neg = False
    i = 0
    module = None

    def add(m: Matcher) -> None:
        nonlocal neg
        matches.append(_negate(m) if neg else m)
        neg = False

    while i < len(words):
        w = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if w == "!":
            neg = True
            i += 1
            continue
        if w in ("-s", "--source", "-d", "--destination"):
            n = _ipt_addr(nxt)
            attr = "saddr" if w in ("-s", "--source") else "daddr"
            add((lambda pkt, n=n, a=attr: ipaddress.ip_address(getattr(pkt, a)) in n) if n
                else _unknown(f"`{w} {nxt}`"))
            i += 2
        elif w in ("-i", "--in-interface", "-o", "--out-interface"):
            attr = "iif" if w in ("-i", "--in-interface") else "oif"
            add(lambda pkt, p=nxt, a=attr: _iface_match(getattr(pkt, a), p))
            i += 2
        elif w in ("-p", "--protocol"):
            if nxt == "all":
                i += 2
                neg = False
                continue
            if nxt in ("ipv6-icmp", "icmpv6", "58"):  # ip6tables: ICMPv6 (the packet's "icmp" in a v6 flow)
                add(lambda pkt: pkt.proto == "icmp" and pkt.v6)
                i += 2
                neg = False
                continue
            num = _proto_of(nxt)
            add((lambda pkt, n=num: PROTO_NUM.get(pkt.proto) == n) if num is not None else _unknown(f"`-p {nxt}`"))
            i += 2
        elif w in ("-m", "--match"):
            module = nxt
            if nxt not in _IPT_MATCHES:
                matches.append(_unknown(f"`-m {nxt}`"))
            i += 2
        elif w in ("--dport", "--destination-port", "--sport", "--source-port", "--dports", "--sports",
                   "--destination-ports", "--source-ports"):
            rng = _ipt_ports(nxt)
            attr = "dport" if "dport" in w or "destination" in w else "sport"
            add((lambda pkt, r=rng, a=attr: getattr(pkt, a) is not None
                 and any(lo <= getattr(pkt, a) <= hi for lo, hi in r)) if rng else _unknown(f"`{w} {nxt}`"))
            i += 2
        elif w in ("--icmp-type", "--icmpv6-type"):
            t = (_icmp6_of if w == "--icmpv6-type" else _icmp_of)(nxt.split("/")[0])
            add((lambda pkt, t=t: pkt.proto == "icmp" and _icmp_of(pkt.icmp_type) == t)
                if t is not None else _unknown(f"`{w} {nxt}`"))
            i += 2
        elif w in ("--ctstate", "--state"):
            # --ctstate takes states (NEW, ESTABLISHED, ...) and the NAT pseudo-states SNAT and
            # DNAT (a status bit of the connection); the rule matches if any of them holds
            words_ = {s.lower() for s in nxt.split(",")}
            status = words_ & {"snat", "dnat"}
            add(lambda pkt, s=words_ - status, st=status: pkt.ct_state in s or any(x in pkt.ct_status for x in st))
            i += 2
        elif w in ("--dst-type", "--src-type") and module == "addrtype":
            add(_addrtype(fw, "daddr" if w == "--dst-type" else "saddr", nxt))
            i += 2
        elif w == "--comment" or (w in ("--limit", "--limit-burst") and module == "limit"):
            i += 2  # a comment; a rate limit (a single probe is under any rate)
        elif w in ("-j", "--jump", "-g", "--goto"):
            t = nxt
            rest = words[i + 2:]
            if w in ("-g", "--goto"):
                verdict, target = "goto", t
            elif t in ("ACCEPT", "DROP", "REJECT", "RETURN", "MASQUERADE", "SNAT", "DNAT", "REDIRECT"):
                verdict = t.lower()
                if t in ("SNAT", "DNAT"):
                    for j, x in enumerate(rest):
                        if x in ("--to-source", "--to-destination", "--to") and j + 1 < len(rest):
                            target = rest[j + 1]  # address[-address][:port[-port]]; split by the caller
            elif t in _IPT_NONTERMINAL:
                verdict = None
            elif t.isupper():
                verdict, target = "unknown", t  # an extension, or a user chain (DOCKER-USER): the caller knows
            else:
                verdict, target = "jump", t
            break
        else:
            # an option this reader does not know, with its arguments (up to the next option)
            args = []
            while i + 1 + len(args) < len(words) and not words[i + 1 + len(args)].startswith(("-", "!")):
                args.append(words[i + 1 + len(args)])
            if module in _IPT_MATCHES or module is None:  # (an unknown -m is already not known)
                matches.append(_unknown(f"`{' '.join([w, *args])}`"))
            neg = False
            i += 1 + len(args)
    return matches, verdict, target


def read_iptables_save(fw: Firewall, text: str, source: str,
                       hooks: dict[tuple[str, str], tuple] | None = None, family: str = "ip") -> list[str]:
    """Add the chains of an iptables-save dump (`family` "ip6": ip6tables-save's) to `fw`;
    returns the table names seen."""
    return _add_save(fw, netfilter.parse_save(text), source, hooks, family)


def _add_save(fw: Firewall, save: netfilter.Save, source: str,
              hooks: dict[tuple[str, str], tuple] | None = None, family: str = "ip") -> list[str]:
    """Add the chains of `save` (an iptables-save dump; `family` "ip6": ip6tables-save's)."""
    fw.problems += [f"{source}: {p}" for p in save.problems]
    by_table: dict[str, list[netfilter.SavedRule]] = {}
    for r in save.rules:
        by_table.setdefault(r.table, []).append(r)
    for table in save.tables:
        for (t, name), sc in save.chains.items():
            if t != table:
                continue
            hook, prio, ctype = netfilter.ipt_base_chain(table, name)
            if hooks and (table, name) in hooks:
                h = hooks[(table, name)]
                hook, prio, ctype = h[0] or hook, h[1] if h[1] is not None else prio, h[2] or ctype
            fw.chains[(source, family, table, name)] = Chain(
                family, table, name, hook, prio, ctype, sc.policy.lower() if sc.policy else None, source=source)
        for r in by_table.get(table, []):
            chain = fw.chains.get((source, family, table, r.chain))
            if chain is None:
                chain = fw.chains[(source, family, table, r.chain)] = Chain(family, table, r.chain, source=source)
            words = list(r.args)
            matches, verdict, target = parse_ipt_rule(words, fw)
            if verdict == "unknown" and (source, family, table, target) in fw.chains:
                verdict = "jump"  # a chain named in capitals, as Docker's and Kubernetes' are
            port = None
            if verdict in ("snat", "dnat") and target:
                target, port = _ipt_nat_target(target)
            chain.rules.append(Rule(source, family, table, r.chain, r.line, position=r.position,
                                    matches=matches, verdict=verdict, target=target, target_port=port,
                                    argv=words))
    return list(save.tables)


# --------------------------------------------------------------------------
# Reading a namespace


def ipt_tool(source: str) -> str:
    """The command that edits rules of `source` ("iptables-nft" / "iptables-legacy"):
    plain `iptables` when that is the machine's default, else the explicit one."""
    flavour = "legacy" if source == "iptables-legacy" else "nft"
    return "iptables" if flavour == (netfilter.iptables_flavour() or "nft") else f"iptables-{flavour}"


def assemble(ns: str | None, rs: netfilter.NftRuleset | None, iptables_nft: str | None,
             iptables_legacy: str | None, addrs: AddrTypes | None = None,
             ip6tables_nft: str | None = None) -> Firewall:
    """One namespace's Firewall from what its tools printed: `rs` (``nft -j list ruleset``,
    with `listing`, ``nft -a list ruleset``, for the rule texts), the text of
    ``iptables-nft-save`` and of ``iptables-legacy-save`` (None: not run), its address
    types, and ``ip6tables-nft-save``'s text (IPv6, read into family "ip6"). The one composition, for the kernel (read_firewall) and the fake.

    Each ip table is read as what it is (netfilter.iptables_nft_tables decides): a table
    iptables-nft-save prints is iptables-nft's, read from its text (nft's JSON shows xt
    matches without their options); one it calls incompatible -- a native ``table ip
    nat`` -- and every other table (inet ones, ip tables of other names) are read from
    nft's JSON."""
    fw = Firewall(ns, addrs=addrs)
    skip: set[tuple[str, str]] = set()
    if iptables_nft and iptables_nft.strip():
        save = netfilter.parse_save(iptables_nft)
        mine = netfilter.iptables_nft_tables(save, rs)
        save.tables = [t for t in save.tables if t in mine]
        names = _add_save(fw, save, "iptables-nft", rs.hook_info("ip") if rs is not None else None)
        fw.iptables_nft_tables = [f"ip {t}" for t in names]
        skip = {("ip", t) for t in names}
    if ip6tables_nft and ip6tables_nft.strip():
        save = netfilter.parse_save(ip6tables_nft)
        save.tables = netfilter.iptables_nft_tables(save, rs)
        names = _add_save(fw, save, "iptables-nft", rs.hook_info("ip6") if rs is not None else None, family="ip6")
        fw.iptables_nft_tables += [f"ip6 {t}" for t in names]
        skip |= {("ip6", t) for t in names}
    if rs is not None:
        _add_nft(fw, rs, skip)
    if iptables_legacy is not None:
        fw.legacy_text = iptables_legacy
        before = set(fw.chains)
        _add_save(fw, netfilter.parse_save(iptables_legacy), "iptables-legacy")
        for key in set(fw.chains) - before:
            c = fw.chains[key]
            fw.legacy_rules += len(c.rules)
            if (c.rules or (c.policy not in (None, "accept"))) and c.table not in fw.legacy_tables:
                fw.legacy_tables.append(c.table)
    return fw


def read_addr_types(ns: str | None) -> AddrTypes | None:
    """The address types of namespace `ns` (None: the one natns runs in), read over netlink;
    None if they can't be read."""
    from .path import read_ns  # the one reader of a namespace's links and addresses

    try:
        return AddrTypes.of_view(read_ns(ns))
    except OSError:
        return None


def _save_text(ns: str | None, flavour: str, problems: list[str]) -> str | None:
    """The output of the iptables-save of `flavour` in `ns`, or None (why, in `problems`)."""
    tool = netfilter.SAVE_TOOL[flavour]
    try:
        proc = netfilter.run_save(ns, flavour)
    except OSError as exc:
        problems.append(f"{tool}: {exc}")
        return None
    if proc.returncode != 0:
        problems.append(f"{tool}: {(proc.stderr or proc.stdout).strip()[:200]}")
        return None
    return proc.stdout


def read_firewall(ns: str | None, addrs: AddrTypes | None = None) -> Firewall:
    """Every IPv4 and IPv6 netfilter rule in namespace `ns` (None: the one natns runs in;
    read-only): nftables (every family), iptables-nft and ip6tables-nft, iptables-legacy.

    `addrs`: the namespace's address types when the caller has read its addresses
    (else they are read here)."""
    problems: list[str] = []
    try:
        rs = netfilter.read_nft(ns, texts=True)
    except OSError as exc:  # nft not installed
        fw = Firewall(ns)
        fw.problems.append(f"nft: {exc}")
        return fw
    if rs.error is not None:
        problems.append(f"nft -j list ruleset: {rs.error}")
    ipt_text = _save_text(ns, "nft", problems) if rs.tables() else None
    leg_text = _save_text(ns, "legacy", problems) if netfilter.legacy_tables(ns) else None
    ip6_text = _save_text(ns, "nft6", problems) if any(f == "ip6" for f, _ in rs.tables()) else None
    fw = assemble(ns, rs, ipt_text, leg_text, addrs if addrs is not None else read_addr_types(ns),
                  ip6tables_nft=ip6_text)
    fw.problems = problems + fw.problems
    return fw


__all__ = [
    "AddrTypes",
    "Chain",
    "Firewall",
    "Packet",
    "Rule",
    "Verdict",
    "assemble",
    "ipt_tool",
    "parse_ipt_rule",
    "read_addr_types",
    "read_firewall",
    "read_iptables_save",
    "read_nft",
]

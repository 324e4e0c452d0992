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
    verdict: str | None = None  # see TERMINAL, "jump", "goto", "return", "unknown", None (continue)
    target: str | None = None   # jump/goto chain; snat/dnat address
    target_port: int | None = None  # snat/dnat port (`dnat to 192.0.2.11:80`, `--to-destination a:p`)
    argv: list[str] | None = None  # iptables: the rule's words after "-A CHAIN"
    # nft `snat to ip saddr map @m`, `dnat ip to ip daddr . tcp dport map @m`: the packet fields
    # that form the key, and key -> value (an address, or (address, port) for concatenations)
    target_map: dict | None = None
    target_key: tuple[str, ...] | None = None

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

    def where(self) -> str:
        if self.source == "nftables":
            return f"table {self.family} {self.table} chain {self.chain}"
        return f"{self.source} table {self.table} chain {self.chain}"


@dataclass
class Verdict:
    """The outcome of one hook (or one NAT lookup) for a packet."""

    verdict: str                 # accept | drop | reject | masquerade | snat | none
    rule: Rule | None = None     # the rule that decided (None: a chain policy or nothing)
    chain: Chain | None = None   # the chain whose rule or policy decided
    maybe: list[Rule] = field(default_factory=list)  # drop rules that might match (not understood)

    @property
    def drops(self) -> bool:
        return self.verdict in ("drop", "reject")

    def describe(self) -> str:
        """The rule or chain policy that decided, in words (for a drop: what drops)."""
        if self.rule is not None:
            return f"rule `{self.rule.text}` ({self.rule.where()})"
        c = self.chain
        if c is None:
            return f"no rule ({self.verdict})"
        if c.source == "nftables":
            return f"the {c.policy} policy of chain {c.name} in table {c.family} {c.table}"
        return f"the {(c.policy or '').upper()} policy of {c.source} chain {c.name} (table {c.table})"


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
    problems: list[str] = field(default_factory=list)         # what could not be read

    def base_chains(self, hook: str, types: tuple[str, ...] = ("filter", "route"), v6: bool = False) -> list[Chain]:
        """The base chains of `hook` that see an IPv4 packet (`v6`: an IPv6 one: ip6 and inet)."""
        order = {"iptables-legacy": 0, "iptables-nft": 1, "nftables": 2}
        families = ("ip6", "inet") if v6 else ("ip", "inet")
        cs = [c for c in self.chains.values() if c.hook == hook and c.type in types
              and c.family in families]
        return sorted(cs, key=lambda c: (c.prio if c.prio is not None else 0, order.get(c.source, 3)))

    def chain(self, ref: Chain, name: str) -> Chain | None:
        return self.chains.get((ref.source, ref.family, ref.table, name))

    def _run(self, chain: Chain, pkt: Packet, maybe: list[Rule], depth: int = 0,
             collect: tuple[str, ...] = ("drop", "reject")) -> Verdict | None:
        """Evaluate `chain`; a Verdict when a rule decides, None when the chain runs out or returns.

        Rules whose matches cannot be decided are skipped; those with a verdict in `collect`
        (and, when collecting NAT verdicts, jumps into chains) go to `maybe`."""
        if depth > 16:
            return None
        for rule in chain.rules:
            m = rule.match(pkt)
            if m is False:
                continue
            if m is None:
                if rule.verdict in collect or (rule.verdict in ("jump", "goto") and collect != ("drop", "reject")):
                    maybe.append(rule)
                continue
            v = rule.verdict
            if v in TERMINAL:
                return Verdict(v, rule, chain, maybe)
            if v == "return":
                return None
            if v in ("jump", "goto"):
                sub = self.chain(chain, rule.target or "")
                if sub is None:
                    continue
                res = self._run(sub, pkt, maybe, depth + 1, collect)
                if res is not None:
                    return res
                if v == "goto":
                    return None
        return None

    def evaluate(self, hook: str, pkt: Packet) -> Verdict:
        """What the filter-type base chains of `hook` do with `pkt`."""
        maybe: list[Rule] = []
        for chain in self.base_chains(hook, v6=pkt.v6):
            res = self._run(chain, pkt, maybe)
            if res is None:
                if chain.policy == "drop":
                    return Verdict("drop", None, chain, maybe)
                continue
            if res.drops:
                return res
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


# --------------------------------------------------------------------------
# Matchers


def _net(text: str) -> ipaddress.IPv4Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _addr_in(value: str, spec) -> Tri:
    """Does address `value` fall into an nft right-hand side `spec`?"""
    ip = ipaddress.ip_address(value)
    if isinstance(spec, str):
        if spec.startswith("@"):
            return None
        n = _net(spec)
        return None if n is None else ip in n
    if isinstance(spec, dict):
        if "prefix" in spec:
            n = _net(f"{spec['prefix']['addr']}/{spec['prefix']['len']}")
            return None if n is None else ip in n
        if "range" in spec:
            lo, hi = spec["range"]
            try:
                return ipaddress.ip_address(lo) <= ip <= ipaddress.ip_address(hi)
            except ValueError:
                return None
        if "set" in spec:
            return _any(_addr_in(value, e) for e in _as_list(spec["set"]))
        return None
    if isinstance(spec, list):
        return _any(_addr_in(value, e) for e in spec)
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


def _value_in(value, spec, conv=lambda x: x) -> Tri:
    """Does scalar `value` match an nft right-hand side (scalar, set, range)?"""
    if value is None:
        return False
    if isinstance(spec, dict):
        if "set" in spec:
            return _any(_value_in(value, e, conv) for e in _as_list(spec["set"]))
        if "range" in spec:
            try:
                lo, hi = (conv(x) for x in spec["range"])
                return lo <= value <= hi
            except (TypeError, ValueError):
                return None
        return None
    if isinstance(spec, list):
        return _any(_value_in(value, e, conv) for e in spec)
    if isinstance(spec, str) and spec.startswith("@"):
        return None
    try:
        return value == conv(spec)
    except (TypeError, ValueError):
        return None


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
    return f


# --------------------------------------------------------------------------
# nftables (JSON)


def _nft_match(expr: dict, sets: dict[str, list]) -> list[Matcher]:
    """Matchers for one nft `match` expression (a payload dependency adds a protocol check)."""
    op = expr.get("op", "==")
    left, right = expr.get("left"), expr.get("right")
    if isinstance(right, str) and right.startswith("@") and right[1:] in sets:
        right = {"set": sets[right[1:]]}
    out: list[Matcher] = []
    m: Matcher | None = None
    if isinstance(left, dict) and "payload" in left:
        p = left["payload"]
        proto, fld = p.get("protocol"), p.get("field")
        if proto in ("ip", "ip6") and fld in ("saddr", "daddr"):
            m = lambda pkt, f=fld: _addr_in(getattr(pkt, f), right)
        elif (proto, fld) in (("ip", "protocol"), ("ip6", "nexthdr")):
            m = lambda pkt: _value_in(PROTO_NUM.get(pkt.proto), right, _proto_of)
        elif proto in ("tcp", "udp", "th") and fld in ("sport", "dport"):
            if proto != "th":
                out.append(lambda pkt, pr=proto: pkt.proto == pr)
            else:
                out.append(lambda pkt: pkt.proto in ("tcp", "udp"))
            m = lambda pkt, f=fld: _value_in(getattr(pkt, f), right, int)
        elif proto in ("icmp", "icmpv6") and fld == "type":
            out.append(lambda pkt, v6=proto == "icmpv6": pkt.proto == "icmp" and pkt.v6 == v6)
            conv = _icmp6_of if proto == "icmpv6" else _icmp_of
            m = lambda pkt, conv=conv: _value_in(_icmp_of(pkt.icmp_type), right, conv)
    elif isinstance(left, dict) and "meta" in left:
        key = left["meta"].get("key")
        if key in ("iifname", "oifname", "iif", "oif"):
            attr = "iif" if key.startswith("i") else "oif"

            def m(pkt, attr=attr):
                name = getattr(pkt, attr)
                pats = [e for e in _as_list(right["set"] if isinstance(right, dict) and "set" in right else right)]
                if not all(isinstance(x, str) for x in pats):
                    return None
                return any(_iface_match(name, x) for x in pats)
        elif key == "l4proto":
            m = lambda pkt: _value_in(PROTO_NUM.get(pkt.proto), right, _proto_of)
        elif key in ("nfproto", "protocol"):
            m = lambda pkt: _value_in(("ipv6" if pkt.v6 else "ipv4") if key == "nfproto"
                                      else ("ip6" if pkt.v6 else "ip"), right)
    elif isinstance(left, dict) and "ct" in left:
        key = left["ct"].get("key")
        if key == "state":
            m = lambda pkt: pkt.ct_state in [str(x) for x in _as_list(right)]
        elif key == "status":
            m = lambda pkt: any(str(x) in pkt.ct_status for x in _as_list(right))
        elif key == "direction":
            m = lambda pkt: (("original" if pkt.ct_state == "new" else "reply")
                             in [str(x) for x in _as_list(right)])
    if m is None:
        return [lambda pkt: None]
    if op == "!=":
        m = _negate(m)
    elif op not in ("==", "in"):
        return [lambda pkt: None]
    return out + [m]


def _nft_rule(obj: dict, sets: dict, text: str, maps: dict | None = None) -> Rule:
    rule = Rule("nftables", obj["family"], obj["table"], obj["chain"], text, handle=obj.get("handle"))
    maps = maps or {}
    for e in obj.get("expr", []):
        if not isinstance(e, dict) or not e:
            continue
        key = next(iter(e))
        val = e[key]
        if key == "match":
            rule.matches += _nft_match(val, sets)
        elif key in ("accept", "drop", "return", "masquerade"):
            rule.verdict = key
        elif key == "reject":
            rule.verdict = "reject"
        elif key in ("jump", "goto"):
            rule.verdict, rule.target = key, val.get("target")
        elif key in ("snat", "dnat", "redirect"):
            _nft_nat(rule, key, val, maps)
        elif key in ("counter", "log", "limit", "mangle", "notrack", "meta", "ct", "quota", "set", "map"):
            if key == "quota":
                rule.matches.append(lambda pkt: None)
            continue
        elif key in ("xt",):
            rule.verdict = "unknown"
            rule.matches.append(lambda pkt: None)
        else:
            rule.matches.append(lambda pkt: None)
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
            rule.matches.append(lambda pkt: None)
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
        rule.matches.append(lambda pkt: None)


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
    for o in rs.objs:
        if "table" in o:
            t = o["table"]
            if (t["family"], t["name"]) not in skip:
                fw.nft_tables.append(f"{t['family']} {t['name']}")
        elif "chain" in o:
            c = o["chain"]
            if (c["family"], c["table"]) in skip:
                continue
            fw.chains[("nftables", c["family"], c["table"], c["name"])] = Chain(
                c["family"], c["table"], c["name"], c.get("hook"), c.get("prio"), c.get("type"),
                c.get("policy"), source="nftables")
        elif "rule" in o:
            r = o["rule"]
            if (r["family"], r["table"]) in skip:
                continue
            chain = fw.chains.get(("nftables", r["family"], r["table"], r["chain"]))
            if chain is None:
                continue
            text = texts.get((f"{r['family']} {r['table']}", r["chain"], r.get("handle")), "")
            rule = _nft_rule(r, sets.get((r["family"], r["table"]), {}), text, maps.get((r["family"], r["table"]), {}))
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


def parse_ipt_rule(words: list[str]) -> tuple[list[Matcher], str | None, str | None]:
    """Matchers, verdict and target of one iptables rule (the words after -A CHAIN)."""
    matches: list[Matcher] = []
    verdict = target = None
    neg = False
    i = 0

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
            add((lambda pkt, n=n, a=attr: ipaddress.ip_address(getattr(pkt, a)) in n) if n else (lambda pkt: None))
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
            add((lambda pkt, n=num: PROTO_NUM.get(pkt.proto) == n) if num is not None else (lambda pkt: None))
            i += 2
        elif w in ("-m", "--match"):
            if nxt not in ("tcp", "udp", "icmp", "icmp6", "comment", "conntrack", "state", "multiport"):
                matches.append(lambda pkt: None)
            i += 2
        elif w in ("--dport", "--destination-port", "--sport", "--source-port", "--dports", "--sports",
                   "--destination-ports", "--source-ports"):
            rng = _ipt_ports(nxt)
            attr = "dport" if "dport" in w or "destination" in w else "sport"
            add((lambda pkt, r=rng, a=attr: getattr(pkt, a) is not None
                 and any(lo <= getattr(pkt, a) <= hi for lo, hi in r)) if rng else (lambda pkt: None))
            i += 2
        elif w in ("--icmp-type", "--icmpv6-type"):
            t = (_icmp6_of if w == "--icmpv6-type" else _icmp_of)(nxt.split("/")[0])
            add((lambda pkt, t=t: pkt.proto == "icmp" and _icmp_of(pkt.icmp_type) == t)
                if t is not None else (lambda pkt: None))
            i += 2
        elif w in ("--ctstate", "--state"):
            # --ctstate takes states (NEW, ESTABLISHED, ...) and the NAT pseudo-states SNAT and
            # DNAT (a status bit of the connection); the rule matches if any of them holds
            words_ = {s.lower() for s in nxt.split(",")}
            status = words_ & {"snat", "dnat"}
            add(lambda pkt, s=words_ - status, st=status: pkt.ct_state in s or any(x in pkt.ct_status for x in st))
            i += 2
        elif w == "--comment":
            i += 2
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
            elif t in ("LOG", "NFLOG", "MARK", "CONNMARK", "TRACE", "CT", "NOTRACK", "TCPMSS", "CHECKSUM"):
                verdict = None
            elif t.isupper():
                verdict, target = "unknown", t  # an extension, or a user chain (DOCKER-USER): the caller knows
            else:
                verdict, target = "jump", t
            break
        else:
            matches.append(lambda pkt: None)  # an option this reader does not know
            i += 1
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
            matches, verdict, target = parse_ipt_rule(words)
            if verdict == "unknown" and (source, family, table, target) in fw.chains:
                verdict = "jump"  # a chain named in capitals, as Docker's and Kubernetes' are
            elif verdict == "unknown":
                target = None
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


def _add_ip6tables_nft(fw: Firewall, ns: str | None, rs: netfilter.NftRuleset) -> set[tuple[str, str]]:
    """The ip6tables-nft rules of `ns` (natns's IPv6 chains with the iptables backend), read
    as ip6tables-nft-save prints them into family "ip6"; returns the nft tables they are."""
    from ..kernel import nsexec

    try:
        proc = nsexec.run(ns, ["ip6tables-nft-save"], check=False)
    except OSError as exc:
        fw.problems.append(f"ip6tables-nft-save: {exc}")
        return set()
    if proc.returncode != 0:
        fw.problems.append(f"ip6tables-nft-save: {(proc.stderr or proc.stdout).strip()[:200]}")
        return set()
    if not proc.stdout.strip():
        return set()
    names = _add_save(fw, netfilter.parse_save(proc.stdout), "iptables-nft", rs.hook_info("ip6"), family="ip6")
    fw.iptables_nft_tables += [f"ip6 {t}" for t in names]
    return {("ip6", t) for t in names}


def read_firewall(ns: str | None) -> Firewall:
    """Every IPv4 and IPv6 netfilter rule in namespace `ns` (None: the one natns runs in;
    read-only): nftables (every family), iptables-nft and ip6tables-nft, iptables-legacy."""
    fw = Firewall(ns)
    try:
        rs = netfilter.read_nft(ns, texts=True)
    except OSError as exc:  # nft not installed
        fw.problems.append(f"nft: {exc}")
        return fw
    if rs.error is not None:
        fw.problems.append(f"nft -j list ruleset: {rs.error}")
    skip: set[tuple[str, str]] = set()
    if rs.tables():
        try:
            ipt = netfilter.run_save(ns, "nft")
        except OSError as exc:
            ipt = None
            fw.problems.append(f"iptables-nft-save: {exc}")
        if ipt is None:
            pass
        elif ipt.returncode == 0 and ipt.stdout.strip():
            save = netfilter.parse_save(ipt.stdout)
            mine = netfilter.iptables_nft_tables(save, rs)
            save.tables = [t for t in save.tables if t in mine]
            names = _add_save(fw, save, "iptables-nft", rs.hook_info("ip"))
            fw.iptables_nft_tables = [f"ip {t}" for t in names]
            skip = {("ip", t) for t in names}
        elif ipt.returncode != 0:
            fw.problems.append(f"iptables-nft-save: {(ipt.stderr or ipt.stdout).strip()[:200]}")
    if any(fam == "ip6" for fam, _ in rs.tables()):
        skip |= _add_ip6tables_nft(fw, ns, rs)
    _add_nft(fw, rs, skip)
    if netfilter.legacy_tables(ns):
        try:
            leg = netfilter.run_save(ns, "legacy")
        except OSError as exc:
            fw.problems.append(f"iptables-legacy-save: {exc}")
            return fw
        if leg.returncode == 0:
            fw.legacy_text = leg.stdout
            before = set(fw.chains)
            _add_save(fw, netfilter.parse_save(leg.stdout), "iptables-legacy")
            for key in set(fw.chains) - before:
                c = fw.chains[key]
                fw.legacy_rules += len(c.rules)
                if (c.rules or (c.policy not in (None, "accept"))) and c.table not in fw.legacy_tables:
                    fw.legacy_tables.append(c.table)
        else:
            fw.problems.append(f"iptables-legacy-save: {leg.stderr.strip()[:200]}")
    return fw


__all__ = [
    "Chain",
    "Firewall",
    "Packet",
    "Rule",
    "Verdict",
    "ipt_tool",
    "parse_ipt_rule",
    "read_firewall",
    "read_iptables_save",
    "read_nft",
]

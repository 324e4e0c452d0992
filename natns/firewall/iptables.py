"""iptables backend: natns's own chains, reached by jumps from the built-in ones.

What natns writes in a router, as ``iptables-save`` shows it (tables nat and,
with isolation, filter)::

    *nat
    :natns-PREROUTING - [0:0]
    :natns-POSTROUTING - [0:0]
    -A PREROUTING -m comment --comment natns -j natns-PREROUTING
    -A POSTROUTING -m comment --comment natns -j natns-POSTROUTING
    -A natns-PREROUTING -d 198.51.100.50/32 -m comment --comment "natns fip 198.51.100.50" -j DNAT --to-destination 192.0.2.2
    -A natns-POSTROUTING -s 192.0.2.0/24 -o eth0 -m comment --comment "natns snat tenant" -j MASQUERADE
    *filter
    :natns-FORWARD - [0:0]
    -A FORWARD -m comment --comment natns -j natns-FORWARD
    ...

iptables has no maps: every floating IP and every forwarded port is a rule
of its own, so per-packet cost grows with their number and every change
reloads the chains. That is the comparison the nftables backend is measured
against (benchmarks/).

natns owns every chain whose name starts with its scope's prefix (``natns-``
in lab namespaces, ``natnsup-<hex>-`` for one lab's uplink in the host) and
every rule that jumps to one; it never flushes, rewrites or reorders anything
else, and never declares a built-in chain (that would reset its policy and
counters). Loading is one ``iptables-restore --noflush`` run: declare and
flush natns's chains, fill them, delete stale jumps and chains, insert a jump
only if it is missing. Reading back parses ``iptables-save`` into the same
canonical key `render` builds: rules as argument tuples in iptables-save's
own order, counters left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from ..kernel import netfilter, nftlib, nsexec
from ..marks import IPTABLES_PREFIX, SCOPE, iptables_scope_names
from ..state import FirewallIntent
from .base import (
    ND_TYPES,
    Ruleset,
    canonical_address6,
    canonical_source6,
    canonical_address,
    canonical_source,
    check_comment,
    check_iface,
    check_table,
    mapping_order,
    multiset_diff,
    snat_comment,
)

NAME = "iptables"
NFPROTO_IPV6 = 10
PREFIX = IPTABLES_PREFIX
TABLES = ("nat", "filter")

#: One rule: (table, chain, args), args the rule after "-A <chain>" as a tuple of strings.
Rule = tuple[str, str, tuple[str, ...]]


@dataclass(frozen=True)
class IptKey:
    """The canonical content of natns's chains (the Ruleset key of this backend).

    `chains`: natns's chains as (table, name), sorted; `rules`: their rules,
    chain by chain, in order; `jumps`: the rules in other chains that jump to
    a natns chain, by (table, chain). Counters are left out.
    """

    chains: tuple[tuple[str, str], ...]
    rules: tuple[Rule, ...]
    jumps: tuple[Rule, ...]
    #: natns's ip6tables chains, rules and jumps (IPv6 labs, docs/ipv6.md), or None.
    v6: "IptKey | None" = None

    def text(self) -> str:
        """The key as iptables-save lines (natns's part only), table by table; then, for an
        IPv6 lab, its ip6tables-save lines."""
        if self.v6 is None:
            return ruleset_text(self)
        return ruleset_text(replace(self, v6=None)) + "# ip6tables\n" + ruleset_text(self.v6)


_BARE = re.compile(r"[A-Za-z0-9_./:,+=@%!-]+")


def scope_names(scope: str) -> tuple[str, str]:
    """(chain prefix, jump comment) of `scope`.

    Scope ``natns`` (lab namespaces) owns ``natns-*``; scope ``natnsup-<hex>``
    (one lab's uplink in the host) owns ``natnsup-<hex>-*``. Neither prefix
    is a prefix of the other, so scopes never see each other's chains.
    """
    return iptables_scope_names(check_table(scope))


def _chain_name(scope: str, builtin: str) -> str:
    prefix, _ = scope_names(scope)
    return f"{prefix}{builtin}" if scope == SCOPE else f"{prefix}{builtin[:4]}"


def _comment(text: str) -> tuple[str, ...]:
    return ("-m", "comment", "--comment", check_comment(text))


class IptablesBackend:
    """natns's rules as its own chains in iptables tables nat and filter."""

    name = NAME

    def render(self, intent: FirewallIntent) -> Ruleset:
        """The Ruleset natns wants for `intent`: its chains, their rules, the jumps."""
        scope = intent.scope
        _, jump_comment = scope_names(scope)
        chains: dict[tuple[str, str], list[tuple[str, ...]]] = {}

        def chain(table: str, builtin: str) -> list:
            return chains.setdefault((table, builtin), [])

        router = intent.role == "router" and intent.external_iface
        ext = check_iface(intent.external_iface) if intent.external_iface else None
        if router:
            pre = chain("nat", "PREROUTING")
            for f in intent.floating:
                a, h = canonical_address(f.address), canonical_address(f.host)
                pre.append(("-d", f"{a}/32", *_comment(f"natns fip {a}"), "-j", "DNAT", "--to-destination", h))
            for pf in intent.forwards:
                a, to = canonical_address(pf.address), canonical_address(pf.to)
                for outer, inner in pf.pairs():
                    pre.append(("-d", f"{a}/32", "-p", pf.protocol, "-m", pf.protocol, "--dport", str(outer),
                                *_comment(f"natns pf {pf.protocol} {outer}"),
                                "-j", "DNAT", "--to-destination", f"{to}:{inner}"))
            # Conntrack flushes still due for removed mappings (FirewallIntent.flush):
            # rules with no target, which match and do nothing, as notes in the kernel.
            for kind, outside in intent.flush:
                addr, _, port = outside.partition(":")
                match = ("-p", kind, "-m", kind, "--dport", port) if kind not in ("fip", "nat") else ()
                pre.append(("-d", f"{canonical_address(addr)}/32", *match,
                            *_comment(f"natns flush {kind} {outside}")))
        post = chain("nat", "POSTROUTING")
        if router:
            if intent.external_address:
                post.append(("!", "-i", ext, "!", "-o", ext, "-m", "conntrack", "--ctstate", "DNAT",
                             *_comment("natns hairpin"), "-j", "SNAT", "--to-source",
                             canonical_address(intent.external_address)))
            for f in intent.floating:
                a, h = canonical_address(f.address), canonical_address(f.host)
                post.append(("-s", f"{h}/32", "-o", ext, *_comment(f"natns fip out {a}"),
                             "-j", "SNAT", "--to-source", a))
        for r in intent.snat:
            args = ("-s", str(canonical_source(r.source)), *(("!",) if r.out_negate else ()),
                    "-o", check_iface(r.out_iface), "-m", "comment", "--comment", snat_comment(r.network))
            if r.to is None:
                args += ("-j", "MASQUERADE")
            else:
                args += ("-j", "SNAT", "--to-source", canonical_address(r.to))
            post.append(args)
        if router and intent.isolate:
            fwd, inp = chain("filter", "FORWARD"), chain("filter", "INPUT")
            fwd.append(("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", *_comment("natns established"),
                        "-j", "ACCEPT"))
            fwd.append(("-m", "conntrack", "--ctstate", "INVALID", *_comment("natns invalid"), "-j", "DROP"))
            for n in intent.internal:
                spoof = ("!", "-s", str(canonical_source(n.cidr)), "-i", check_iface(n.iface),
                         *_comment(f"natns anti-spoofing {n.name}"), "-j", "DROP")
                fwd.append(spoof)
                inp.append(spoof)
            for n in intent.internal:
                # From outside, no packet has a private source (see nftables.py).
                fwd.append(("-s", str(canonical_source(n.cidr)), "-i", ext,
                            *_comment(f"natns anti-spoofing external {n.name}"), "-j", "DROP"))
            for n in intent.internal:
                fwd.append(("-i", check_iface(n.iface), *_comment(f"natns from {n.name}"), "-j", "ACCEPT"))
            fwd.append(("-m", "conntrack", "--ctstate", "DNAT", *_comment("natns floating ips and port forwards"),
                        "-j", "ACCEPT"))
            _policy_end(fwd, inp, ext, intent.external_address and f"{canonical_address(intent.external_address)}/32")

        key = _key_of(scope, chains)
        if intent.v6:
            key = replace(key, v6=_key_of(scope, _chains6(intent)))
        return Ruleset(NAME, key)

    def observe(self, ns: str | None, scope: str = SCOPE) -> Ruleset | None:
        """natns's chains and jumps of `scope` in `ns` as a Ruleset, or None if it has none."""
        fams = nftlib.tables_by_family(ns) if nftlib.in_process() and netfilter.nft_based() else None
        saved = _save(ns, scope, present=fams)
        saved6 = _save(ns, scope, v6=True, present=fams)
        if not saved.chains and not saved6.chains:
            return None
        key6 = _make_key(saved6.chains, saved6.rules, saved6.jumps) if saved6.chains else None
        return Ruleset(NAME, replace(_make_key(saved.chains, saved.rules, saved.jumps), v6=key6))

    def load(self, ns: str | None, ruleset: Ruleset) -> None:
        """Replace natns's chains and jumps in `ns` with `ruleset`, in one iptables-restore.

        Teardown is `remove`.
        """
        if ruleset.backend != NAME:
            raise ValueError(f"cannot load a {ruleset.backend} ruleset with the iptables backend")
        _load_family(ns, ruleset.key)
        if ruleset.key.v6 is not None:
            _load_family(ns, ruleset.key.v6, v6=True)
        else:
            self._remove_family(ns, _scope_of([c for _, c in ruleset.key.chains]), v6=True)

    def check(self, ns: str | None, ruleset: Ruleset) -> str | None:
        """Whether `ruleset` would load in `ns`: its chains, rules and jumps given to
        ``iptables-restore --noflush --test``, which parses them and asks the kernel for
        every match and target, and commits nothing. None if they would, else its message."""
        if ruleset.backend != NAME:
            raise ValueError(f"cannot check a {ruleset.backend} ruleset with the iptables backend")
        parts = [("iptables-restore", ruleset_text(replace(ruleset.key, v6=None)))]
        if ruleset.key.v6 is not None:
            parts.append(("ip6tables-restore", ruleset_text(ruleset.key.v6)))
        for tool, text in parts:
            proc = nsexec.run(ns, [tool, "-w", "--noflush", "--test"], input=text, check=False)
            if proc.returncode != 0:
                return (proc.stderr or proc.stdout).strip() or f"{tool} --test failed (exit {proc.returncode})"
        return None

    def remove(self, ns: str | None, scope: str = SCOPE) -> None:
        """Delete natns's jumps and chains of `scope` in `ns` (ip6tables' too), only those;
        no error if absent.

        Undoes `load`.
        """
        self._remove_family(ns, scope)
        self._remove_family(ns, scope, v6=True)

    def _remove_family(self, ns: str | None, scope: str, v6: bool = False) -> None:
        cur = _save(ns, scope, v6=v6)
        if not cur.chains and not cur.jumps:
            return
        sections = {}
        for table in TABLES:
            lines = [_line("-D", c, a) for t, c, a in cur.jumps if t == table]
            lines += [f"-F {_quote(c)}" for t, c in cur.chains if t == table]
            lines += [f"-X {_quote(c)}" for t, c in cur.chains if t == table]
            if lines:
                sections[table] = lines
        _restore(ns, sections, v6=v6)
        for table in sections:
            _drop_empty_nft_table(ns, table, v6=v6)

    def element_changes(self, old: Ruleset, new: Ruleset) -> dict | None:
        """Always None: iptables has no maps, every change is a reload."""
        return None

    def mappings(self, ruleset: Ruleset | None) -> set[tuple[str, str, str]]:
        """The inbound mappings a Ruleset holds: (kind, outside, inside), from its DNAT rules."""
        out: set[tuple[str, str, str]] = set()
        if getattr(ruleset, "backend", None) != NAME:
            return out
        for table, c, args in ruleset.key.rules:
            if "--to-destination" not in args or "-d" not in args:
                continue
            outside = args[args.index("-d") + 1].removesuffix("/32")
            inside = args[args.index("--to-destination") + 1]
            if "--dport" in args:
                proto = args[args.index("-p") + 1]
                out.add((proto, f"{outside}:{args[args.index('--dport') + 1]}", inside))
            else:
                out.add(("fip", outside, inside))
        return out

    def pending_flushes(self, ruleset: Ruleset | None) -> set[tuple[str, str]]:
        """The conntrack flushes a Ruleset notes as still due: (kind, outside)."""
        out: set[tuple[str, str]] = set()
        if getattr(ruleset, "backend", None) != NAME:
            return out
        for table, c, args in ruleset.key.rules:
            words = (_comment_of(args) or "").split()
            if len(words) == 4 and words[:2] == ["natns", "flush"] and words[2] in ("fip", "tcp", "udp", "nat"):
                out.add((words[2], words[3]))
        return out

    def describe_drift(self, old: Ruleset | None, new: Ruleset | None) -> list[str]:
        """What differs from natns's chains `old` (found) to `new` (wanted): chains, their
        rules (a rule named by its comment, shown as the iptables line), the jumps (pure)."""
        for rs in (old, new):
            if rs is not None and rs.backend != NAME:
                raise ValueError(f"not an iptables Ruleset: {rs.backend}")
        return drift_lines(old.key if old is not None else None, new.key if new is not None else None)

    def update_elements(self, ns: str | None, scope: str, changes: dict) -> None:  # pragma: no cover
        raise NotImplementedError("iptables has no maps")

    def mapping_counters(self, ns: str | None, scope: str = SCOPE) -> list[dict]:
        """Connections translated per floating IP (in and out) and per forwarded port: the
        counters of the one rule each has here (NAT sees each connection's first packet)."""
        saved = _save(ns, scope, counters=True)
        out = []
        for (table, c, args), (packets, byts) in zip(saved.rules, saved.rule_counters):
            comment = _comment_of(args) or ""

            def arg(flag: str) -> str:
                return args[args.index(flag) + 1] if flag in args else ""
            if comment.startswith("natns fip out "):
                kind, outside, inside = "fip out", arg("--to-source"), arg("-s").removesuffix("/32")
            elif comment.startswith("natns fip "):
                kind, outside, inside = "fip in", arg("-d").removesuffix("/32"), arg("--to-destination")
            elif comment.startswith("natns pf "):
                kind = arg("-p")
                outside, inside = f"{arg('-d').removesuffix('/32')}:{arg('--dport')}", arg("--to-destination")
            else:
                continue
            out.append({"kind": kind, "outside": outside, "inside": inside, "packets": packets, "bytes": byts})
        return sorted(out, key=mapping_order)

    def counters(self, ns: str | None, scope: str = SCOPE) -> list[dict]:
        """Packet and byte counts of each rule in natns's chains (empty if none), then in its
        ip6tables chains (those rows marked ``"family": 6``)."""
        out = []
        for v6 in (False, True):
            saved = _save(ns, scope, counters=True, v6=v6)
            for (table, c, args), (packets, byts) in zip(saved.rules, saved.rule_counters):
                out.append({
                    "chain": c,
                    "rule": _line("-A", c, args),
                    "comment": _comment_of(args),
                    "packets": packets,
                    "bytes": byts,
                } | ({"family": 6} if v6 else {}))
        return out


BACKEND = IptablesBackend()


def _load_family(ns: str | None, key: IptKey, v6: bool = False) -> None:
    """Replace natns's chains and jumps of one family in `ns` with `key`'s, in one
    iptables-restore (ip6tables-restore with `v6`)."""
    chains, rules, jumps = _split_key(key)
    scope = _scope_of([c for _, c in chains])
    prefix = scope_names(scope)[0]
    for _, c in chains:
        if not c.startswith(prefix):
            raise ValueError(f"chain {c!r} is not natns's (no {prefix} prefix)")
    for table, c, _ in rules:
        if (table, c) not in chains:
            raise ValueError(f"rule for undeclared chain {c!r}")
    for table, c, args in jumps:
        if c.startswith(prefix) or (table, netfilter.jump_target(args)) not in chains:
            raise ValueError(f"jump {c} {' '.join(args)} does not enter a natns chain")
    cur = _save(ns, scope, v6=v6)
    sections = {}
    for table in TABLES:
        want = [c for t, c in chains if t == table]
        stale = [c for t, c in cur.chains if t == table and c not in want]
        lines = []
        for c in want:
            # --noflush keeps other chains; declaring a chain flushes it
            # (iptables-nft) and the explicit -F makes that true everywhere.
            lines += [f":{_quote(c)} - [0:0]", f"-F {_quote(c)}"]
        lines += [f"-F {_quote(c)}" for c in stale]
        missing = [(c, a) for t, c, a in jumps if t == table]
        for t, c, a in cur.jumps:
            if t != table:
                continue
            if (c, a) in missing:
                missing.remove((c, a))  # already there: leave it in place
            else:
                lines.append(_line("-D", c, a))
        lines += [_line("-A", c, a) for t, c, a in rules if t == table]
        lines += [_line("-I", c, a, pos=1) for c, a in reversed(missing)]
        lines += [f"-X {_quote(c)}" for c in stale]
        if lines:
            sections[table] = lines
    _restore(ns, sections, v6=v6)


def _key_of(scope: str, chains: dict) -> IptKey:
    """The key of natns's chains {(table, builtin): [args, ...]} of `scope`, with their jumps."""
    _, jump_comment = scope_names(scope)
    names, rules, jumps = [], [], []
    for (table, builtin), args_list in chains.items():
        name = _chain_name(scope, builtin)
        names.append((table, name))
        rules += [(table, name, a) for a in args_list]
        jumps.append((table, builtin, ("-m", "comment", "--comment", jump_comment, "-j", name)))
    return _make_key(names, rules, jumps)


def _icmp6(kind: int) -> tuple[str, ...]:
    return ("-p", "ipv6-icmp", "-m", "icmp6", "--icmpv6-type", str(kind))


def _chains6(intent: FirewallIntent) -> dict:
    """natns's ip6tables chains for `intent` (docs/ipv6.md; the same policy as nftables.py's
    ip6 table): NAT66 when asked; with isolation, forward default-deny but outbound,
    replies, ingress and packet-too-big, and on input neighbour discovery, anti-spoofing
    and nothing answering from outside."""
    chains: dict[tuple[str, str], list[tuple[str, ...]]] = {}
    ext = check_iface(intent.external_iface) if intent.external_iface else None
    post = chains.setdefault(("nat", "POSTROUTING"), [])
    for r in intent.snat6:
        post.append(("-s", str(canonical_source6(r.source)), *(("!",) if r.out_negate else ()), "-o", check_iface(r.out_iface),
                     *_comment(f"natns snat6 {r.network}"), "-j", "MASQUERADE"))
    if intent.role != "router" or not intent.isolate or not ext:
        return chains
    fwd = chains.setdefault(("filter", "FORWARD"), [])
    inp = chains.setdefault(("filter", "INPUT"), [])
    ptb = (*_icmp6(2), *_comment("natns packet too big"), "-j", "ACCEPT")
    fwd.append(("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", *_comment("natns established"),
                "-j", "ACCEPT"))
    fwd.append(ptb)
    fwd.append(("-m", "conntrack", "--ctstate", "INVALID", *_comment("natns invalid"), "-j", "DROP"))
    inp += [(*_icmp6(t), *_comment("natns neighbour discovery"), "-j", "ACCEPT") for t in ND_TYPES]
    inp.append(ptb)
    for n in intent.internal6:
        cidr, iface = str(canonical_source6(n.cidr)), check_iface(n.iface)
        fwd.append(("!", "-s", cidr, "-i", iface, *_comment(f"natns anti-spoofing6 {n.name}"), "-j", "DROP"))
        inp.append(("-s", "fe80::/10", "-i", iface, *_comment(f"natns link-local {n.name}"), "-j", "ACCEPT"))
        inp.append(("!", "-s", cidr, "-i", iface, *_comment(f"natns anti-spoofing6 {n.name}"), "-j", "DROP"))
    for n in intent.internal6:
        fwd.append(("-s", str(canonical_source6(n.cidr)), "-i", ext,
                    *_comment(f"natns anti-spoofing6 external {n.name}"), "-j", "DROP"))
    for n in intent.internal6:
        fwd.append(("-i", check_iface(n.iface), *_comment(f"natns from {n.name}"), "-j", "ACCEPT"))
    opened: list[str] = []
    for g in intent.ingress6:
        to = canonical_address6(g.to)
        ports = str(g.port) if g.port == g.port_end else f"{g.port}:{g.port_end}"
        fwd.append(("-d", f"{to}/128", "-i", ext, "-p", g.protocol, "-m", g.protocol, "--dport", ports,
                    "-m", "conntrack", "--ctstate", "NEW", *_comment(f"natns ingress {g.protocol} {to} {ports}"),
                    "-j", "ACCEPT"))
        if to not in opened:
            opened.append(to)
    for to in opened:
        fwd.append(("-d", f"{to}/128", "-i", ext, *_icmp6(128), *_comment(f"natns ingress echo {to}"),
                    "-j", "ACCEPT"))
    _policy_end(fwd, inp, ext, intent.external_address6 and f"{canonical_address6(intent.external_address6)}/128")
    return chains


def _policy_end(fwd: list, inp: list, ext: str, external: str | None) -> None:
    """What ends a router's filter policy in both families: forward drops the rest; input
    refuses new connections to the external address (`external`, with its prefix length)
    and takes only replies from outside."""
    fwd.append((*_comment("natns dropped by policy"), "-j", "DROP"))
    if external:
        inp.append(("-d", external, "-m", "conntrack",
                    "--ctstate", "NEW", *_comment("natns external address no services"), "-j", "DROP"))
    inp.append(("-i", ext, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
                *_comment("natns external replies"), "-j", "ACCEPT"))
    inp.append(("-i", ext, *_comment("natns external no services"), "-j", "DROP"))


def ruleset_text(key: IptKey) -> str:
    """`key` as iptables-save lines (natns's part only), table by table."""
    chains, rules, jumps = _split_key(key)
    out = []
    for table in TABLES:
        tc = [c for t, c in chains if t == table]
        if not tc:
            continue
        out.append("*" + table)
        out += [f":{_quote(c)} - [0:0]" for c in tc]
        out += [_line("-A", c, a) for t, c, a in jumps if t == table]
        out += [_line("-A", c, a) for t, c, a in rules if t == table]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def drift_lines(old: IptKey | None, new: IptKey | None, tool: str = "") -> list[str]:
    """`IptablesBackend.describe_drift` on keys: one sentence per difference (ip6tables'
    after iptables', prefixed ``ip6tables:``)."""
    if old == new:
        return []
    if not tool and (old is not None or new is not None):
        six = drift_lines(old.v6 if old is not None else None, new.v6 if new is not None else None, "ip6tables: ")
        if old is not None and new is not None and six:
            return drift_lines(replace(old, v6=None), replace(new, v6=None)) + six
    return [tool + line for line in _drift_lines(old, new)]


def _drift_lines(old: IptKey | None, new: IptKey | None) -> list[str]:
    if old == new:
        return []
    if old is None:
        return [f"natns's chains are missing: " + ", ".join(f"{c} (table {t})" for t, c in new.chains)]
    if new is None:
        return ["natns's chains are there (" + ", ".join(c for _, c in old.chains)
                + "), but the file wants no natns rules here"]
    out = []
    have_rules = lambda key, tc: [a for t, c, a in key.rules if (t, c) == tc]  # noqa: E731
    for t, c in new.chains:
        if (t, c) not in old.chains:
            out.append(f"chain {c} (table {t}) is missing with its {len(have_rules(new, (t, c)))} rule(s)")
    for t, c in old.chains:
        if (t, c) not in new.chains:
            out.append(f"chain {c} (table {t}) is extra (the file has no such chain), "
                       f"with {len(have_rules(old, (t, c)))} rule(s)")
    for t, c in new.chains:
        if (t, c) not in old.chains:
            continue
        have, want = have_rules(old, (t, c)), have_rules(new, (t, c))
        missing, extra = multiset_diff(have, want)
        for args in list(missing):
            comment = _comment_of(args)
            twin = next((e for e in extra if comment is not None and _comment_of(e) == comment), None)
            if twin is not None:
                extra.remove(twin)
                out.append(f'rule "{comment}" in {t} {c} changed: it is `{_line("-A", c, twin)}`, '
                           f'want `{_line("-A", c, args)}`')
            else:
                named = f'rule "{comment}"' if comment else "rule"
                out.append(f"{named} is missing from {t} {c} (`{_line('-A', c, args)}`)")
        for args in extra:
            comment = _comment_of(args) or ""
            words = comment.split()
            if len(words) == 4 and words[:2] == ["natns", "flush"]:
                out.append(f"{t} {c} notes a conntrack {'check' if words[2] == 'nat' else 'flush'} still due "
                           f"for {words[3]} (an `up` was interrupted before it finished)")
            elif comment.startswith("natns"):
                out.append(f'rule "{comment}" in {t} {c} is extra (`{_line("-A", c, args)}`)')
            else:
                out.append(f"{t} {c} has a rule natns didn't write: `{_line('-A', c, args)}`")
        if not missing and not extra and have != want:
            out.append(f"the rules of {t} {c} are in another order")
    missing, extra = multiset_diff(list(old.jumps), list(new.jumps))
    for t, c, args in missing:
        out.append(f"the jump from {t} {c} into {netfilter.jump_target(args)} is missing (`{_line('-A', c, args)}`)")
    for t, c, args in extra:
        out.append(f"the jump from {t} {c} into {netfilter.jump_target(args)} is extra (`{_line('-A', c, args)}`)")
    if not out:
        out.append("natns's chains differ from what this file renders")
    return out


@dataclass
class _Saved:
    """natns's part of the tables as iptables-save showed them."""

    chains: list[tuple[str, str]] = field(default_factory=list)
    rules: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    rule_counters: list[tuple[int, int]] = field(default_factory=list)
    jumps: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)


def _save(ns: str | None, scope: str = SCOPE, *, counters: bool = False, v6: bool = False,
          present: dict | None = None) -> _Saved:
    """Run iptables-save (ip6tables-save with `v6`) in `ns` and pick out the chains and
    jumps of `scope`.

    The text is read by natns's one netfilter reader (kernel/netfilter.py). `present`:
    nftlib.tables_by_family of `ns`, when the caller has it.
    """
    saved = _Saved()
    prefix = scope_names(scope)[0]
    holding = _tables_holding(ns, prefix, v6, present)
    for table in TABLES:
        if holding is not None and table not in holding:
            continue  # no chain of natns's there: iptables-save would find nothing of ours
        argv = ["ip6tables-save" if v6 else "iptables-save", "-t", table] + (["-c"] if counters else [])
        netfilter.take_owned(nsexec.run(ns, argv).stdout, prefix, saved, tables=TABLES)
    return saved


def _tables_holding(ns: str | None, prefix: str, v6: bool = False, by_family: dict | None = None) -> set[str] | None:
    """With iptables-nft, the tables (nat, filter) that hold a chain named `prefix`*; None: unknown.

    A cheap look (in-process libnftables, no program run) that spares running
    iptables-save in namespaces where natns has no chains: a rule can't jump
    to a chain that doesn't exist, so a table without natns's chains has
    nothing of natns's in it. With iptables-legacy, or without libnftables,
    None: ask iptables-save as before.
    """
    if v6 and netfilter.iptables_flavour() == "legacy":
        # The kernel lists the ip6tables-legacy tables that exist: where there is none
        # (every namespace of an IPv4 lab), ip6tables-save is not run.
        return {t for t in TABLES if t in netfilter.legacy_tables(ns, v6=True)}
    if not nftlib.in_process() or not netfilter.nft_based():
        return None
    fam = NFPROTO_IPV6 if v6 else nftlib.NFPROTO_IPV4
    present = by_family.get(fam, {}) if by_family is not None else nftlib.tables(ns, fam)
    if present is not None and not any(t in present for t in TABLES):
        return set()
    if v6 and present is None:
        return None
    listed = netfilter.read_nft_list(ns, "chains", "ip6" if v6 else "ip")
    if listed.error is not None:
        return None
    return {c.table for c in listed.chains() if c.table in TABLES and str(c.name).startswith(prefix)}


def _scope_of(chains: list[str]) -> str:
    """The scope a set of natns chains belongs to (from the chain names)."""
    for c in chains:
        if c.startswith("natnsup-"):
            return c.rsplit("-", 1)[0]
    return SCOPE


def _comment_of(args: tuple[str, ...]) -> str | None:
    """The text after --comment in a rule, if any."""
    for i, a in enumerate(args[:-1]):
        if a == "--comment":
            return args[i + 1]
    return None


def _make_key(chains, rules, jumps) -> IptKey:
    """The canonical key from chains (table, name), rules and jumps (table, chain, args)."""
    order = tuple(sorted(set(chains)))
    ordered = tuple((t, c, tuple(a)) for t, c in order for rt, rc, a in rules if (rt, rc) == (t, c))
    return IptKey(order, ordered, tuple((t, c, tuple(a)) for t, c, a in sorted(jumps, key=lambda j: (j[0], j[1]))))


def _split_key(key: IptKey):
    """Chains, rules and jumps back out of a canonical key (as lists)."""
    return list(key.chains), list(key.rules), list(key.jumps)


def _quote(arg: str) -> str:
    """One argument the way iptables-save writes it (and iptables-restore reads it)."""
    if "\n" in arg or "\r" in arg or "\0" in arg:
        raise ValueError(f"iptables argument {arg!r} contains a line break")
    if _BARE.fullmatch(arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _line(op: str, chain: str, args: tuple[str, ...], pos: int | None = None) -> str:
    """One restore line, e.g. ``-A natns-POSTROUTING -s ... -j MASQUERADE``."""
    head = [op, _quote(chain)] + ([str(pos)] if pos is not None else [])
    return " ".join(head + [_quote(a) for a in args])


_BUILTIN = {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING", "FORWARD"}


def _drop_empty_nft_table(ns: str | None, table: str, v6: bool = False) -> None:
    """With iptables-nft, delete nf_tables table ``ip <table>`` if nothing is left in it.

    iptables-restore creates the table (with its built-in chains) the first
    time natns loads a chain; after natns's chains are gone it would stay as
    an empty shell. It is deleted only when it holds nothing at all: built-in
    chains with policy accept, no rules, no other chains, so no behaviour
    anyone else relies on changes. iptables-legacy tables can't be deleted
    and aren't visible to nft; nothing is done there.
    """
    if not netfilter.nft_based():
        return
    family = "ip6" if v6 else "ip"
    listed = netfilter.read_nft_list(ns, "table", family, table)
    if listed.error is not None:
        return
    for obj in listed.objs:
        if any(k in obj for k in ("rule", "set", "map", "flowtable", "element")):
            return
        c = obj.get("chain")
        if c is not None and (c.get("name") not in _BUILTIN or c.get("policy") != "accept"):
            return
    nftlib.run(ns, ["nft", "delete", "table", family, table], check=False)


def _restore(ns: str | None, sections: dict[str, list[str]], v6: bool = False) -> None:
    """Feed the per-table `sections` to one ``iptables-restore --noflush`` in `ns`
    (``ip6tables-restore`` with `v6`)."""
    if not sections:
        return
    lines = []
    for table, body in sections.items():
        lines += ["*" + table, *body, "COMMIT"]
    tool = "ip6tables-restore" if v6 else "iptables-restore"
    nsexec.run(ns, [tool, "-w", "--noflush"], input="\n".join(lines) + "\n")

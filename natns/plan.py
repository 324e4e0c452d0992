"""Desired state vs actual state -> an ordered list of steps. Pure: no kernel access.

`plan_up` is what `natns up` runs and `natns plan` prints; `plan_down` is what
`natns down` runs. A second `plan_up` after a successful `up` is empty: that is
how idempotency is defined and tested. Each step can describe itself as the
`ip`/`sysctl`/`nft` command a person would type for the same change.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from dataclasses import dataclass, field
from typing import Callable

from .errors import ForeignObjectError, UserError
from .firewall import ctselect
from .state import MARK_PREFIX, FirewallIntent, LabState, LinkState, NsState

# Phases, in the order `up` runs them.
PHASES = [
    "delete_netns", "create_netns", "set_mark", "delete_link", "create_bridge", "create_veth",
    "configure_link", "del_address", "add_address", "del_route", "add_route", "set_sysctl",
    "remove_firewall", "load_firewall", "update_firewall", "flush_conntrack", "forget_conntrack",
    "clear_flush_notes",
]


@dataclass(frozen=True)
class Step:
    """One change to the kernel.

    `action` names the change (one of PHASES), `ns` the namespace it happens
    in, `target` the object (link, address, route, key), `args` the rest, and
    `reason` why: missing, drift, stale (left over from an earlier topology).
    """

    action: str
    ns: str | None
    target: str
    args: tuple = ()
    reason: str = "missing"

    def command(self) -> str:
        """The equivalent command a person would type (for `plan` and learning)."""
        n = f"-n {self.ns} " if self.ns else ""
        a, t = self.action, self.target
        q = shlex.quote
        if a == "create_netns":
            return f"ip netns add {t} && ip -n {t} link set lo alias {q(self.args[0])} up"
        if a == "delete_netns":
            return f"ip netns del {t}"
        if a == "set_mark":
            return f"ip {n}link set lo alias {q(self.args[0])} up"
        if a == "create_bridge":
            return f"ip {n}link add {t} type bridge"
        if a == "create_veth":
            peer_ns, peer = self.args
            where = f" netns {peer_ns}" if peer_ns else ""
            return f"ip {n}link add {t} type veth peer name {peer}{where}"
        if a == "configure_link":
            opts = dict(self.args)
            parts = []
            if "alias" in opts:
                parts.append(f"alias {q(opts['alias'])}")
            if "master" in opts:
                parts.append(f"master {opts['master']}" if opts["master"] else "nomaster")
            if "mtu" in opts:
                parts.append(f"mtu {opts['mtu']}")
            if "up" in opts:
                parts.append("up" if opts["up"] else "down")
            return f"ip {n}link set {t} " + " ".join(parts)
        if a == "delete_link":
            return f"ip {n}link del {t}"
        if a == "add_address":
            return f"ip {n}addr add {self.args[0]} dev {t}"
        if a == "del_address":
            return f"ip {n}addr del {self.args[0]} dev {t}"
        if a in ("add_route", "del_route"):
            r = self.args[0]
            dst = "default" if r.dst == "0.0.0.0/0" else r.dst
            via = f" via {r.gateway}" if r.gateway else ""
            dev = f" dev {r.dev}" if r.dev else ""
            verb = "replace" if a == "add_route" else "del"
            return f"ip {n}route {verb} {dst}{via}{dev} proto 233"
        if a == "set_sysctl":
            pre = f"ip netns exec {self.ns} " if self.ns else ""
            return f"{pre}sysctl -w {t}={self.args[0]}"
        if a == "load_firewall":
            backend, ruleset = self.args
            pre = f"ip netns exec {self.ns} " if self.ns else ""
            tool = "nft -f -" if backend == "nftables" else "iptables-restore --noflush"
            return f"{pre}{tool}  # {t}"
        if a == "update_firewall":
            pre = f"ip netns exec {self.ns} " if self.ns else ""
            changes = self.args[2]
            what = ", ".join(f"{m} +{len(add)} -{len(rem)}" for m, (add, rem) in sorted(changes.items()))
            return f"{pre}nft -f -  # add/delete elements: {what}"
        if a == "clear_flush_notes":  # a load or an element update, after the flushes
            inner = Step(self.args[0], self.ns, self.target, self.args[1:], self.reason)
            return f"{inner.command()} (the flushes are done: remove their notes)"
        if a == "flush_conntrack":
            pre = f"ip netns exec {self.ns} " if self.ns else ""
            kind, outside = self.args[:2]
            if kind == "fip":
                return f"{pre}conntrack -D --orig-dst {outside}; {pre}conntrack -D --reply-dst {outside}"
            addr, port = outside.split(":")
            return f"{pre}conntrack -D -p {kind} --orig-dst {addr} --dport {port}"
        if a == "forget_conntrack":  # entries the rules now translate otherwise (firewall/ctselect.py)
            from .firewall.ctselect import commands

            return "; ".join(commands(self.args[0], self.ns))
        if a == "remove_firewall":
            pre = f"ip netns exec {self.ns} " if self.ns else ""
            scope = self.args[0] if self.args else "natns"
            return pre + (f"nft delete table ip {scope}" if t == "nftables"
                          else f"iptables-restore --noflush  # delete chains {scope}-*")
        return f"{a} {t} {self.args}"

    def to_json(self) -> dict:
        """A JSON-ready description of the step."""
        return {
            "action": self.action,
            "namespace": self.ns,
            "target": self.target,
            "reason": self.reason,
            "command": self.command(),
        }


@dataclass
class Plan:
    """The ordered steps that take the kernel from actual to desired."""

    lab: str
    steps: list[Step] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.steps

    def add(self, *steps: Step) -> None:
        self.steps.extend(steps)

    def ordered(self) -> "Plan":
        """The same steps sorted by phase (stable inside a phase)."""
        order = {p: i for i, p in enumerate(PHASES)}
        return Plan(self.lab, sorted(self.steps, key=lambda s: order[s.action]))


def _owned(alias: str | None, lab: str) -> bool:
    return bool(alias) and (alias == f"{MARK_PREFIX}{lab}" or alias.startswith(f"{MARK_PREFIX}{lab}:"))


def plan_up(desired: LabState, actual: LabState, render: Callable[[FirewallIntent], object],
            adopt: bool = False) -> Plan:
    """The steps that converge `actual` to `desired`.

    `render` turns a FirewallIntent into the backend's Ruleset (pure). Raises
    ForeignObjectError, before any step runs, if the topology names a
    namespace or link that exists but isn't this lab's. With `adopt`, a
    namespace the topology names that exists without any natns mark is
    taken over instead: it gets the lab's mark (`set_mark`, reason "adopt")
    and from then on is the lab's, removed by `down` like the others.

    A link natns created but could not configure before it was killed (no
    alias yet: down, no address, no bridge, in a namespace of this lab) is
    recognised as natns's own unfinished work and configured, so `up`
    converges after a crash at any point (see `_unfinished`).
    """
    lab = desired.lab
    plan = Plan(lab)
    empty = NsState(name="", mark=None, role="", exists=False)

    for name, a in actual.namespaces.items():
        if name not in desired.namespaces and a.exists and getattr(a, "owner", None) and a.owner[0] == lab:
            plan.add(Step("delete_netns", None, name, reason="stale"))

    adopted = _check_foreign(desired, actual, adopt)
    unfinished: set[tuple[str | None, str]] = set()
    fresh = _plan_veth_pairs(plan, desired, actual, unfinished)
    for name, d in desired.namespaces.items():
        a = actual.namespaces.get(name, empty)
        if not a.exists:
            plan.add(Step("create_netns", None, name, (d.mark,)))
            a = NsState(name=name, mark=d.mark, role=d.role, exists=True)
        else:
            if a.mark != d.mark or not a.lo_up:
                plan.add(Step("set_mark", name, "lo", (d.mark,), reason="adopt" if name in adopted else "drift"))
        _plan_links(plan, lab, d, a, fresh, unfinished=unfinished)
        _plan_addresses(plan, d, a, fresh)
        # A link deleted to be made again takes the routes through it along.
        relinked = {s.target for s in plan.steps if s.action == "delete_link" and s.ns == name} \
            & set(a.links) & set(d.links)
        _plan_routes(plan, d, a, relinked=bool(relinked))
        for key, value in d.sysctls.items():
            if a.sysctls.get(key) != value:
                plan.add(Step("set_sysctl", name, key, (value,),
                              reason="missing" if key not in a.sysctls else "drift"))
        _plan_firewall(plan, desired.backend, d, a, render, existed=actual.namespaces.get(name, empty).exists)
    _plan_host(plan, desired.backend, desired.host, actual.host, fresh, render, unfinished)
    return plan.ordered()


def _check_foreign(desired: LabState, actual: LabState, adopt: bool = False) -> set[str]:
    """Refuse, before any step, namespaces the topology names that aren't this lab's.

    With `adopt`, namespaces without any natns mark are allowed (and
    returned: they will be marked); another lab's namespace never is.
    """
    adopted = set()
    for name in desired.namespaces:
        a = actual.namespaces.get(name)
        if a is not None and getattr(a, "not_a_namespace", False):
            raise ForeignObjectError(
                f"/run/netns/{name} exists and is not a network namespace (a file nothing is mounted on, "
                f"not left by natns); remove it or use another name"
            )
        if a is None or not a.exists:
            continue
        owner = getattr(a, "owner", None)
        if owner is None and adopt and not (a.mark or "").startswith(MARK_PREFIX):
            adopted.add(name)
            continue
        if owner is None:
            raise ForeignObjectError(
                f"namespace {name} exists and was not created by natns; "
                f"remove it (ip netns del {name}), use another name, "
                f"or take it over with `natns up --adopt`"
            )
        if owner[0] != desired.lab:
            raise ForeignObjectError(
                f"namespace {name} belongs to natns lab {owner[0]!r}; run `natns down` on that lab first"
            )
    return adopted


def _owns_ns(a: NsState | None, lab: str) -> bool:
    """Whether observed namespace `a` carries this lab's mark."""
    owner = getattr(a, "owner", None)
    return bool(a is not None and a.exists and owner and owner[0] == lab)


def _pristine(have: LinkState) -> bool:
    """A link as the kernel makes it and natns leaves it until its configure step:
    no alias, administratively down, no IPv4 address, no bridge master."""
    return not have.alias and not have.up and not have.addresses and not have.master


def _unfinished(have: LinkState, want: LinkState, a: NsState | None, lab: str) -> bool:
    """Whether `have` is natns's own link, created but not yet configured.

    natns creates a link in one netlink request and gives it its alias (the
    mark) in a later one, together with its bridge, MTU and "up"; the kernel
    has no way to set an alias at creation. A natns killed in between
    leaves a link with the wanted name and kind, pristine (see `_pristine`),
    in a namespace that carries this lab's mark: nobody but natns puts
    links into its namespaces under the names it wants, so such a link is
    configured rather than refused. Anything else unmarked is foreign.
    """
    return have.kind == want.kind and _pristine(have) and _owns_ns(a, lab)


def _plan_veth_pairs(plan: Plan, desired: LabState, actual: LabState,
                     unfinished: set | None = None) -> set[tuple[str | None, str]]:
    """Create veth pairs with an end missing; return the ends that will be new.

    A pair is one object with two ends: if either end is gone, the survivor is
    deleted and the pair made again, so both ends come out right.

    Ends of pairs natns made but did not get to configure are added to
    `unfinished`: an end in a namespace of this lab by `_unfinished`; the
    end of an ``uplink: host`` pair in the namespace natns runs in (which
    carries no lab mark) when it is pristine and its other end, in the
    router's namespace, is unfinished. Both ends are made by one request, so
    a pristine other end means this one was made with it: the request fails
    if the name is taken, and neither end can go without the other.
    """
    fresh: set[tuple[str | None, str]] = set()
    for ns, d in desired.namespaces.items():
        for name, want in d.links.items():
            if want.kind != "veth":
                continue
            # Pairs into the host (uplink) are made from the lab namespace's end.
            me, peer = (ns, name), (want.peer_ns, want.peer_name)
            if me in fresh or (want.peer_ns is not None and peer < me):
                continue  # handled from the other end
            have_me = _actual_link(actual, ns, name)
            have_peer = _actual_link(actual, *peer)
            if have_me is not None and have_me.kind == "veth" and have_peer is not None:
                if unfinished is not None:
                    _note_unfinished_pair(unfinished, desired, actual, [(me, have_me), (peer, have_peer)])
                continue
            for end, have in ((me, have_me), (peer, have_peer)):
                if have is not None:
                    if not _owned(have.alias, desired.lab):
                        raise _foreign_link(end[0], end[1])
                    plan.add(Step("delete_link", end[0], end[1], reason="drift"))
            plan.add(Step("create_veth", ns, name, peer))
            fresh.add(me)
            fresh.add(peer)
    return fresh


def _note_unfinished_pair(unfinished: set, desired: LabState, actual: LabState, ends: list) -> None:
    """Add the ends of an existing veth pair that are natns's unfinished work to `unfinished`."""
    wants = [_desired_link(desired, *end) for end, _ in ends]
    for ((end_ns, end_name), have), want in zip(ends, wants):
        a = actual.namespaces.get(end_ns) if end_ns is not None else None
        if want is not None and _unfinished(have, want, a, desired.lab):
            unfinished.add((end_ns, end_name))
    for i, (((end_ns, end_name), have), want) in enumerate(zip(ends, wants)):
        other = ends[1 - i][0]
        if end_ns is None and other in unfinished and want is not None \
                and have.kind == want.kind and _pristine(have):
            unfinished.add((end_ns, end_name))


def _desired_link(desired: LabState, ns: str | None, name: str) -> LinkState | None:
    d = desired.namespaces.get(ns) if ns is not None else desired.host
    return d.links.get(name) if d is not None else None


def _actual_link(actual: LabState, ns: str | None, name: str) -> LinkState | None:
    a = actual.namespaces.get(ns) if ns is not None else actual.host
    if a is None or not a.exists:
        return None
    return a.links.get(name)


def _foreign_link(ns: str | None, name: str) -> ForeignObjectError:
    where = f"namespace {ns}" if ns else "the namespace natns runs in"
    ip = f"ip -n {ns}" if ns else "ip"
    return ForeignObjectError(f"link {name} in {where} exists and was not created by natns; "
                              f"remove it ({ip} link del {name}) or use another name")


def _alias_ok(have: str | None, want: str) -> bool:
    """A link's alias matches: equal, or natns's own note appended (`` saved:...``)."""
    return have == want or bool(have) and have.startswith(want + " saved:")


def _plan_links(plan: Plan, lab: str, d: NsState, a: NsState, fresh: set,
                aliases: dict[str, str] | None = None, unfinished: set | None = None) -> None:
    for name, want in d.links.items():
        have = None if (d.name, name) in fresh else a.links.get(name)
        if have is not None and not _owned(have.alias, lab) and (d.name, name) not in (unfinished or ()) \
                and not (want.kind == "bridge" and _unfinished(have, want, a, lab)):
            raise _foreign_link(d.name, name)
        if want.kind == "bridge":
            if have is not None and have.kind != "bridge":
                plan.add(Step("delete_link", d.name, name, reason="drift"))
                have = None
            if have is None:
                plan.add(Step("create_bridge", d.name, name))
        opts = []
        alias = aliases.get(name, want.alias) if aliases else want.alias
        if have is None or not _alias_ok(have.alias, want.alias):
            opts.append(("alias", alias))
        if have is None or (have.master or None) != want.master:
            if want.master or have is not None:
                opts.append(("master", want.master))
        if want.mtu is not None and (have is None or have.mtu != want.mtu):
            opts.append(("mtu", want.mtu))
        if have is None or have.up != want.up:
            opts.append(("up", want.up))
        if opts:
            plan.add(Step("configure_link", d.name, name, tuple(opts),
                          reason="missing" if have is None else "drift"))
    for name, have in a.links.items():
        if name not in d.links and _owned(have.alias, lab):
            plan.add(Step("delete_link", d.name, name, reason="stale"))


def _plan_addresses(plan: Plan, d: NsState, a: NsState, fresh: set) -> None:
    for name, want in d.links.items():
        have = None if (d.name, name) in fresh else a.links.get(name)
        have_addrs = set(have.addresses) if have else set()
        for addr in sorted(set(want.addresses) - have_addrs):
            plan.add(Step("add_address", d.name, name, (addr,)))
        for addr in sorted(have_addrs - set(want.addresses)):
            plan.add(Step("del_address", d.name, name, (addr,), reason="drift"))
    have_lo = set(a.loopback_addresses)
    for addr in sorted(set(d.loopback_addresses) - have_lo):
        plan.add(Step("add_address", d.name, "lo", (addr,)))
    for addr in sorted(have_lo - set(d.loopback_addresses)):
        plan.add(Step("del_address", d.name, "lo", (addr,), reason="drift"))


def _plan_routes(plan: Plan, d: NsState, a: NsState, relinked: bool = False) -> None:
    """Add missing routes, remove natns's others. With `relinked` (a link of this namespace
    is deleted first), every wanted route is (re)added: the kernel drops the routes through
    a deleted link, and the observed state, read before, still shows them."""
    have = set() if relinked else set(a.routes)
    for r in d.routes:
        if r not in have:
            plan.add(Step("add_route", d.name, r.dst, (r,)))
    for r in a.routes:
        if r not in set(d.routes):
            plan.add(Step("del_route", d.name, r.dst, (r,), reason="drift"))


def _plan_firewall(plan: Plan, backend: str, d: NsState, a: NsState, render, scope: str = "natns",
                   existed: bool = True) -> None:
    have = getattr(a, "firewalls", {}) or {}
    fw = _backend_ops(backend)
    if d.firewall is not None:
        scope = d.firewall.scope
        want = render(d.firewall)
        old = have.get(backend)
        # Conntrack entries of removed mappings must go too (or they keep working until
        # they end). Those due are noted in the rules by the same transaction that removes
        # the mapping, flushed, then the note is cleared: a natns killed in between leaves
        # the note, and this `up` flushes and clears it.
        flush: set[tuple[str, str]] = set()
        if fw is not None and have:
            ops = [_backend_ops(b) for b in have]
            gone = set().union(*(o.mappings(rs) for o, rs in zip(ops, have.values()) if o)) - fw.mappings(want)
            flush = {(kind, outside) for kind, outside, _ in gone}
            flush |= set().union(*(o.pending_flushes(rs) for o, rs in zip(ops, have.values()) if o))
        # Entries the new rules translate otherwise (SNAT changed, a mapping added or
        # moved, rules restored or adopted) go the same way, noted as ("nat", address).
        nat = ctselect.recheck(fw, render, old, want, d.firewall, existed)
        flush |= {ctselect.note(nat)} if nat else set()
        if flush:
            noted = render(dataclasses.replace(d.firewall, flush=tuple(sorted(flush))))
            _change_firewall(plan, backend, scope, d.name, old, noted)
            for kind, outside in sorted(k for k in flush if k[0] != ctselect.NOTE_KIND):
                plan.add(Step("flush_conntrack", d.name, outside, (kind, outside), reason="mapping"))
            plan.add(*[Step("forget_conntrack", d.name, nat.external_iface, (nat,), reason="nat")] if nat else [])
            _change_firewall(plan, backend, scope, d.name, noted, want, clear=True)
        else:
            _change_firewall(plan, backend, scope, d.name, old, want)
    for other in have:
        if other != backend or d.firewall is None:
            plan.add(Step("remove_firewall", d.name, other, (scope,), reason="stale"))


def _change_firewall(plan: Plan, backend: str, scope: str, ns: str | None, old, new, clear: bool = False) -> None:
    """The step from ruleset `old` (None: none) to `new`: map and set elements only (one
    transaction that keeps counters and connections), or a load. With `clear`, the same
    as a step of its own phase after the conntrack flushes (it removes their notes)."""
    if old == new:
        return
    fw = _backend_ops(backend)
    changes = fw.element_changes(old, new) if old is not None and fw else None
    if changes:
        step = Step("update_firewall", ns, backend, (backend, scope, changes), reason="mapping")
    else:
        step = Step("load_firewall", ns, backend, (backend, new), reason="missing" if old is None else "drift")
    if clear:
        step = Step("clear_flush_notes", ns, backend, (step.action, *step.args), reason="mapping")
    plan.add(step)


def _backend_ops(name: str):
    """The backend's pure helpers (element_changes, mappings); None for an unknown name."""
    from . import firewall

    try:
        return firewall.get_backend(name)
    except UserError:  # pragma: no cover - a validated model names a known backend
        return None


_SAVED = re.compile(r" saved:ip_forward=(\d+)$")
_ANY_UPLINK = re.compile(r"^natns:[^:]+:uplink ")


def _plan_host(plan: Plan, backend: str, d: NsState | None, a: NsState | None, fresh: set, render,
               unfinished: set | None = None) -> None:
    """The lab's part of the namespace natns runs in (``uplink: host``), name None.

    Forwarding is switched on when the first natns uplink (of any lab) comes
    and set back to the value it had before when the last one goes; that old
    value travels in the uplink link's alias (`` saved:ip_forward=0``), so no
    state file is needed here either.
    """
    if a is None:
        if d is None:
            return
        a = NsState(name=None, mark=None, role="host")
    lab = plan.lab
    mine = {n: ln for n, ln in a.links.items() if _owned(ln.alias, lab) and _ANY_UPLINK.match(ln.alias)}
    others = [ln for ln in a.links.values() if ln.alias and _ANY_UPLINK.match(ln.alias) and ln not in mine.values()]
    notes = [m.group(1) for ln in list(mine.values()) + others if (m := _SAVED.search(ln.alias or ""))]
    current = a.sysctls.get("net.ipv4.ip_forward", "0")
    saved = notes[0] if notes else current
    want = d or NsState(name=None, mark=None, role="host")
    aliases = {n: f"{ln.alias} saved:ip_forward={saved}" for n, ln in want.links.items()}
    from .desired import uplink_scope

    if d is not None:
        _plan_links(plan, lab, want, a, fresh, aliases, unfinished=unfinished)
        _plan_addresses(plan, want, a, fresh)
        for key, value in want.sysctls.items():
            if a.sysctls.get(key) != value:
                plan.add(Step("set_sysctl", None, key, (value,), reason="missing"))
        _plan_firewall(plan, backend, want, a, render)
        return
    # No uplink wanted any more: take the lab's away, restore forwarding if it was the last.
    for name in mine:
        plan.add(Step("delete_link", None, name, reason="stale"))
    _plan_firewall(plan, backend, want, a, render, scope=uplink_scope(lab))
    if mine and not others and current != saved:
        plan.add(Step("set_sysctl", None, "net.ipv4.ip_forward", (saved,), reason="restore"))


def plan_down(lab: str, owned: list[str], host: NsState | None = None, backend: str = "nftables") -> Plan:
    """The steps that remove everything natns made for `lab`.

    `owned` are the namespaces whose mark says they are the lab's; deleting a
    namespace takes its links, addresses, routes, sysctls and rules with it.
    `host` is the observed namespace natns runs in: the lab's uplink pieces
    there are removed first (firewall, then links) and forwarding restored.
    """
    plan = Plan(lab)
    host_plan = Plan(lab)
    _plan_host(host_plan, backend, None, host, set(), lambda intent: None)
    order = {"remove_firewall": 0, "delete_link": 1, "set_sysctl": 2}
    host_steps = sorted(host_plan.steps, key=lambda s: order.get(s.action, 3))
    plan.add(*[dataclasses.replace(s, reason="teardown") if s.reason == "stale" else s for s in host_steps])
    plan.add(*[Step("delete_netns", None, name, reason="teardown") for name in owned])
    return plan

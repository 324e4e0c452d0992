"""Desired state vs observed state -> an ordered list of typed steps. Pure: no kernel access.

`plan_up` is what `natns up` runs and `natns plan` prints; `plan_down` is what
`natns down` runs. A second `plan_up` after a successful `up` is empty: that is
how idempotency is defined and tested. The steps are the classes of steps.py;
each can describe itself as the `ip`/`sysctl`/`nft` command a person would
type for the same change, and the order `up` runs them in comes from their
classes (steps.PHASE_ORDER).

The planner is given the firewall backend (`firewall.base.FirewallBackend`):
it renders the desired rules with it and asks it, purely, what changed.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Iterable

from .errors import ForeignObjectError
from .firewall import ctselect
from .firewall.base import FirewallBackend
from .marks import ANY_UPLINK, SAVED_FORWARD, is_natns_mark, owns_link, uplink_scope
from .state import DesiredNs, LabState, LinkState, ObservedLab, ObservedNs
from .steps import (  # noqa: F401  (Step: re-exported)
    AddAddress,
    AddRoute,
    ClearFlushNotes,
    ConfigureLink,
    CreateBridge,
    CreateNetns,
    CreateVeth,
    DeleteLink,
    DeleteNetns,
    DelAddress,
    DelRoute,
    FlushConntrack,
    ForgetConntrack,
    LoadFirewall,
    RemoveFirewall,
    SetMark,
    SetSysctl,
    Step,
    UpdateFirewall,
)

@dataclass(frozen=True)
class Foreign:
    """Something the topology names that exists but isn't this lab's: what `up` refuses.

    `kind` "namespace" (exists without this lab's mark), "file" (/run/netns/<name> is no
    namespace) or "link" (`name` in namespace `namespace`, None: the one natns runs in).
    `message` is `up`'s refusal, word for word. `owner`: the other lab whose mark it
    carries; `adoptable`: `up --adopt` would take it over (a namespace without any natns
    mark); for a link, `alias` is the alias it has and `mark` the one natns would give it.
    """

    kind: str
    namespace: str | None
    name: str
    message: str
    owner: str | None = None
    adoptable: bool = False
    alias: str | None = None
    mark: str | None = None
    link_kind: str | None = None  # a link's kind as found, and whether natns wants that kind
    same_kind: bool = True

    def error(self) -> ForeignObjectError:
        return ForeignObjectError(self.message)


class _Refusals:
    """Where the planner puts what it finds foreign: raised at once (what `up` does), or,
    given a list, noted there and the object left out of the plan (what `status` does)."""

    def __init__(self, into: list | None):
        self.into = into
        self.seen: set[tuple[str, str | None, str]] = set()
        self.blocked: set[str] = set()  # namespaces left out of the plan entirely

    def refuse(self, found: Foreign) -> None:
        if self.into is None:
            raise found.error()
        key = (found.kind, found.namespace, found.name)
        if key not in self.seen:
            self.seen.add(key)
            self.into.append(found)


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
        return Plan(self.lab, sorted(self.steps, key=lambda s: s.phase))


_owned = owns_link

#: IPv6 forwarding, and its value before natns's first IPv6 uplink, noted in the alias.
FORWARDING6 = "net.ipv6.conf.all.forwarding"
SAVED_FORWARD6 = re.compile(r" saved:ipv6_forwarding=(\d+) ")

#: Desired sysctls that a new namespace gets before its links (then already right).
EARLY_SYSCTLS = ("net.ipv6.conf.default.accept_dad",)


def plan_up(desired: LabState, actual: ObservedLab, backend: FirewallBackend, adopt: bool = False,
            others: Iterable[FirewallBackend] = (), foreign: list[Foreign] | None = None) -> Plan:
    """The steps that converge `actual` to `desired`.

    `backend` is the topology's firewall backend: it renders each
    FirewallIntent to a Ruleset and compares Rulesets (pure). `others` are
    the backends whose rules may also be found (a topology that switched
    backend): their rules are read with them and removed. Raises
    ForeignObjectError, before any step runs, if the topology names a
    namespace or link that exists but isn't this lab's. With `adopt`, a
    namespace the topology names that exists without any natns mark is
    taken over instead: it gets the lab's mark (`set_mark`, reason "adopt")
    and from then on is the lab's, removed by `down` like the others.

    A link natns created but could not configure before it was killed (no
    alias yet: down, no address, no bridge, in a namespace of this lab) is
    recognised as natns's own unfinished work and configured, so `up`
    converges after a crash at any point (see `_unfinished`).

    Given a list as `foreign` (what `status` does), nothing is raised: what is
    foreign is appended there as a `Foreign` and left out of the plan (a
    namespace `up --adopt` would take over is planned as adopted; another lab's
    namespace, a file in the way, a foreign link are not touched), so the plan
    is what would be left to do once those are dealt with.
    """
    lab = desired.lab
    plan = Plan(lab)
    fw = _Firewalls(backend, others)
    empty = ObservedNs(name="", mark=None, role="", exists=False)
    refusals = _Refusals(foreign)

    for name, a in actual.namespaces.items():
        if name not in desired.namespaces and a.owned_by(lab):
            plan.add(DeleteNetns(name, reason="stale"))

    adopted = _check_foreign(desired, actual, adopt, refusals)
    unfinished: set[tuple[str | None, str]] = set()
    fresh = _plan_veth_pairs(plan, desired, actual, unfinished, refusals)
    for name, d in desired.namespaces.items():
        if name in refusals.blocked:
            continue
        a = actual.namespaces.get(name, empty)
        existed = a.exists
        if not a.exists:
            early = tuple((k, v) for k, v in sorted(d.sysctls.items()) if k in EARLY_SYSCTLS)
            plan.add(CreateNetns(name, d.mark, early))
            a = ObservedNs(name=name, mark=d.mark, role=d.role)
        else:
            if a.mark != d.mark or not a.lo_up:
                plan.add(SetMark(name, d.mark, reason="adopt" if name in adopted else "drift"))
        _plan_links(plan, lab, d, a, fresh, unfinished=unfinished, refusals=refusals)
        _plan_addresses(plan, d, a, fresh, skip=refusals.seen)
        # A link deleted to be made again takes the routes through it along.
        relinked = {s.name for s in plan.steps if isinstance(s, DeleteLink) and s.ns == name} \
            & set(a.links) & set(d.links)
        _plan_routes(plan, d, a, relinked=bool(relinked))
        for key, value in d.sysctls.items():
            if not existed and key in EARLY_SYSCTLS:
                continue  # set by CreateNetns, before the links
            if a.sysctls.get(key) != value:
                plan.add(SetSysctl(name, key, value, reason="missing" if key not in a.sysctls else "drift"))
        _plan_firewall(plan, fw, d, a, existed=existed)
    _plan_host(plan, fw, desired.host, actual.host, fresh, unfinished, refusals)
    return plan.ordered()


class _Firewalls:
    """The backend the topology uses, and every backend whose rules may be found."""

    def __init__(self, backend: FirewallBackend, others: Iterable[FirewallBackend] = ()):
        self.backend = backend
        self.by_name = {b.name: b for b in others}
        self.by_name[backend.name] = backend

    def of(self, name: str) -> FirewallBackend:
        """The backend that reads and removes rules found under `name`."""
        try:
            return self.by_name[name]
        except KeyError:
            raise ValueError(f"rules of firewall backend {name!r} were found, but the planner "
                             f"was not given that backend") from None


def _check_foreign(desired: LabState, actual: ObservedLab, adopt: bool = False,
                   refusals: _Refusals | None = None) -> set[str]:
    """Refuse, before any step, namespaces the topology names that aren't this lab's.

    With `adopt`, namespaces without any natns mark are allowed (and
    returned: they will be marked); another lab's namespace never is. With
    `refusals` noting instead of raising, adoptable namespaces are noted and
    returned as adopted; the others are noted and blocked (left out).
    """
    refusals = refusals or _Refusals(None)
    noting = refusals.into is not None
    adopted = set()
    for name in desired.namespaces:
        a = actual.namespaces.get(name)
        if a is not None and a.not_a_namespace:
            refusals.refuse(Foreign(
                "file", None, name,
                f"/run/netns/{name} exists and is not a network namespace (a file nothing is mounted on, "
                f"not left by natns); remove it or use another name"))
            refusals.blocked.add(name)
            continue
        if a is None or not a.exists:
            continue
        owner = a.owner
        if owner is None and not is_natns_mark(a.mark) and (adopt or noting):
            if not adopt:
                refusals.refuse(Foreign("namespace", None, name, _not_natns(name), adoptable=True))
            adopted.add(name)
            continue
        if owner is None:
            refusals.refuse(Foreign("namespace", None, name, _not_natns(name)))
            refusals.blocked.add(name)
            continue
        if owner[0] != desired.lab:
            refusals.refuse(Foreign(
                "namespace", None, name,
                f"namespace {name} belongs to natns lab {owner[0]!r}; run `natns down` on that lab first",
                owner=owner[0]))
            refusals.blocked.add(name)
    return adopted


def _not_natns(name: str) -> str:
    return (f"namespace {name} exists and was not created by natns; "
            f"remove it (ip netns del {name}), use another name, "
            f"or take it over with `natns up --adopt`")


def _owns_ns(a: ObservedNs | None, lab: str) -> bool:
    """Whether observed namespace `a` carries this lab's mark."""
    return a is not None and a.owned_by(lab)


def _pristine(have: LinkState) -> bool:
    """A link as the kernel makes it and natns leaves it until its configure step:
    no alias, administratively down, no IPv4 address, no bridge master."""
    return not have.alias and not have.up and not have.addresses and not have.master


def _unfinished(have: LinkState, want: LinkState, a: ObservedNs | None, lab: str) -> bool:
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


def _plan_veth_pairs(plan: Plan, desired: LabState, actual: ObservedLab,
                     unfinished: set | None = None, refusals: _Refusals | None = None) -> set[tuple[str | None, str]]:
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
    refusals = refusals or _Refusals(None)
    fresh: set[tuple[str | None, str]] = set()
    for ns, d in desired.namespaces.items():
        for name, want in d.links.items():
            if want.kind != "veth":
                continue
            # Pairs into the host (uplink) are made from the lab namespace's end.
            me, peer = (ns, name), (want.peer_ns, want.peer_name)
            if me in fresh or (want.peer_ns is not None and peer < me):
                continue  # handled from the other end
            if ns in refusals.blocked or want.peer_ns in refusals.blocked:
                continue  # an end in a namespace left out (status): nothing to say of the pair
            have_me = _actual_link(actual, ns, name)
            have_peer = _actual_link(actual, *peer)
            if have_me is not None and have_me.kind == "veth" and have_peer is not None:
                if unfinished is not None:
                    _note_unfinished_pair(unfinished, desired, actual, [(me, have_me), (peer, have_peer)])
                continue
            ends = ((me, have_me), (peer, have_peer))
            strangers = [(end, have) for end, have in ends if have is not None and not _owned(have.alias, desired.lab)]
            for end, have in strangers:
                refusals.refuse(_foreign_link(end[0], end[1], have, _desired_link(desired, *end), desired.lab))
            if strangers:
                continue  # (noting) the pair stays as it is
            for end, have in ends:
                if have is not None:
                    plan.add(DeleteLink(end[0], end[1], reason="drift"))
            plan.add(CreateVeth(ns, name, *peer))
            fresh.add(me)
            fresh.add(peer)
    return fresh


def _note_unfinished_pair(unfinished: set, desired: LabState, actual: ObservedLab, ends: list) -> None:
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


def _actual_link(actual: ObservedLab, ns: str | None, name: str) -> LinkState | None:
    a = actual.namespaces.get(ns) if ns is not None else actual.host
    if a is None or not a.exists:
        return None
    return a.links.get(name)


def _foreign_link(ns: str | None, name: str, have: LinkState | None = None, want: LinkState | None = None,
                  lab: str | None = None) -> Foreign:
    where = f"namespace {ns}" if ns else "the namespace natns runs in"
    ip = f"ip -n {ns}" if ns else "ip"
    other = None
    if have is not None and have.alias:
        from .marks import MARK_PREFIX

        if have.alias.startswith(MARK_PREFIX):
            other = have.alias[len(MARK_PREFIX):].split(":", 1)[0] or None
    return Foreign("link", ns, name,
                   f"link {name} in {where} exists and was not created by natns; "
                   f"remove it ({ip} link del {name}) or use another name",
                   owner=other if other != lab else None,
                   alias=have.alias if have is not None else None,
                   mark=want.alias if want is not None else None,
                   link_kind=have.kind if have is not None else None,
                   same_kind=have is None or want is None or have.kind == want.kind)


def _alias_ok(have: str | None, want: str) -> bool:
    """A link's alias matches: equal, or natns's own note appended (`` saved:...``)."""
    return have == want or bool(have) and have.startswith(want + " saved:")


def _plan_links(plan: Plan, lab: str, d: DesiredNs, a: ObservedNs, fresh: set,
                aliases: dict[str, str] | None = None, unfinished: set | None = None,
                refusals: _Refusals | None = None) -> None:
    refusals = refusals or _Refusals(None)
    for name, want in d.links.items():
        have = None if (d.name, name) in fresh else a.links.get(name)
        if ("link", d.name, name) in refusals.seen:
            continue  # (noting) found foreign with its pair: left as it is
        if have is not None and not _owned(have.alias, lab) and (d.name, name) not in (unfinished or ()) \
                and not (want.kind == "bridge" and _unfinished(have, want, a, lab)):
            refusals.refuse(_foreign_link(d.name, name, have, want, lab))
            continue
        if want.kind == "bridge":
            if have is not None and have.kind != "bridge":
                plan.add(DeleteLink(d.name, name, reason="drift"))
                have = None
            if have is None:
                plan.add(CreateBridge(d.name, name))
        opts: dict = {}
        alias = aliases.get(name, want.alias) if aliases else want.alias
        if have is None or not _alias_ok(have.alias, want.alias):
            opts["alias"] = alias
        if have is None or (have.master or None) != want.master:
            if want.master or have is not None:
                opts["master"] = want.master
        if want.mtu is not None and (have is None or have.mtu != want.mtu):
            opts["mtu"] = want.mtu
        if have is None or have.up != want.up:
            opts["up"] = want.up
        if opts:
            plan.add(ConfigureLink(d.name, name, **opts, reason="missing" if have is None else "drift"))
    for name, have in a.links.items():
        if name not in d.links and _owned(have.alias, lab):
            plan.add(DeleteLink(d.name, name, reason="stale"))


def _plan_addresses(plan: Plan, d: DesiredNs, a: ObservedNs, fresh: set, skip: set = frozenset()) -> None:
    for name, want in d.links.items():
        if ("link", d.name, name) in skip:
            continue  # a foreign link (status): not natns's to change
        have = None if (d.name, name) in fresh else a.links.get(name)
        have_addrs = set(have.addresses) if have else set()
        for addr in sorted(set(want.addresses) - have_addrs):
            plan.add(AddAddress(d.name, name, addr))
        for addr in sorted(have_addrs - set(want.addresses)):
            plan.add(DelAddress(d.name, name, addr, reason="drift"))
    have_lo = set(a.loopback_addresses)
    for addr in sorted(set(d.loopback_addresses) - have_lo):
        plan.add(AddAddress(d.name, "lo", addr))
    for addr in sorted(have_lo - set(d.loopback_addresses)):
        plan.add(DelAddress(d.name, "lo", addr, reason="drift"))


def _plan_routes(plan: Plan, d: DesiredNs, a: ObservedNs, relinked: bool = False) -> None:
    """Add missing routes, remove natns's others. With `relinked` (a link of this namespace
    is deleted first), every wanted route is (re)added: the kernel drops the routes through
    a deleted link, and the observed state, read before, still shows them."""
    have = set() if relinked else set(a.routes)
    for r in d.routes:
        if r not in have:
            plan.add(AddRoute(d.name, r))
    for r in a.routes:
        if r not in set(d.routes):
            plan.add(DelRoute(d.name, r, reason="drift"))


def _plan_firewall(plan: Plan, fw: _Firewalls, d: DesiredNs, a: ObservedNs, scope: str = "natns",
                   existed: bool = True) -> None:
    have = a.firewalls
    backend = fw.backend
    if d.firewall is not None:
        scope = d.firewall.scope
        want = backend.render(d.firewall)
        old = have.get(backend.name)
        # Conntrack entries of removed mappings must go too (or they keep working until
        # they end). Those due are noted in the rules by the same transaction that removes
        # the mapping, flushed, then the note is cleared: a natns killed in between leaves
        # the note, and this `up` flushes and clears it.
        flush: set[tuple[str, str]] = set()
        if have:
            found = [(fw.of(name), rs) for name, rs in have.items()]
            gone = set().union(*(b.mappings(rs) for b, rs in found)) - backend.mappings(want)
            flush = {(kind, outside) for kind, outside, _ in gone}
            flush |= set().union(*(b.pending_flushes(rs) for b, rs in found))
        # Entries the new rules translate otherwise (SNAT changed, a mapping added or
        # moved, rules restored or adopted) go the same way, noted as ("nat", address).
        nat = ctselect.recheck(backend, backend.render, old, want, d.firewall, existed)
        if nat:
            flush.add(ctselect.note(nat))
        if flush:
            noted = backend.render(dataclasses.replace(d.firewall, flush=tuple(sorted(flush))))
            _change_firewall(plan, backend, scope, d.name, old, noted)
            for kind, outside in sorted(k for k in flush if k[0] != ctselect.NOTE_KIND):
                plan.add(FlushConntrack(d.name, kind, outside, reason="mapping"))
            if nat:
                plan.add(ForgetConntrack(d.name, nat, reason="nat"))
            _change_firewall(plan, backend, scope, d.name, noted, want, clear=True)
        else:
            _change_firewall(plan, backend, scope, d.name, old, want)
    for other in have:
        if other != backend.name or d.firewall is None:
            plan.add(RemoveFirewall(d.name, fw.of(other), scope, reason="stale"))


def _change_firewall(plan: Plan, backend: FirewallBackend, scope: str, ns: str | None, old, new,
                     clear: bool = False) -> None:
    """The step from ruleset `old` (None: none) to `new`: map and set elements only (one
    transaction that keeps counters and connections), or a load. With `clear`, the same
    as a step of its own phase after the conntrack flushes (it removes their notes)."""
    if old == new:
        return
    changes = backend.element_changes(old, new) if old is not None else None
    step: LoadFirewall | UpdateFirewall
    if changes:
        step = UpdateFirewall(ns, backend, scope, changes, reason="mapping")
    else:
        step = LoadFirewall(ns, backend, new, reason="missing" if old is None else "drift")
    plan.add(ClearFlushNotes(step, reason="mapping") if clear else step)


def _plan_host(plan: Plan, fw: _Firewalls, d: DesiredNs | None, a: ObservedNs | None, fresh: set,
               unfinished: set | None = None, refusals: _Refusals | None = None) -> None:
    """The lab's part of the namespace natns runs in (``uplink: host``), name None.

    Forwarding is switched on when the first natns uplink (of any lab) comes
    and set back to the value it had before when the last one goes; that old
    value travels in the uplink link's alias (`` saved:ip_forward=0``), so no
    state file is needed here either.
    """
    if a is None:
        if d is None:
            return
        a = ObservedNs(name=None, mark=None, role="host")
    lab = plan.lab
    mine = {n: ln for n, ln in a.links.items() if _owned(ln.alias, lab) and ANY_UPLINK.match(ln.alias)}
    others = [ln for ln in a.links.values() if ln.alias and ANY_UPLINK.match(ln.alias) and ln not in mine.values()]
    notes = [m.group(1) for ln in list(mine.values()) + others if (m := SAVED_FORWARD.search(ln.alias or ""))]
    current = a.sysctls.get("net.ipv4.ip_forward", "0")
    saved = notes[0] if notes else current
    want = d or DesiredNs(name=None, mark=None, role="host")
    # IPv6 forwarding likewise, its old value noted before the IPv4 one
    # (`` saved:ipv6_forwarding=0 saved:ip_forward=0``), by the uplinks of IPv6 labs only.
    mine6 = [ln for ln in mine.values() if SAVED_FORWARD6.search(ln.alias or "")]
    others6 = [ln for ln in others if SAVED_FORWARD6.search(ln.alias or "")]
    notes6 = [SAVED_FORWARD6.search(ln.alias).group(1) for ln in mine6 + others6]
    current6 = a.sysctls.get(FORWARDING6, "0")
    saved6 = notes6[0] if notes6 else current6
    six = f" saved:ipv6_forwarding={saved6}" if FORWARDING6 in want.sysctls else ""
    aliases = {n: f"{ln.alias}{six} saved:ip_forward={saved}" for n, ln in want.links.items()}

    if d is not None:
        _plan_links(plan, lab, want, a, fresh, aliases, unfinished=unfinished, refusals=refusals)
        if six:  # an uplink made before its lab had IPv6: note the IPv6 value now, before changing it
            configured = {s.name for s in plan.steps if isinstance(s, ConfigureLink) and s.ns is None}
            for name, ln in mine.items():
                if name in want.links and name not in configured and not SAVED_FORWARD6.search(ln.alias or ""):
                    plan.add(ConfigureLink(None, name, alias=aliases[name], reason="drift"))
        _plan_addresses(plan, want, a, fresh, skip=refusals.seen if refusals else frozenset())
        _plan_routes(plan, want, a)
        for key, value in want.sysctls.items():
            if a.sysctls.get(key) != value:
                plan.add(SetSysctl(None, key, value, reason="missing"))
        if not six and mine6 and not others6 and current6 != saved6:
            plan.add(SetSysctl(None, FORWARDING6, saved6, reason="restore"))  # the lab lost its IPv6
        _plan_firewall(plan, fw, want, a)
        return
    # No uplink wanted any more: take the lab's away, restore forwarding if it was the last.
    for name in mine:
        plan.add(DeleteLink(None, name, reason="stale"))
    _plan_firewall(plan, fw, want, a, scope=uplink_scope(lab))
    if mine and not others and current != saved:
        plan.add(SetSysctl(None, "net.ipv4.ip_forward", saved, reason="restore"))
    if mine6 and not others6 and current6 != saved6:
        plan.add(SetSysctl(None, FORWARDING6, saved6, reason="restore"))


def plan_down(lab: str, owned: list[str], host: ObservedNs | None = None,
              backends: Iterable[FirewallBackend] | None = None) -> Plan:
    """The steps that remove everything natns made for `lab`.

    `owned` are the namespaces whose mark says they are the lab's; deleting a
    namespace takes its links, addresses, routes, sysctls and rules with it.
    `host` is the observed namespace natns runs in: the lab's uplink pieces
    there are removed first (firewall, then links) and forwarding restored,
    the rules with the backend that reads them (`backends`: every backend by
    default).
    """
    if backends is None:
        from . import firewall

        backends = firewall.backends()
    found = list(backends)
    plan = Plan(lab)
    host_plan = Plan(lab)
    _plan_host(host_plan, _Firewalls(found[0], found[1:]), None, host, set())
    order = {RemoveFirewall: 0, DeleteLink: 1, SetSysctl: 2}
    host_steps = sorted(host_plan.steps, key=lambda s: order.get(type(s), 3))
    plan.add(*[dataclasses.replace(s, reason="teardown") if s.reason == "stale" else s for s in host_steps])
    plan.add(*[DeleteNetns(name, reason="teardown") for name in owned])
    return plan

"""The firewall backend contract: what both backends provide, and the Ruleset they trade in.

`FirewallBackend` is the one Protocol nftables.py and iptables.py implement
exactly (tests/unit/test_golden_rules.py checks they do). The planner is given
a backend object and only ever calls what is here; it never looks a backend
up by name.

A `Ruleset` is natns's rules for one namespace in one backend's canonical
form: `render` makes one from a `FirewallIntent`, `observe` reads one back,
and the two compare equal exactly when the kernel holds what natns wants.
Its `key` is the backend's own typed key (a frozen dataclass: `NftKey` in
nftables.py, `IptKey` in iptables.py), never a positional tuple.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Mapping, Protocol, runtime_checkable

from ..addresses import CANONICAL_V4, ipv4_address
from ..errors import UserError
from ..marks import SCOPE, is_scope
from ..state import FirewallIntent, Ruleset, RulesetKey  # noqa: F401  (Ruleset, RulesetKey: re-exported)

#: Longest comment both backends store (nft allows 128 characters, xt_comment 255).
MAX_COMMENT = 128

_IFACE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
# Printable ASCII without the double quote and backslash: neither nft's nor
# iptables-restore's string syntax then needs an escape.
_COMMENT_RE = re.compile(r"[ !#-\[\]-~]*")

#: (kind "fip" | "tcp" | "udp", outside "addr" | "addr:port"): a conntrack flush still due.
Flush = tuple[str, str]
#: (kind, outside, inside): one inbound mapping (floating IP or forwarded port).
Mapping3 = tuple[str, str, str]
#: {map or set: (added (key, value) pairs, removed pairs)}: an element-only change.
ElementChanges = Mapping[str, tuple[tuple, tuple]]


@runtime_checkable
class FirewallBackend(Protocol):
    """What every firewall backend provides; see nftables.py and iptables.py.

    `ns` None is the namespace natns runs in; `scope` is what natns owns there
    (``natns`` in lab namespaces, ``natnsup-<hex>`` for one lab's uplink in the
    host; see marks.py).
    """

    name: str

    def render(self, intent: FirewallIntent) -> Ruleset:
        """The Ruleset natns wants for `intent` (pure)."""
        ...

    def observe(self, ns: str | None, scope: str = SCOPE) -> Ruleset | None:
        """natns's own rules of `scope` in `ns`, or None if it has none there."""
        ...

    def load(self, ns: str | None, ruleset: Ruleset) -> None:
        """Atomically replace natns's own rules in `ns` with `ruleset`."""
        ...

    def check(self, ns: str | None, ruleset: Ruleset) -> str | None:
        """Ask the kernel's own checker whether `ruleset` would load in `ns`, changing
        nothing: None if it would, else the checker's message."""
        ...

    def update_elements(self, ns: str | None, scope: str, changes: ElementChanges) -> None:
        """Apply `element_changes` in one transaction, leaving rules and counters alone."""
        ...

    def remove(self, ns: str | None, scope: str = SCOPE) -> None:
        """Remove natns's own rules of `scope` in `ns`, nothing else; no error if absent."""
        ...

    def element_changes(self, old: Ruleset, new: Ruleset) -> dict | None:
        """If `old` becomes `new` by adding/removing set or map elements only, those
        changes ({set: (added, removed)}); None when a full `load` is needed (pure)."""
        ...

    def mappings(self, ruleset: Ruleset | None) -> set[Mapping3]:
        """The inbound mappings a Ruleset holds: (kind, outside, inside) (pure)."""
        ...

    def pending_flushes(self, ruleset: Ruleset | None) -> set[Flush]:
        """Conntrack flushes for removed mappings noted in `ruleset` as still due:
        (kind, outside). See FirewallIntent.flush (pure)."""
        ...

    def describe_drift(self, old: Ruleset | None, new: Ruleset | None) -> list[str]:
        """What differs from Ruleset `old` (found; None: natns has no rules there) to `new`
        (wanted; None: none wanted), one sentence per chain, rule, jump or map element
        missing, extra or changed, in words a person can check with the tool (pure;
        empty when they are equal)."""
        ...

    def counters(self, ns: str | None, scope: str = SCOPE) -> list[dict]:
        """Per natns rule: {"chain", "rule", "comment", "packets", "bytes"}."""
        ...

    def mapping_counters(self, ns: str | None, scope: str = SCOPE) -> list[dict]:
        """Per floating IP direction and forwarded port: {"kind": "fip in" | "fip out" |
        "tcp" | "udp", "outside", "inside", "packets", "bytes"} (connections translated)."""
        ...


#: The Protocol's methods, for the test that both backends implement exactly these.
CONTRACT = ("render", "observe", "load", "check", "update_elements", "remove", "element_changes",
            "mappings", "pending_flushes", "describe_drift", "counters", "mapping_counters")


# Checks shared by both backends. Every string natns writes into a rule
# passes one of these first, so neither tool's quoting can be subverted.


def check_iface(name: str) -> str:
    """`name` if it is a plain interface name (no wildcard, no quoting needed)."""
    if not isinstance(name, str) or not _IFACE_RE.fullmatch(name):
        raise UserError(
            f"firewall: interface name {name!r} is not 1-15 of [A-Za-z0-9_.-] "
            "starting with a letter or digit"
        )
    return name


def check_table(name: str) -> str:
    """`name` if it is a scope natns owns: ``natns`` or ``natnsup-<hex>`` (see marks.py)."""
    if not is_scope(name):
        raise UserError(f"firewall: {name!r} is not a natns table/chain scope")
    return name


def check_comment(text: str) -> str:
    """`text` if it can be stored as a rule or table comment by both backends."""
    if not isinstance(text, str) or not _COMMENT_RE.fullmatch(text) or len(text) > MAX_COMMENT:
        raise UserError(
            f"firewall: comment {text!r} must be at most {MAX_COMMENT} printable "
            "ASCII characters without '\"' or '\\'"
        )
    return text


def canonical_source(source: str, version: int = 4) -> ipaddress.IPv4Network:
    """`source` as an IPv4 (or `version` 6) network with host bits cleared (what both tools store)."""
    try:
        net = ipaddress.ip_network(source, strict=False)
    except ValueError as exc:
        raise UserError(f"firewall: source {source!r} is not a network: {exc}") from None
    if net.version != version:
        raise UserError(f"firewall: source {source!r} is not IPv{version}")
    return net


def canonical_source6(source: str) -> ipaddress.IPv6Network:
    """`source` as an IPv6 network with host bits cleared."""
    return canonical_source(source, 6)


def canonical_address6(addr: str) -> str:
    """`addr` as a canonical IPv6 address string."""
    try:
        a = ipaddress.ip_address(addr)
    except ValueError as exc:
        raise UserError(f"firewall: IPv6 address: {exc}") from None
    if a.version != 6:
        raise UserError(f"firewall: {addr!r} is not IPv6")
    return str(a)


#: ICMPv6 neighbour discovery (router solicitation/advertisement, neighbour
#: solicitation/advertisement, redirect): what a router's links need to work at all.
ND_TYPES = (133, 134, 135, 136, 137)


def canonical_address(addr: str) -> str:
    """`addr` as a canonical IPv4 address string."""
    if isinstance(addr, str) and CANONICAL_V4.fullmatch(addr):
        return addr  # already canonical: ~10x cheaper than parsing it (a router's 5,000 floating IPs)
    try:
        return str(ipv4_address(addr, "SNAT address"))
    except ValueError as exc:
        raise UserError(f"firewall: SNAT address: {exc}") from None


def mapping_order(d: dict) -> tuple:
    """Sort key of `mapping_counters` rows: floating IPs (in, then out) by address, then
    port forwards by address, port and protocol."""
    addr, _, port = d["outside"].partition(":")
    return (d["kind"].split()[0] != "fip", tuple(int(x) for x in addr.split(".")), int(port or 0), d["kind"])


def multiset_diff(have, want) -> tuple[list, list]:
    """(what `want` has more of than `have`, what `have` has more of than `want`), as lists
    in their own order: missing and extra items of two sequences that may repeat items."""
    from collections import Counter

    h, w = Counter(have), Counter(want)
    missing, extra = w - h, h - w
    out_missing, out_extra = [], []
    for item in want:
        if missing[item] > 0:
            missing[item] -= 1
            out_missing.append(item)
    for item in have:
        if extra[item] > 0:
            extra[item] -= 1
            out_extra.append(item)
    return out_missing, out_extra


def snat_comment(network: str) -> str:
    """The comment natns puts on the rule it writes for `network`."""
    return check_comment(f"natns snat {network}")

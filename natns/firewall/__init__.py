"""The firewall layer: natns's own NAT rules in one namespace, two backends.

A backend turns a backend-neutral `FirewallIntent` into its own rules
(`render`), reads back the rules natns owns in a namespace (`observe`),
replaces them in one atomic transaction (`load`), takes them away (`remove`)
and reads their packet counters (`counters`).

Ownership is by name, so no state file is needed and nothing else is touched:

* nftables: the table ``ip natns`` (comment ``natns:<lab>:<namespace>``);
* iptables: chains named ``natns-*`` in table nat, and the jump rules into
  them (they carry ``-m comment --comment natns``).

`render(intent)` and `observe(ns)` both give a `Ruleset`, compared with ``==``
on its canonical `key`; after ``load(ns, render(intent))``,
``observe(ns) == render(intent)``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import UserError
from ..state import FirewallIntent

BACKENDS = ("nftables", "iptables")

#: Longest comment both backends store (nft allows 128 characters, xt_comment 255).
MAX_COMMENT = 128

_IFACE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
# Printable ASCII without the double quote and backslash: neither nft's nor
# iptables-restore's string syntax then needs an escape.
_COMMENT_RE = re.compile(r"[ !#-\[\]-~]*")


@dataclass(frozen=True)
class Ruleset:
    """natns's rules for one namespace, in one backend's canonical form.

    `key` holds the canonical content only (no handles, no counter values),
    so two Rulesets are equal exactly when the rules are.
    """

    backend: str
    key: tuple
    #: What `load` feeds the tool, when the key alone can't say it (nftables);
    #: not part of equality: a Ruleset read back from the kernel has none.
    body: str = field(default="", compare=False, hash=False, repr=False)

    def text(self) -> str:
        """The rules as the backend writes them (nft syntax, iptables-save lines)."""
        return self.body or _module(self.backend).ruleset_text(self.key)


class Backend(Protocol):
    """What every firewall backend provides; see nftables.py and iptables.py."""

    name: str

    def render(self, intent: FirewallIntent) -> Ruleset:
        """The Ruleset natns wants for `intent`."""
        ...

    def observe(self, ns: str | None) -> Ruleset | None:
        """natns's own rules in `ns`, or None if it has none there."""
        ...

    def load(self, ns: str | None, ruleset: Ruleset) -> None:
        """Atomically replace natns's own rules in `ns` with `ruleset`."""
        ...

    def remove(self, ns: str | None) -> None:
        """Remove natns's own rules in `ns`, nothing else; no error if absent."""
        ...

    def counters(self, ns: str | None) -> list[dict]:
        """Per natns rule: {"chain", "rule", "comment", "packets", "bytes"}."""
        ...

    def pending_flushes(self, ruleset: Ruleset | None) -> set[tuple[str, str]]:
        """Conntrack flushes for removed mappings noted in `ruleset` as still due:
        (kind, outside). See FirewallIntent.flush."""
        ...

    def mapping_counters(self, ns: str | None) -> list[dict]:
        """Per floating IP direction and forwarded port: {"kind": "fip in" | "fip out" |
        "tcp" | "udp", "outside", "inside", "packets", "bytes"} (connections translated)."""
        ...

    def element_changes(self, old: Ruleset, new: Ruleset) -> dict | None:
        """If `old` becomes `new` by adding/removing set or map elements only, those
        changes ({set: (added, removed)}); None when a full `load` is needed."""
        ...

    def update_elements(self, ns: str | None, scope: str, changes: dict) -> None:
        """Apply `element_changes` in one transaction, leaving rules and counters alone."""
        ...


def get_backend(name: str) -> Backend:
    """The backend called `name` (one of BACKENDS)."""
    if name not in BACKENDS:
        raise UserError(
            f"unknown firewall backend {name!r} (choose one of {', '.join(BACKENDS)})"
        )
    return _module(name).BACKEND


def _module(name: str):
    # Imported on first use: the backend modules import Ruleset from here.
    if name == "nftables":
        from . import nftables as mod
    elif name == "iptables":
        from . import iptables as mod
    else:
        raise UserError(f"unknown firewall backend {name!r}")
    return mod


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


_TABLE_RE = re.compile(r"natns(?:up-[0-9a-f]{1,12})?")


def check_table(name: str) -> str:
    """`name` if it is a scope natns owns: ``natns`` or ``natnsup-<hex>``."""
    if not isinstance(name, str) or not _TABLE_RE.fullmatch(name):
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


def canonical_source(source: str) -> ipaddress.IPv4Network:
    """`source` as an IPv4 network with host bits cleared (what both tools store)."""
    try:
        net = ipaddress.ip_network(source, strict=False)
    except ValueError as exc:
        raise UserError(f"firewall: source {source!r} is not a network: {exc}") from None
    if net.version != 4:
        raise UserError(f"firewall: source {source!r} is not IPv4")
    return net


def canonical_address(addr: str) -> str:
    """`addr` as a canonical IPv4 address string."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError as exc:
        raise UserError(f"firewall: SNAT address {addr!r}: {exc}") from None
    if ip.version != 4:
        raise UserError(f"firewall: SNAT address {addr!r} is not IPv4")
    return str(ip)


def mapping_order(d: dict) -> tuple:
    """Sort key of `mapping_counters` rows: floating IPs (in, then out) by address, then
    port forwards by address, port and protocol."""
    addr, _, port = d["outside"].partition(":")
    return (d["kind"].split()[0] != "fip", tuple(int(x) for x in addr.split(".")), int(port or 0), d["kind"])


def snat_comment(network: str) -> str:
    """The comment natns puts on the rule it writes for `network`."""
    return check_comment(f"natns snat {network}")


__all__ = [
    "BACKENDS",
    "Backend",
    "Ruleset",
    "get_backend",
    "check_iface",
    "check_comment",
    "check_table",
    "canonical_source",
    "canonical_address",
    "snat_comment",
]

"""The firewall layer: natns's own NAT rules in one namespace, two backends.

A backend turns a backend-neutral `FirewallIntent` into its own rules
(`render`), reads back the rules natns owns in a namespace (`observe`),
replaces them in one atomic transaction (`load`), asks the kernel whether
they would load (`check`), takes them away (`remove`) and reads their packet
counters (`counters`). The contract is `base.FirewallBackend`.

Ownership is by name, so no state file is needed and nothing else is touched
(the names are in marks.py):

* nftables: the table ``ip natns`` (comment ``natns:<lab>:<namespace>``);
* iptables: chains named ``natns-*`` in table nat, and the jump rules into
  them (they carry ``-m comment --comment natns``).

`render(intent)` and `observe(ns)` both give a `Ruleset`, compared with ``==``
on its canonical `key`; after ``load(ns, render(intent))``,
``observe(ns) == render(intent)``.
"""

from __future__ import annotations

from ..errors import UserError
from .base import (  # noqa: F401  (the package's public face)
    CONTRACT,
    MAX_COMMENT,
    FirewallBackend,
    Ruleset,
    RulesetKey,
    canonical_address,
    canonical_source,
    check_comment,
    check_iface,
    check_table,
    mapping_order,
    snat_comment,
)

BACKENDS = ("nftables", "iptables")

#: The contract's old name.
Backend = FirewallBackend


def get_backend(name: str) -> FirewallBackend:
    """The backend called `name` (one of BACKENDS)."""
    if name not in BACKENDS:
        raise UserError(
            f"unknown firewall backend {name!r} (choose one of {', '.join(BACKENDS)})"
        )
    if name == "nftables":
        from .nftables import BACKEND
    else:
        from .iptables import BACKEND
    return BACKEND


def backends() -> tuple[FirewallBackend, ...]:
    """Every backend, in BACKENDS order (what observe reads, what the planner may remove)."""
    return tuple(get_backend(n) for n in BACKENDS)


__all__ = [
    "BACKENDS",
    "Backend",
    "FirewallBackend",
    "Ruleset",
    "RulesetKey",
    "backends",
    "get_backend",
    "check_iface",
    "check_comment",
    "check_table",
    "canonical_source",
    "canonical_address",
    "mapping_order",
    "snat_comment",
]

"""A lab's routers' connection tracking (NAT) tables: the view `natns conntrack` shows.

Reading, watching and deleting entries over ctnetlink is natns/kernel/conntrack.py
(whose names are re-exported here: `Entry`, `CtTuple`, `Translation`, `Event`,
`Watch`, `stream`, `entries`, `decode`, `translations`, `accounting`, ...); this
module adds what needs the topology: a `Table` per router and which routers to
look at.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..privileges import require_root
from ..kernel.conntrack import (  # noqa: F401  (public names of this module before the move)
    ACCT_SYSCTL,
    GROUPS,
    IPCTNL_MSG_CT_DELETE,
    IPCTNL_MSG_CT_NEW,
    IPS_ASSURED,
    IPS_SEEN_REPLY,
    NETLINK_NETFILTER,
    NFNL_SUBSYS_CTNETLINK,
    NLM_F_CREATE,
    CtTuple,
    Entry,
    Event,
    Translation,
    Watch,
    accounting,
    decode,
    delete,
    entries,
    stream,
    translations,
)


@dataclass
class Table:
    """The conntrack table of one namespace."""

    namespace: str
    accounting: bool | None  # nf_conntrack_acct; None: conntrack not loaded there
    entries: list[Entry] = field(default_factory=list)
    router: str | None = None

    def to_json(self) -> dict:
        return {"router": self.router, "namespace": self.namespace, "accounting": self.accounting,
                "entries": [e.to_json() for e in self.entries]}


def table(ns: str, router: str | None = None, families: tuple[int, ...] = (4, 6)) -> Table:
    """The conntrack table of namespace `ns` (a router's), with the accounting setting:
    its IPv4 and IPv6 entries (or those of `families`)."""
    return Table(namespace=ns, accounting=accounting(ns), entries=entries(ns, families), router=router)


def routers(t, name: str | None = None) -> list:
    """The routers of topology `t` to look at: the one called (or living in) `name`, or all.

    Each must be up (UserError otherwise).
    """
    from .endpoints import require_up, router_by_name

    chosen = [router_by_name(t, name)] if name else list(t.routers)
    for r in chosen:
        require_up(t, r.ns)
    return chosen


def tables(t, name: str | None = None, families: tuple[int, ...] = (4, 6)) -> list[Table]:
    """The conntrack tables of the lab's routers (or of router `name`), IPv4 and IPv6 (or `families`)."""
    require_root("conntrack")
    return [table(r.ns, r.name, families) for r in routers(t, name)]

"""The tracing table ``ip natns_trace``: its name, its chains and the nft scripts that load and remove it.

Two chains on every IPv4 hook, one before everything else (priority
`FIRST`) and one after everything else (priority `LAST`); the first chains
of prerouting and output set ``meta nftrace 1`` on the probe and its replies.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...kernel.netfilter import Chain

TABLE = "natns_trace"
FAMILY = "ip"
#: The family of the tracing table of an IPv6 trace (``ip6 natns_trace``): its chains see IPv6 only.
FAMILY6 = "ip6"
#: Priorities of the tracer chains: before and after any chain anyone else uses.
FIRST = -1000000
LAST = 1000000
HOOKS = ("prerouting", "input", "forward", "output", "postrouting")


def tracer_chains(family: str = FAMILY) -> list[Chain]:
    """The chains of table ``ip natns_trace`` (``ip6`` with `family`), first and last on every hook."""
    out = []
    for hook in HOOKS:
        out.append(Chain(family, TABLE, f"{hook}_first", hook, FIRST, "filter", "accept"))
        out.append(Chain(family, TABLE, f"{hook}_last", hook, LAST, "filter", "accept"))
    return out



def table_script(match_rules: Sequence[str], family: str = FAMILY) -> str:
    """The nft script that (re)creates table ``ip natns_trace`` (``ip6`` with `family`) with the
    given match rules."""
    lines = [f"add table {family} {TABLE}", f"delete table {family} {TABLE}", f"table {family} {TABLE} {{"]
    for c in tracer_chains(family):
        lines.append(f"\tchain {c.name} {{")
        lines.append(f"\t\ttype filter hook {c.hook} priority {c.priority}; policy accept;")
        if c.priority == FIRST and c.hook in ("prerouting", "output"):
            for m in match_rules:
                lines.append(f"\t\t{m} meta nftrace set 1")
        lines.append("\t}")
    lines.append("}")
    return "\n".join(lines) + "\n"


REMOVE_SCRIPT = f"add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n"


def remove_script(family: str = FAMILY) -> str:
    """The nft script that deletes the tracing table of `family` (there or not)."""
    return f"add table {family} {TABLE}\ndelete table {family} {TABLE}\n"

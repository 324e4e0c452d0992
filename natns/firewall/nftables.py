"""nftables backend: natns owns exactly one table, ``ip natns``, per namespace.

The table carries the comment ``natns:<lab>:<namespace>`` and one base chain::

    table ip natns {
        comment "natns:lab:router"
        chain postrouting {
            type nat hook postrouting priority srcnat; policy accept;
            oifname "eth0" ip saddr 192.0.2.0/24 counter masquerade comment "natns snat tenant"
            oifname "eth0" ip saddr 192.0.2.8/29 counter snat to 198.51.100.116 comment "natns snat dmz"
        }
    }

Nothing outside that table is read or written.

Loading is one nft transaction whose first two commands are ``add table``
and ``delete table``: the add makes the delete safe when the table is absent,
the delete throws away whatever was there, and the table then written in the
same batch is exactly the wanted one. Either all of it applies or none.

The transaction is written in nft's own syntax, not JSON: nft before 1.0.8
(Debian 12 ships 1.0.6) silently drops a table's comment given in JSON and
never prints it in ``nft -j list`` output, so the ownership mark would be
lost. Every string that goes into the script is checked first (see
`natns.firewall.check_comment`, `check_iface`); nft strings have no escapes,
so those checks are what make the script safe.

Reading back uses ``nft -j list table ip natns`` and reduces it to a
canonical key, the same key `render` builds: no handles, no counter values,
no metainfo. Rules natns did not write in that table stay visible in the key
(as raw JSON), so they show up as a difference instead of being hidden.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import KernelError
from ..kernel import nsexec
from ..state import FirewallIntent
from . import (
    Ruleset,
    canonical_address,
    canonical_source,
    check_comment,
    check_iface,
    check_table,
    snat_comment,
)

NAME = "nftables"
FAMILY = "ip"
TABLE = "natns"
CHAIN = "postrouting"

# Priority names nft prints for the ip family, by hook.
_PRIO_NAMES = {("postrouting", 100): "srcnat", ("prerouting", -100): "dstnat"}

# Canonical key layout (all tuples, so a Ruleset is hashable):
#   (("table", family, name, comment),
#    (chain, ...),          chain  = (name, type, hook, prio, policy, (rule, ...))
#    (other, ...))          other  = JSON text of any non-chain, non-rule object
#   rule = ("snat", oifname, source, to_or_None, comment)   natns's own shape
#        | ("raw", expr_json, comment)                      anything else


class NftablesBackend:
    """natns's NAT rules as the nftables table ``ip natns``."""

    name = NAME

    def render(self, intent: FirewallIntent) -> Ruleset:
        """The Ruleset natns wants for `intent`: one table, one chain, a rule per SnatRule."""
        rules = []
        for r in intent.snat:
            to = canonical_address(r.to) if r.to is not None else None
            src = str(canonical_source(r.source))
            op = "!=" if r.out_negate else "=="
            rules.append(("snat", op, check_iface(r.out_iface), src, to, snat_comment(r.network)))
        comment = check_comment(f"natns:{intent.lab}:{intent.namespace}")
        chain = (CHAIN, "nat", "postrouting", 100, "accept", tuple(rules))
        return Ruleset(NAME, (("table", FAMILY, check_table(intent.scope), comment), (chain,), ()))

    def observe(self, ns: str | None, scope: str = TABLE) -> Ruleset | None:
        """Table ``ip <scope>`` (default ``ip natns``) in `ns` as a Ruleset, or None if absent."""
        objs = _list_table(ns, scope)
        if objs is None:
            return None
        return Ruleset(NAME, _key_from_json(ns, objs, scope))

    def load(self, ns: str | None, ruleset: Ruleset) -> None:
        """Replace table ``ip natns`` in `ns` with `ruleset`, in one nft transaction.

        Teardown is `remove`.
        """
        if ruleset.backend != NAME:
            raise ValueError(f"cannot load a {ruleset.backend} ruleset with the nftables backend")
        _check_loadable(ruleset.key)
        script = _reset_lines(ruleset.key[0][2]) + ruleset_text(ruleset.key)
        nsexec.run(ns, ["nft", "-f", "-"], input=script)

    def remove(self, ns: str | None, scope: str = TABLE) -> None:
        """Delete table ``ip <scope>`` in `ns` and nothing else; no error if it is absent.

        Undoes `load`.
        """
        nsexec.run(ns, ["nft", "-f", "-"], input=_reset_lines(check_table(scope)))

    def counters(self, ns: str | None, scope: str = TABLE) -> list[dict]:
        """Packet and byte counts of each rule in table ``ip <scope>`` (empty if no table)."""
        objs = _list_table(ns, scope)
        if objs is None:
            return []
        out = []
        for obj in objs:
            rule = obj.get("rule")
            if rule is None:
                continue
            expr = rule.get("expr", [])
            comment = rule.get("comment")
            packets = byts = 0
            for e in expr:
                if isinstance(e, dict) and isinstance(e.get("counter"), dict):
                    packets = int(e["counter"].get("packets", 0))
                    byts = int(e["counter"].get("bytes", 0))
            out.append({
                "chain": rule.get("chain"),
                "rule": _rule_text(_rule_key(expr, comment)),
                "comment": comment,
                "packets": packets,
                "bytes": byts,
            })
        return out


BACKEND = NftablesBackend()


def ruleset_text(key: tuple) -> str:
    """`key` written as an nft script: the ``table ip natns { ... }`` block."""
    (_, family, name, comment), chains, others = key
    lines = [f"table {family} {name} {{"]
    if comment is not None:
        lines.append(f'\tcomment "{comment}"')
    for i, (cname, ctype, hook, prio, policy, rules) in enumerate(chains):
        if i:
            lines.append("")
        lines.append(f"\tchain {cname} {{")
        if ctype is not None:
            p = _PRIO_NAMES.get((hook, prio), str(prio))
            lines.append(f"\t\ttype {ctype} hook {hook} priority {p}; policy {policy};")
        for rule in rules:
            lines.append(f"\t\t{_rule_text(rule)}")
        lines.append("\t}")
    for other in others:
        lines.append(f"\t# not written by natns: {other}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _rule_text(rule: tuple) -> str:
    """One rule of the key in nft syntax (raw rules as their JSON, for display)."""
    if rule[0] == "snat":
        _, op, iface, source, to, comment = rule
        src = source[:-3] if source.endswith("/32") else source
        action = "masquerade" if to is None else f"snat to {to}"
        neg = "!= " if op == "!=" else ""
        text = f'oifname {neg}"{iface}" ip saddr {src} counter {action}'
    else:
        _, expr_json, comment = rule
        text = f"# not written by natns: {expr_json}"
    if comment is not None:
        text += f' comment "{comment}"'
    return text


def _reset_lines(table: str = TABLE) -> str:
    # "add" makes the "delete" succeed when the table is absent.
    return f"add table {FAMILY} {table}\ndelete table {FAMILY} {table}\n"


def _check_loadable(key: tuple) -> None:
    """Re-check every string of `key` before it goes into an nft script."""
    (_, _, _, comment), chains, others = key
    if others:
        raise ValueError("ruleset holds objects natns does not write; it cannot be loaded")
    if comment is not None:
        check_comment(comment)
    for _, _, _, _, _, rules in chains:
        for rule in rules:
            if rule[0] != "snat":
                raise ValueError("ruleset holds rules natns does not write; it cannot be loaded")
            check_iface(rule[2])
            if rule[5] is not None:
                check_comment(rule[5])


def _list_table(ns: str | None, table: str = TABLE) -> list[dict] | None:
    """The objects of ``nft -j list table ip <table>`` in `ns`, or None if no such table."""
    proc = nsexec.run(ns, ["nft", "-j", "list", "table", FAMILY, check_table(table)], check=False)
    if proc.returncode != 0:
        # Tell "no such table" from real failures by asking, not by error text.
        if not _table_exists(ns, table):
            return None
        msg = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[:3]) or "no output"
        where = f" in namespace {ns}" if ns else ""
        raise KernelError(
            f"nft -j list table {FAMILY} {table}{where} failed (exit {proc.returncode}): {msg}"
        )
    try:
        data = json.loads(proc.stdout)
        return [o for o in data["nftables"] if "metainfo" not in o]
    except (ValueError, KeyError, TypeError) as exc:
        raise KernelError(f"nft -j list table {FAMILY} {table}: unreadable output ({exc})") from None


def _table_exists(ns: str | None, table: str = TABLE) -> bool:
    """Whether `ns` has table ``ip <table>`` (asks by listing, not by error text)."""
    proc = nsexec.run(ns, ["nft", "-j", "list", "tables", FAMILY])
    try:
        data = json.loads(proc.stdout)["nftables"]
    except (ValueError, KeyError, TypeError) as exc:
        raise KernelError(f"nft -j list tables {FAMILY}: unreadable output ({exc})") from None
    return any(o.get("table", {}).get("name") == table for o in data)


def _table_comment_from_text(ns: str | None, table: str = TABLE) -> str | None:
    # nft < 1.0.8 has no table comment in JSON output; the text listing has it.
    proc = nsexec.run(ns, ["nft", "list", "table", FAMILY, table])
    for line in proc.stdout.splitlines():
        m = re.fullmatch(r'\tcomment "(.*)"', line)
        if m:
            return m.group(1)
        if line.startswith("\t") and not line.startswith("\tcomment"):
            break  # the table's comment comes before its chains, sets, ...
    return None


def _key_from_json(ns: str | None, objs: list[dict], table_name: str = TABLE) -> tuple:
    """Canonical key of a listed table: what `render` would build for the same rules."""
    table = next((o["table"] for o in objs if "table" in o), {})
    if "comment" in table:
        comment = table["comment"]
    else:
        comment = _table_comment_from_text(ns, table_name)
    chains: dict[str, dict] = {}
    rules: dict[str, list] = {}
    others = []
    for obj in objs:
        if "table" in obj:
            continue
        if "chain" in obj:
            c = obj["chain"]
            chains[c["name"]] = c
            rules.setdefault(c["name"], [])
        elif "rule" in obj:
            r = obj["rule"]
            rules.setdefault(r["chain"], []).append(_rule_key(r.get("expr", []), r.get("comment")))
        else:
            others.append(json.dumps(_strip(obj), sort_keys=True))
    chain_keys = []
    for name in sorted(chains):
        c = chains[name]
        chain_keys.append((
            name, c.get("type"), c.get("hook"), c.get("prio"), c.get("policy"),
            tuple(rules.get(name, ())),
        ))
    return (("table", FAMILY, table_name, comment), tuple(chain_keys), tuple(sorted(others)))


def _rule_key(expr: list, comment: str | None) -> tuple:
    """A listed rule's key: natns's own shape if it is one, else its raw JSON."""
    parsed = _parse_snat(expr)
    if parsed is not None:
        return ("snat", *parsed, comment)
    return ("raw", json.dumps(_strip(expr), sort_keys=True), comment)


def _parse_snat(expr: list) -> tuple[str, str, str, str | None] | None:
    """(op, oifname, source, to) if `expr` is exactly the shape natns writes, else None."""
    if not isinstance(expr, list) or len(expr) != 4:
        return None
    m_if, m_src, counter, action = expr
    op = "!=" if isinstance(m_if, dict) and m_if.get("match", {}).get("op") == "!=" else "=="
    iface = _match(m_if, {"meta": {"key": "oifname"}}, op)
    right = _match(m_src, {"payload": {"protocol": "ip", "field": "saddr"}})
    if not isinstance(iface, str) or right is None:
        return None
    if isinstance(right, str):
        source = f"{right}/32"
    elif isinstance(right, dict) and set(right) == {"prefix"}:
        p = right["prefix"]
        if not isinstance(p, dict) or set(p) != {"addr", "len"}:
            return None
        source = f"{p['addr']}/{p['len']}"
    else:
        return None
    if not (isinstance(counter, dict) and set(counter) == {"counter"}):
        return None
    if action == {"masquerade": None}:
        return op, iface, source, None
    if isinstance(action, dict) and set(action) == {"snat"}:
        s = action["snat"]
        if isinstance(s, dict) and isinstance(s.get("addr"), str) and set(s) - {"family"} == {"addr"}:
            if s.get("family", FAMILY) == FAMILY:
                return op, iface, source, s["addr"]
    return None


def _match(obj: Any, left: dict, op: str = "==") -> Any:
    """The right-hand side of ``{"match": {"op": op, "left": left, ...}}``, else None."""
    if not (isinstance(obj, dict) and set(obj) == {"match"}):
        return None
    m = obj["match"]
    if not isinstance(m, dict) or m.get("op") != op or m.get("left") != left:
        return None
    if set(m) != {"op", "left", "right"}:
        return None
    return m["right"]


def _strip(obj: Any) -> Any:
    """`obj` without handles and counter values, for comparing raw JSON."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "handle":
                continue
            if k == "counter" and isinstance(v, dict) and set(v) <= {"packets", "bytes"}:
                out[k] = None
                continue
            out[k] = _strip(v)
        return out
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj

"""Every reader of netfilter rules: nft rulesets, iptables-save of both flavours, legacy tables.

One place reads what a namespace's netfilter holds, whatever wrote it, and
turns the tools' text into plain data; what the rules *mean* is for the
callers (the rule walk in explain/rules.py, trace, the iptables backend's
observe):

* **nftables**: `read_nft(ns)` runs ``nft -j list ruleset`` (through
  libnftables in-process, see nftlib) and, when asked, ``nft -a list
  ruleset`` for each rule's text by handle; `parse_nft_json` and
  `NftRuleset` read the JSON: tables, chains (`Chain`), rules, named sets and
  maps, the handles of each chain's rules.
* **iptables-save** of either flavour: `run_save(ns, flavour)` runs
  ``iptables-nft-save`` / ``iptables-legacy-save`` / plain ``iptables-save``
  (a table, counters), `parse_save(text)` reads any of their outputs into a
  `Save`: tables, chains with policy and counters, rules as argument tuples
  with their line, position and counters. `match_nft_handles` gives
  iptables-nft rules their nft handles (iptables-nft keeps a chain's rules in
  the nft chain of the same name, in the same order). `take_owned` picks out
  the chains of one owner (a name prefix) and the rules that jump to them.
* **legacy tables**: `legacy_tables(ns)` asks the kernel which iptables-legacy
  tables exist (/proc/net/ip_tables_names of the namespace, so that no
  table is instantiated by looking); `legacy_summary(save)` describes what
  they hold.
* **flavour**: `iptables_flavour()` says what plain ``iptables`` is on this
  machine (``nft`` or ``legacy``).

`Chain` is the one chain type: a base chain (with hook, priority, type and
policy) or a regular one, of nftables or of either iptables flavour.

Only reads: nothing here changes a ruleset.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import subprocess
from dataclasses import dataclass, field

from ..errors import KernelError
from . import nftlib, nsexec

#: The tables iptables knows, in iptables-save's order.
IPT_TABLES = ("raw", "mangle", "nat", "filter", "security")
#: iptables table -> builtin chain -> netfilter priority (NF_IP_PRI_*).
IPT_PRIORITY = {
    "raw": {"PREROUTING": -300, "OUTPUT": -300},
    "mangle": {c: -150 for c in ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")},
    "nat": {"PREROUTING": -100, "OUTPUT": -100, "INPUT": 100, "POSTROUTING": 100},
    "filter": {"INPUT": 0, "FORWARD": 0, "OUTPUT": 0},
    "security": {"INPUT": 50, "FORWARD": 50, "OUTPUT": 50},
}
#: iptables table -> the nft chain type of its builtin chains.
IPT_TYPE = {"raw": "filter", "mangle": "filter", "nat": "nat", "filter": "filter", "security": "filter"}
#: The programs that print each flavour's rules.
SAVE_TOOL = {"nft": "iptables-nft-save", "legacy": "iptables-legacy-save", None: "iptables-save",
             "nft6": "ip6tables-nft-save"}  # IPv6: natns's ip6tables chains (iptables backend)
#: Rule sources, as the rule walk names them.
SOURCE_OF_FLAVOUR = {"nft": "iptables-nft", "legacy": "iptables-legacy"}


# --------------------------------------------------------------------------
# Chains


@dataclass
class Chain:
    """A chain: a base chain (hook set) or a regular one, of nftables or iptables.

    `source` says who wrote it: "nftables", "iptables-nft" or
    "iptables-legacy". `rules` is for the caller (the rule walk keeps its
    evaluated rules there).
    """

    family: str
    table: str
    name: str
    hook: str | None = None
    prio: int | None = None
    type: str | None = None
    policy: str | None = None
    source: str = "nftables"
    rules: list = field(default_factory=list)
    # netdev (and inet) ingress/egress chains: the devices they are hooked on
    devices: tuple[str, ...] = ()
    # the chain's table has `flags dormant`: the kernel runs none of its chains
    dormant: bool = False

    @property
    def priority(self) -> int | None:
        """The hook priority (`prio`)."""
        return self.prio

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.family, self.table, self.name)


def ipt_base_chain(table: str, name: str) -> tuple[str | None, int | None, str | None]:
    """(hook, priority, type) of iptables builtin chain `name` of `table`; Nones for a user chain."""
    if name not in IPT_PRIORITY.get(table, {}):
        return None, None, None
    ctype = IPT_TYPE[table]
    if table == "mangle" and name == "OUTPUT":
        ctype = "route"
    return name.lower(), IPT_PRIORITY[table][name], ctype


# --------------------------------------------------------------------------
# nftables


@dataclass
class NftRuleset:
    """``nft -j list ruleset`` (and, when read, ``nft -a list ruleset``) of one namespace."""

    objs: list[dict] = field(default_factory=list)  # the "nftables" array, metainfo included
    listing: str = ""    # `nft -a list ruleset` text ("" when not read)
    error: str | None = None  # what went wrong reading it (None: read)

    def of(self, kind: str) -> list[dict]:
        """The objects of `kind` ("table", "chain", "rule", "set", "map", ...)."""
        return [o[kind] for o in self.objs if kind in o]

    def tables(self) -> list[tuple[str, str]]:
        """(family, name) of every table, in listing order."""
        return [(t["family"], t["name"]) for t in self.of("table")]

    def dormant_tables(self) -> set[tuple[str, str]]:
        """(family, name) of the tables with ``flags dormant`` (the kernel runs none of their
        chains). From the JSON's table flags and, as nft 1.0.6's JSON misprints them (it gives
        the table's name), from the `listing`'s ``flags dormant`` line."""
        out = {(t["family"], t["name"]) for t in self.of("table")
               if "dormant" in (t.get("flags") if isinstance(t.get("flags"), list) else [t.get("flags")])}
        return out | nft_listing_facts(self.listing)[0]

    def chains(self) -> list[Chain]:
        """Every chain, base chains with hook, priority, type and policy (and, from `listing`,
        the devices of ingress/egress chains; nft 1.0.6's JSON leaves them out)."""
        dormant = self.dormant_tables()
        devices = nft_listing_facts(self.listing)[1]
        out = []
        for c in self.of("chain"):
            key = (c["family"], c["table"], c["name"])
            dev = c.get("dev")
            out.append(Chain(*key, c.get("hook"), c.get("prio"), c.get("type"), c.get("policy"),
                             devices=tuple([dev] if isinstance(dev, str) else dev or devices.get(key, ())),
                             dormant=key[:2] in dormant))
        return out

    def base_chains(self) -> dict[tuple[str, str, str], Chain]:
        """The base chains by (family, table, name) that the kernel runs (a dormant table's are not)."""
        return {c.key: c for c in self.chains() if c.hook and not c.dormant}

    def rules(self) -> list[dict]:
        """Every rule object (family, table, chain, handle, expr), in listing order."""
        return self.of("rule")

    def handles(self, family: str | None = None) -> dict[tuple[str, str, str], list[int]]:
        """The handles of each chain's rules, in order, by (family, table, chain)."""
        out: dict[tuple[str, str, str], list[int]] = {}
        for r in self.rules():
            if family is None or r["family"] == family:
                out.setdefault((r["family"], r["table"], r["chain"]), []).append(r["handle"])
        return out

    def sets(self, kind: str = "set") -> dict[tuple[str, str], dict[str, list]]:
        """Named sets (kind "set": their elements) or maps (kind "map": [key, value] pairs),
        by (family, table) and name."""
        out: dict[tuple[str, str], dict[str, list]] = {}
        for s in self.of(kind):
            elems = []
            for e in s.get("elem", []):
                elems.append(e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e)
            if kind == "map":
                elems = [tuple(e) for e in elems if isinstance(e, list) and len(e) == 2]
            out.setdefault((s["family"], s["table"]), {})[s["name"]] = elems
        return out

    def hook_info(self, family: str = "ip") -> dict[tuple[str, str], tuple[str | None, int | None, str | None]]:
        """(table, chain) -> (hook, prio, type) of the chains of `family`."""
        return {(c.table, c.name): (c.hook, c.prio, c.type) for c in self.chains() if c.family == family}

    def rule_texts(self) -> dict[tuple[str, str, int], str]:
        """("family table", chain, handle) -> the rule's text (counter values left out), from `listing`."""
        return nft_rule_texts(self.listing)


def parse_nft_json(text: str) -> NftRuleset:
    """The output of ``nft -j list ...`` as an NftRuleset; ValueError if it is not nft's JSON."""
    data = json.loads(text or "{}")
    objs = data.get("nftables", []) if isinstance(data, dict) else None
    if not isinstance(objs, list):
        raise ValueError("no nftables array")
    return NftRuleset(objs)


def nft_rule_texts(listing: str) -> dict[tuple[str, str, int], str]:
    """("family table", chain, handle) -> rule text, from ``nft -a list ruleset``."""
    out: dict[tuple[str, str, int], str] = {}
    table = chain = None
    for line in listing.splitlines():
        s = line.strip()
        m = re.match(r"table (\S+) (\S+) \{", s)
        if m:
            table, chain = f"{m.group(1)} {m.group(2)}", None
            continue
        m = re.match(r"chain (\S+) \{", s)
        if m:
            chain = m.group(1)
            continue
        m = re.match(r"(.*\S)\s+# handle (\d+)$", s)
        if m and table and chain and not s.startswith(("type ", "chain ", "set ", "map ")):
            text = re.sub(r"counter packets \d+ bytes \d+", "counter", m.group(1))
            out[(table, chain, int(m.group(2)))] = re.sub(r"\s+", " ", text)
    return out


def nft_listing_facts(listing: str) -> tuple[set[tuple[str, str]], dict[tuple[str, str, str], tuple[str, ...]]]:
    """From ``nft list ruleset`` text: the (family, name) of tables with ``flags dormant``, and
    the devices of each (family, table, chain) hooked on devices (``device "eth0"``,
    ``devices = { "a", "b" }``)."""
    dormant: set[tuple[str, str]] = set()
    devices: dict[tuple[str, str, str], tuple[str, ...]] = {}
    table = chain = None
    for line in listing.splitlines():
        s = line.strip()
        m = re.match(r"table (\S+) (\S+) \{", s)
        if m:
            table, chain = (m.group(1), m.group(2)), None
            continue
        m = re.match(r"chain (\S+) \{", s)
        if m:
            chain = m.group(1)
            continue
        if table and chain is None and re.match(r"flags\b.*\bdormant\b", s):
            dormant.add(table)
        m = re.match(r"type \S+ hook \S+ (?:device (\S+)|devices = \{([^}]*)\})", s)
        if m and table and chain:
            names = m.group(1) or m.group(2)
            devices[(*table, chain)] = tuple(d.strip().strip('"') for d in names.split(",") if d.strip())
    return dormant, devices


def read_nft_list(ns: str | None, *what: str, unflagged: bool = False) -> NftRuleset:
    """``nft -j list WHAT...`` in `ns` ("ruleset"; "tables", "ip"; "table", "ip", "nat";
    "chains", "ip"; ...) as an NftRuleset.

    Never raises for what the kernel or the tool says: `error` holds it (the
    JSON then is what could be read: nothing, for a table that does not
    exist). OSError only if nft can't be run at all. `unflagged` as for
    `nftlib.run` (the caller's table dump found no table with flags).
    """
    proc = nftlib.run(ns, ["nft", "-j", "list", *what], check=False, unflagged=unflagged)
    rs = NftRuleset()
    if proc.returncode != 0:
        rs.error = (proc.stderr or proc.stdout).strip() or f"exit {proc.returncode}"
    try:
        rs.objs = parse_nft_json(proc.stdout).objs
    except ValueError as exc:
        rs.error = rs.error or str(exc)
    return rs


def read_nft(ns: str | None, *, texts: bool = False) -> NftRuleset:
    """The nft ruleset of namespace `ns` (None: natns's own); with `texts`, each rule's text too.

    Never raises for what the kernel or the tool says: `error` holds it (see
    read_nft_list). OSError only if nft can't be run at all.
    """
    rs = read_nft_list(ns, "ruleset")
    if texts:
        rs.listing = nftlib.run(ns, ["nft", "-a", "list", "ruleset"], check=False).stdout
    return rs


# --------------------------------------------------------------------------
# iptables-save


@dataclass
class SavedChain:
    """A chain line of iptables-save (``:NAME POLICY [packets:bytes]``)."""

    table: str
    name: str
    policy: str | None  # "ACCEPT", "DROP" for builtin chains; None for "-" (a user chain)
    packets: int | None = None
    bytes: int | None = None


@dataclass
class SavedRule:
    """An ``-A CHAIN ...`` line of iptables-save."""

    table: str
    chain: str
    args: tuple[str, ...]  # the words after "-A CHAIN", unquoted
    line: str              # the line as printed (a ``[p:b]`` counter prefix left out)
    position: int          # 1-based, in its chain
    packets: int | None = None  # with `iptables-save -c`
    bytes: int | None = None
    handle: int | None = None   # the nft handle of an iptables-nft rule (see match_nft_handles)

    @property
    def target(self) -> str | None:
        """The chain or target the rule jumps or goes to (-j/-g), if any."""
        return jump_target(self.args)


@dataclass
class Save:
    """One iptables-save output: tables, chains and rules, in order."""

    tables: list[str] = field(default_factory=list)
    chains: dict[tuple[str, str], SavedChain] = field(default_factory=dict)  # by (table, name)
    rules: list[SavedRule] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # lines that could not be read (unquoting)
    # tables iptables-nft-save says it cannot show ("# Table `nat' contains incompatible
    # base-chains", "# Table `filter' is incompatible"): native nft tables of an iptables name
    incompatible: list[str] = field(default_factory=list)

    def rules_of(self, table: str, chain: str) -> list[SavedRule]:
        return [r for r in self.rules if r.table == table and r.chain == chain]

    def by_chain(self) -> dict[tuple[str, str], list[SavedRule]]:
        """The rules grouped by (table, chain), each group in order."""
        out: dict[tuple[str, str], list[SavedRule]] = {}
        for r in self.rules:
            out.setdefault((r.table, r.chain), []).append(r)
        return out


_COUNTERS = re.compile(r"\[(\d+):(\d+)\]\s+(.*)")
#: iptables-nft-save's comment for a table of its name that it cannot read (nft_is_table_compatible).
_INCOMPATIBLE = re.compile(r"#\s*Table `([^']+)' (?:is incompatible|contains incompatible)")


def parse_save(text: str, *, strict: bool = False, tables: tuple[str, ...] | None = None) -> Save:
    """Read the output of iptables-save (either flavour, with or without ``-c``).

    A rule line that can't be unquoted is recorded in `problems` ("cannot
    parse LINE"), or with `strict` raises KernelError. With `tables`, other
    tables are skipped.
    """
    out = Save()
    table = None
    positions: dict[tuple[str, str], int] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            m = _INCOMPATIBLE.match(line)
            if m and m.group(1) not in out.incompatible:
                out.incompatible.append(m.group(1))
            continue
        if line.startswith("*"):
            table = line[1:].strip()
            if tables is None or table in tables:
                out.tables.append(table)
            continue
        if line == "COMMIT":
            table = None
            continue
        if table is None or (tables is not None and table not in tables):
            continue
        packets = byts = None
        m = _COUNTERS.match(line)
        if m:
            packets, byts, line = int(m.group(1)), int(m.group(2)), m.group(3)
        if line.startswith(":"):
            parts = line[1:].split()
            if not parts:
                continue
            policy = parts[1] if len(parts) > 1 else "-"
            cp = cb = None
            if len(parts) > 2:
                cm = re.fullmatch(r"\[(\d+):(\d+)\]", parts[2])
                if cm:
                    cp, cb = int(cm.group(1)), int(cm.group(2))
            out.chains[(table, parts[0])] = SavedChain(table, parts[0], None if policy == "-" else policy, cp, cb)
            continue
        if not line.startswith("-A "):
            continue
        try:
            words = shlex.split(line)
        except ValueError as exc:
            if strict:
                raise KernelError(f"iptables-save: unreadable line {raw!r} ({exc})") from None
            out.problems.append(f"cannot parse {line!r}")
            continue
        if len(words) < 2:
            continue
        chain = words[1]
        positions[(table, chain)] = positions.get((table, chain), 0) + 1
        out.rules.append(SavedRule(table, chain, tuple(words[2:]), line, positions[(table, chain)], packets, byts))
    return out


def jump_target(args: tuple[str, ...] | list[str]) -> str | None:
    """The chain (or target) a rule's arguments jump or go to (-j/-g), if any."""
    for i, a in enumerate(args[:-1]):
        if a in ("-j", "--jump", "-g", "--goto"):
            return args[i + 1]
    return None


def run_save(ns: str | None, flavour: str | None = "nft", *, table: str | None = None,
             counters: bool = False, check: bool = False) -> subprocess.CompletedProcess:
    """Run the iptables-save of `flavour` ("nft", "legacy"; None: plain ``iptables-save``) in `ns`.

    OSError if the tool is not installed; with `check`, KernelError if it fails.
    """
    argv = [SAVE_TOOL[flavour]] + (["-t", table] if table else []) + (["-c"] if counters else [])
    return nsexec.run(ns, argv, check=check)


def match_nft_handles(save: Save, ruleset: NftRuleset, family: str = "ip") -> None:
    """Give the rules of an iptables-nft `save` the nft handles of `ruleset`.

    iptables-nft keeps a chain's rules in the nft chain of the same name, in
    the same order: the k-th ``-A CHAIN`` line is the k-th rule of the nft
    chain. A chain whose rule counts differ (changed between the two reads)
    gets no handles.
    """
    handles = ruleset.handles(family)
    for (table, chain), rules in save.by_chain().items():
        hs = handles.get((family, table, chain), [])
        if len(hs) == len(rules):
            for h, r in zip(hs, rules):
                r.handle = h


def iptables_nft_tables(save: Save, ruleset: NftRuleset | None = None) -> list[str]:
    """The ip-family nft tables to read as iptables-nft's (through `save`), not as native nft.

    The one place to decide it, table by table, as iptables-nft itself does
    (nft_is_table_compatible): a table of an iptables name whose base chains
    are iptables' own (builtin name, hook, type and priority) and whose rules
    it can translate back is iptables-nft's, and iptables-nft-save prints it.
    Any other -- a native ``table ip nat { chain postrouting { type nat hook
    postrouting priority srcnat; ... } }`` -- it announces as "Table `nat'
    contains incompatible base-chains" (printing empty builtin chains) or
    "Table `filter' is incompatible" (printing nothing): those are native nft
    tables, read from nft's JSON. Both kinds can be in one namespace.
    (`ruleset` is not needed to decide: iptables-nft-save read the same tables.)
    """
    return [t for t in save.tables if t not in save.incompatible]


def iptables_nft_lines(ns: str, ruleset: NftRuleset | None = None) -> dict[tuple[str, str, str, int], str]:
    """The iptables-save lines of the iptables-nft rules of `ns` by (family, table, chain, nft handle).

    `ruleset` (the namespace's nft ruleset, when the caller has read it) saves
    reading it again. Empty when iptables-nft-save fails or there are no such rules.
    """
    if ruleset is not None and not any(f == "ip" for f, _ in ruleset.tables()):
        return {}  # no ip table: iptables-nft has nothing here
    try:
        proc = run_save(ns, "nft")
    except OSError:
        return {}
    if proc.returncode != 0:
        return {}
    save = parse_save(proc.stdout)
    if not save.rules:
        return {}
    ruleset = ruleset if ruleset is not None else read_nft(ns)
    mine = iptables_nft_tables(save, ruleset)
    save.rules = [r for r in save.rules if r.table in mine]
    match_nft_handles(save, ruleset)
    return {("ip", r.table, r.chain, r.handle): r.line for r in save.rules if r.handle is not None}


def take_owned(text: str, prefix: str, into, *, tables: tuple[str, ...] = IPT_TABLES) -> None:
    """The chains of one owner (names starting with `prefix`) in an iptables-save output.

    Appends to `into` (any object with lists `chains`, `rules`,
    `rule_counters` and `jumps`, as the iptables backend's `_Saved`):
    (table, chain) of each chain of the owner; (table, chain, args) of
    each rule in those chains, with its (packets, bytes) (0, 0 without
    ``-c``); (table, chain, args) of each rule elsewhere that jumps or goes
    to one of them. KernelError on a line that can't be read.
    """
    save = parse_save(text, strict=True, tables=tables)
    for table, name in save.chains:
        if name.startswith(prefix):
            into.chains.append((table, name))
    for r in save.rules:
        if r.chain.startswith(prefix):
            into.rules.append((r.table, r.chain, r.args))
            into.rule_counters.append((r.packets or 0, r.bytes or 0))
        elif (r.target or "").startswith(prefix):
            into.jumps.append((r.table, r.chain, r.args))


# --------------------------------------------------------------------------
# iptables-legacy and the flavour


def _legacy_names(v6: bool = False) -> list[str]:
    # /proc/thread-self/net is the calling thread's namespace (call_in's thread).
    try:
        with open(f"/proc/thread-self/net/{'ip6' if v6 else 'ip'}_tables_names") as fh:
            return [x.strip() for x in fh if x.strip()]
    except OSError:
        return []


def legacy_tables(ns: str | None, v6: bool = False) -> list[str]:
    """The iptables-legacy (with `v6`, ip6tables-legacy) tables that exist in `ns` (the
    kernel's list: none is made by asking)."""
    return nsexec.call_in(ns, lambda: _legacy_names(v6))


def read_legacy(ns: str | None) -> Save | None:
    """The iptables-legacy rules of `ns`, or None when it has no legacy table or the tool fails.

    iptables-legacy-save (which may load kernel modules) runs only where the
    kernel says there are legacy tables.
    """
    if not legacy_tables(ns):
        return None
    try:
        proc = run_save(ns, "legacy")
    except OSError:
        return None
    if proc.returncode != 0:
        return None
    return parse_save(proc.stdout)


def legacy_summary(save: Save | None) -> str | None:
    """What an iptables-legacy `save` holds, in a few words ("2 rules and policy FORWARD DROP in
    table filter"), or None if it holds nothing (no rule, only ACCEPT policies)."""
    if save is None:
        return None
    policies = [c for c in save.chains.values() if c.policy not in (None, "ACCEPT")]
    if not save.rules and not policies:
        return None
    tables = sorted(set(save.tables))
    parts = []
    n = len(save.rules)
    if n:
        parts.append(f"{n} rule{'s' if n != 1 else ''}")
    if policies:
        parts.append("policy " + ", ".join(f"{c.name} {c.policy}" for c in policies))
    return f"{' and '.join(parts)} in table{'s' if len(tables) != 1 else ''} {', '.join(tables)}"


@functools.cache
def iptables_flavour() -> str | None:
    """What plain ``iptables`` is on this machine: "nft", "legacy", or None if it can't be told
    (not installed). Asked once."""
    try:
        v = nsexec.run(None, ["iptables", "--version"], check=False).stdout
    except OSError:
        return None
    if "nf_tables" in v:
        return "nft"
    if "legacy" in v:
        return "legacy"
    return None


def nft_based() -> bool:
    """Whether plain ``iptables`` is iptables-nft (its tables are nf_tables tables nft lists)."""
    return iptables_flavour() == "nft"


__all__ = [
    "Chain",
    "IPT_PRIORITY",
    "IPT_TABLES",
    "IPT_TYPE",
    "NftRuleset",
    "Save",
    "SavedChain",
    "SavedRule",
    "iptables_flavour",
    "iptables_nft_lines",
    "iptables_nft_tables",
    "ipt_base_chain",
    "jump_target",
    "legacy_summary",
    "legacy_tables",
    "match_nft_handles",
    "nft_based",
    "nft_rule_texts",
    "parse_nft_json",
    "parse_save",
    "read_legacy",
    "read_nft",
    "read_nft_list",
    "run_save",
    "take_owned",
]

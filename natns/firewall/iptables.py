"""iptables backend: natns's own chain in table nat, reached by one jump.

What natns writes, as ``iptables-save -t nat`` shows it::

    :natns-POSTROUTING - [0:0]
    -A POSTROUTING -m comment --comment natns -j natns-POSTROUTING
    -A natns-POSTROUTING -s 192.0.2.0/24 -o eth0 -m comment --comment "natns snat tenant" -j MASQUERADE
    -A natns-POSTROUTING -s 192.0.2.8/29 -o eth0 -m comment --comment "natns snat dmz" -j SNAT --to-source 198.51.100.116

natns owns every chain whose name starts with ``natns-`` and every rule that
jumps to one; it never flushes, rewrites or reorders anything else. Built-in
chains are never declared in what natns feeds iptables-restore (declaring
one would reset its policy and counters).

Loading is one ``iptables-restore --noflush`` run, which iptables applies as
one transaction (iptables-nft: one nf_tables batch; legacy: one table
replace): declare and flush natns's chains, fill them, delete stale jumps and
chains, and insert the jump only if ``iptables-save`` showed it missing, so a
reload never duplicates it. A restore that fails part way changes nothing.

Reading back parses ``iptables-save -t nat`` into a canonical key, the same
key `render` builds: rules as argument tuples in iptables-save's own order,
so quoting differences do not matter; counters are not part of it.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from ..errors import KernelError
from ..kernel import nsexec
from ..state import FirewallIntent
from . import Ruleset, canonical_address, canonical_source, check_iface, check_table, snat_comment

NAME = "iptables"
TABLE = "nat"
SCOPE = "natns"
PREFIX = "natns-"
CHAIN = "natns-POSTROUTING"
#: The jump from built-in POSTROUTING into natns's chain, as iptables-save prints it.
JUMP = ("POSTROUTING", ("-m", "comment", "--comment", "natns", "-j", CHAIN))


def scope_names(scope: str) -> tuple[str, str, tuple]:
    """(chain prefix, postrouting chain, jump) natns owns in `scope`.

    Scope ``natns`` (lab namespaces) owns ``natns-*``; scope ``natnsup-<hex>``
    (one lab's uplink in the host) owns ``natnsup-<hex>-*``. Neither prefix
    is a prefix of the other, so scopes never see each other's chains.
    """
    check_table(scope)
    if scope == SCOPE:
        return PREFIX, CHAIN, JUMP
    chain = f"{scope}-POST"
    return f"{scope}-", chain, ("POSTROUTING", ("-m", "comment", "--comment", scope, "-j", chain))

# Canonical key layout: a tuple of
#   ("chain", name)            natns's chains, sorted by name
#   ("rule", chain, args)      their rules, chain by chain, in order
#   ("jump", chain, args)      rules elsewhere that jump to a natns chain, in order
# where args is the rule after "-A <chain>" as a tuple of strings.

_BARE = re.compile(r"[A-Za-z0-9_./:,+=@%!-]+")


class IptablesBackend:
    """natns's NAT rules as chain ``natns-POSTROUTING`` in iptables table nat."""

    name = NAME

    def render(self, intent: FirewallIntent) -> Ruleset:
        """The Ruleset natns wants for `intent`: its chain, a rule per SnatRule, the jump."""
        prefix, chain, jump = scope_names(intent.scope)
        rules = []
        for r in intent.snat:
            args = [
                "-s", str(canonical_source(r.source)),
                *(["!"] if r.out_negate else []),
                "-o", check_iface(r.out_iface),
                "-m", "comment", "--comment", snat_comment(r.network),
            ]
            if r.to is None:
                args += ["-j", "MASQUERADE"]
            else:
                args += ["-j", "SNAT", "--to-source", canonical_address(r.to)]
            rules.append((chain, tuple(args)))
        return Ruleset(NAME, _make_key([chain], rules, [jump]))

    def observe(self, ns: str | None, scope: str = SCOPE) -> Ruleset | None:
        """natns's chains and jumps of `scope` in `ns` as a Ruleset, or None if it has none."""
        saved = _save(ns, scope)
        if not saved.chains:
            return None
        return Ruleset(NAME, _make_key(saved.chains, saved.rules, saved.jumps))

    def load(self, ns: str | None, ruleset: Ruleset) -> None:
        """Replace natns's chains and jumps in `ns` with `ruleset`, in one iptables-restore.

        Teardown is `remove`.
        """
        if ruleset.backend != NAME:
            raise ValueError(f"cannot load a {ruleset.backend} ruleset with the iptables backend")
        chains, rules, jumps = _split_key(ruleset.key)
        scope = _scope_of(chains)
        prefix = scope_names(scope)[0]
        for chain in chains:
            if not chain.startswith(prefix):
                raise ValueError(f"chain {chain!r} is not natns's (no {prefix} prefix)")
        for chain, _ in rules:
            if chain not in chains:
                raise ValueError(f"rule for undeclared chain {chain!r}")
        for chain, args in jumps:
            if chain.startswith(prefix) or _jump_target(args) not in chains:
                raise ValueError(f"jump {chain} {' '.join(args)} does not enter a natns chain")

        cur = _save(ns, scope)
        lines = ["*" + TABLE]
        for chain in chains:
            # --noflush keeps other chains; declaring a chain flushes it
            # (iptables-nft) and the explicit -F makes that true everywhere.
            lines += [f":{_quote(chain)} - [0:0]", f"-F {_quote(chain)}"]
        stale = [c for c in cur.chains if c not in chains]
        lines += [f"-F {_quote(c)}" for c in stale]
        missing = list(jumps)
        for chain, args in cur.jumps:
            if (chain, args) in missing:
                missing.remove((chain, args))  # already there: leave it in place
            else:
                lines.append(_line("-D", chain, args))
        lines += [_line("-A", chain, args) for chain, args in rules]
        lines += [_line("-I", chain, args, pos=1) for chain, args in reversed(missing)]
        lines += [f"-X {_quote(c)}" for c in stale]
        lines.append("COMMIT")
        _restore(ns, lines)

    def remove(self, ns: str | None, scope: str = SCOPE) -> None:
        """Delete natns's jumps and chains of `scope` in `ns`, only those; no error if absent.

        Undoes `load`.
        """
        cur = _save(ns, scope)
        if not cur.chains and not cur.jumps:
            return
        lines = ["*" + TABLE]
        lines += [_line("-D", chain, args) for chain, args in cur.jumps]
        lines += [f"-F {_quote(c)}" for c in cur.chains]
        lines += [f"-X {_quote(c)}" for c in cur.chains]
        lines.append("COMMIT")
        _restore(ns, lines)
        _drop_empty_nft_table(ns)

    def counters(self, ns: str | None, scope: str = SCOPE) -> list[dict]:
        """Packet and byte counts of each rule in natns's chains (empty if none)."""
        saved = _save(ns, scope, counters=True)
        out = []
        for (chain, args), (packets, byts) in zip(saved.rules, saved.rule_counters):
            out.append({
                "chain": chain,
                "rule": _line("-A", chain, args),
                "comment": _comment_of(args),
                "packets": packets,
                "bytes": byts,
            })
        return out


BACKEND = IptablesBackend()


def ruleset_text(key: tuple) -> str:
    """`key` as iptables-save lines for table nat (natns's part only)."""
    chains, rules, jumps = _split_key(key)
    lines = ["*" + TABLE]
    lines += [f":{_quote(c)} - [0:0]" for c in chains]
    lines += [_line("-A", chain, args) for chain, args in jumps]
    lines += [_line("-A", chain, args) for chain, args in rules]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


@dataclass
class _Saved:
    """natns's part of one table as iptables-save showed it."""

    chains: list[str] = field(default_factory=list)
    rules: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    rule_counters: list[tuple[int, int]] = field(default_factory=list)
    jumps: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)


def _save(ns: str | None, scope: str = SCOPE, *, counters: bool = False) -> _Saved:
    """Run iptables-save for table nat in `ns` and pick out the chains and jumps of `scope`."""
    argv = ["iptables-save", "-t", TABLE] + (["-c"] if counters else [])
    return _parse_save(nsexec.run(ns, argv).stdout, scope_names(scope)[0])


def _scope_of(chains: list[str]) -> str:
    """The scope a set of natns chains belongs to (from the first chain's name)."""
    for c in chains:
        if c.startswith("natnsup-"):
            return c.rsplit("-", 1)[0]
    return SCOPE


def _parse_save(text: str, prefix: str = PREFIX) -> _Saved:
    """natns's chains, rules and jumps (chains starting with `prefix`) from iptables-save output."""
    saved = _Saved()
    in_table = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            in_table = line[1:] == TABLE
            continue
        if not in_table:
            continue
        if line == "COMMIT":
            in_table = False
            continue
        packets = byts = 0
        m = re.match(r"\[(\d+):(\d+)\]\s+(.*)", line)
        if m:
            packets, byts, line = int(m.group(1)), int(m.group(2)), m.group(3)
        if line.startswith(":"):
            name = line[1:].split()[0]
            if name.startswith(prefix):
                saved.chains.append(name)
            continue
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise KernelError(f"iptables-save: unreadable line {raw!r} ({exc})") from None
        if len(words) < 2 or words[0] != "-A":
            continue
        chain, args = words[1], tuple(words[2:])
        if chain.startswith(prefix):
            saved.rules.append((chain, args))
            saved.rule_counters.append((packets, byts))
        elif (_jump_target(args) or "").startswith(prefix):
            saved.jumps.append((chain, args))
    return saved


def _jump_target(args: tuple[str, ...]) -> str | None:
    """The chain a rule jumps or goes to (-j/-g), if any."""
    for i, a in enumerate(args[:-1]):
        if a in ("-j", "--jump", "-g", "--goto"):
            return args[i + 1]
    return None


def _comment_of(args: tuple[str, ...]) -> str | None:
    """The text after --comment in a rule, if any."""
    for i, a in enumerate(args[:-1]):
        if a == "--comment":
            return args[i + 1]
    return None


def _make_key(chains, rules, jumps) -> tuple:
    """The canonical key from natns's chains, rules (chain, args) and jumps (chain, args)."""
    order = sorted(set(chains))
    key: list[tuple] = [("chain", c) for c in order]
    for c in order:
        key += [("rule", chain, tuple(args)) for chain, args in rules if chain == c]
    key += [("jump", chain, tuple(args)) for chain, args in jumps]
    return tuple(key)


def _split_key(key: tuple) -> tuple[list[str], list[tuple], list[tuple]]:
    """Chains, rules and jumps back out of a canonical key."""
    chains = [e[1] for e in key if e[0] == "chain"]
    rules = [(e[1], e[2]) for e in key if e[0] == "rule"]
    jumps = [(e[1], e[2]) for e in key if e[0] == "jump"]
    return chains, rules, jumps


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


def _drop_empty_nft_table(ns: str | None) -> None:
    """With iptables-nft, delete nf_tables table ``ip nat`` if nothing is left in it.

    iptables-restore creates the table (with its built-in chains) the first
    time natns loads a chain; after natns's chains are gone it would stay as
    an empty shell. It is deleted only when it holds nothing at all: built-in
    chains with policy accept, no rules, no other chains, so no behaviour
    anyone else relies on changes. iptables-legacy tables can't be deleted
    and aren't visible to nft; nothing is done there.
    """
    version = nsexec.run(ns, ["iptables", "--version"], check=False).stdout
    if "nf_tables" not in version:
        return
    listed = nsexec.run(ns, ["nft", "-j", "list", "table", "ip", TABLE], check=False)
    if listed.returncode != 0:
        return
    import json

    try:
        objs = json.loads(listed.stdout)["nftables"]
    except (ValueError, KeyError):
        return
    for obj in objs:
        if "rule" in obj or "set" in obj or "map" in obj or "flowtable" in obj:
            return
        chain = obj.get("chain")
        if chain is not None and (chain.get("name") not in _BUILTIN or chain.get("policy") != "accept"):
            return
    nsexec.run(ns, ["nft", "delete", "table", "ip", TABLE], check=False)


_BUILTIN = {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"}


def _restore(ns: str | None, lines: list[str]) -> None:
    """Feed `lines` to one ``iptables-restore --noflush`` in `ns`."""
    nsexec.run(ns, ["iptables-restore", "-w", "--noflush"], input="\n".join(lines) + "\n")

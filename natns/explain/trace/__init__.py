"""Follow one probe packet through every namespace of its path with nftables tracing.

`trace(src_ns, dst, proto, port)` sends one recognisable probe from namespace
`src_ns` to address `dst` (an ICMP echo with its own id, or a TCP/UDP packet
from a source port of its own) with netfilter tracing on in every namespace
the packet crosses, and returns a `Trace`: the request and the reply, hop by
hop (namespace, hook, table, chain, rule text, verdict, routing decision,
address and port rewrites as before → after), and the conntrack entries that
the probe made.

How it works, per traced namespace:

* a temporary table ``ip natns_trace`` holds two chains on every IPv4 hook,
  one before everything else (priority `FIRST`) and one after everything
  else (priority `LAST`). The first chains of prerouting and output set
  ``meta nftrace 1`` on the probe and its replies (matched by ICMP id or by
  the probe's source port, ICMP errors about the probe included). A traced
  packet produces an event for every base chain it passes, so the two
  tracer chains show each hook the packet took and its headers before and
  after the hook: a difference is a rewrite (NAT);
* ``nft -a monitor`` runs in the namespace and prints the trace events; it
  is ready once it has printed the creation of the tracing table.

iptables-nft rules are nftables rules, so they are traced as well (with their
``iptables-save`` text beside the rule). iptables-legacy rules are not: a
namespace that has some is flagged and what they do can only be seen as a
packet that vanishes or changes between two hooks.

The trace id the kernel gives a packet changes at every veth crossing (and
between hooks), so events are tied together by the packet's own contents:
IP id, length and transport header, which forwarding and NAT keep.

Everything is removed afterwards, on error and on Ctrl-C / SIGTERM too: the
tracing tables are deleted in every namespace, and every ``nft monitor`` is
stopped (each also gets SIGTERM from the kernel if natns itself dies).
Traces take a lock, so two traces never share the tracing tables.

The package's modules: `monitor` (parsing ``nft monitor`` output), `tables`
(the tracing table), `session` (tracing on and off, the lock), `sender` (the
probe), `read` (what is read of each namespace), `follow` (passes → legs),
`result` (the result types and their JSON), `explain` (why it stopped) and
`render` (text). This module runs them in order (`trace`) and exports what
the CLI and tests use.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Sequence

from ...addresses import ip_address
from ...errors import UserError
from ...kernel import netfilter, netns
from ...kernel.netfilter import Chain, NftRuleset
from .explain import _enrich, _explain
from .follow import _bridged, _diff, _hops_for, _leg, answers, follow, group_passes
from .monitor import TraceEvent, clean_rule, parse_headers, parse_line, parse_monitor_output
from .read import (
    _ct_watch,
    _drain,
    _probe_entry,
    _sysctl,
    chain_notes,
    conntrack_of,
    read_chains,
    read_iptables_nft,
    read_legacy,
    route_for,
)
from .render import render
from .result import (
    REWRITE_FIELDS,
    ChainPass,
    ConntrackSeen,
    HookTrace,
    HopTrace,
    Leg,
    Probe,
    Rewrite,
    RuleHit,
    Stop,
    Trace,
    packet_key,
    packet_summary,
    tcp_flags,
)
from .sender import _ICMP_UNREACH, PAYLOAD, _checksum, _Sender
from .session import (
    LOCK_PATH,
    Terminated,
    TraceSession,
    _Monitor,
    _signals_held,
    _term_as_interrupt,
    _trace_lock,
)
from .tables import FAMILY, FAMILY6, FIRST, HOOKS, LAST, REMOVE_SCRIPT, TABLE, table_script, tracer_chains

#: The base chain type trace reads (netfilter's one chain type; the name trace used before).
ChainInfo = Chain

PROTOCOLS = ("icmp", "tcp", "udp")


def _ruleset(ns: str) -> NftRuleset | None:
    """The nft ruleset of `ns`, read once for its chains and iptables-nft handles (None: unreadable)."""
    try:
        return netfilter.read_nft(ns, texts=True)  # the listing: dormant tables, chains' devices
    except OSError:
        return None


def path_namespaces(src_ns: str, dst: str, proto: str = "icmp",
                    port: int | None = None) -> tuple[list[str], dict | None, list[str]]:
    """Namespaces the path walker says a packet from `src_ns` to `dst` crosses, in order,
    through any destination NAT on the way (a floating IP, a port forward: the namespace
    behind it is traced too).

    Returns (namespaces, {"complete", "stop"} or None, notes). Without the
    walker, only `src_ns`.
    """
    notes: list[str] = []
    try:
        from .. import dnat
    except ImportError:
        return [src_ns], None, ["path walker not available: traced only the source namespace"]
    try:
        p, _ = dnat.follow(src_ns, dst, proto, port, notes)
    except Exception as exc:  # the walker failing must not stop the trace itself
        return [src_ns], None, [f"path walker failed ({type(exc).__name__}: {exc}): traced only {src_ns}"]
    hop_names = p.namespaces() if hasattr(p, "namespaces") else [h.ns for h in getattr(p, "hops", [])]
    names: list[str] = []
    for ns in hop_names:
        if not isinstance(ns, str) or not netns.exists(ns):
            notes.append(f"{ns}: not a named namespace under /run/netns; not traced")
            continue
        if ns not in names:
            names.append(ns)
    if src_ns not in names:
        names.insert(0, src_ns)
    stop = getattr(p, "stop", None)
    info = {"complete": bool(getattr(p, "complete", False)), "stop": None if stop is None else str(stop),
            "stop_code": getattr(p, "stop_code", None)}
    return names, info, notes


def trace(src_ns: str, dst: str, proto: str = "icmp", port: int | None = None, *,
          namespaces: Sequence[str] | None = None, extra: Sequence[str] = (), timeout: float = 1.0,
          settle: float = 0.3, size: int | None = None, df: bool = False) -> Trace:
    """Send one probe from namespace `src_ns` to `dst` with tracing on along its path.

    `proto` is icmp (an echo request), tcp or udp (to `port`). The
    namespaces traced are `namespaces` if given, else the path walker's,
    plus `extra`. Waits `timeout` s for an answer and `settle` s more for
    the last trace events. `size` is the payload in bytes (as ``ping -s``),
    `df` sets Don't Fragment (as ``ping -M do``): a packet too big for a link
    on the way stops where a router answers "frag needed". Needs root.
    Raises UserError for bad arguments.
    """
    from ...privileges import require_root

    require_root("trace")
    if proto not in PROTOCOLS:
        raise UserError(f"protocol {proto!r}: choose one of {', '.join(PROTOCOLS)}")
    try:
        dst = str(ip_address(dst, "--to"))
    except ValueError as exc:  # "'x' is not an IP address"
        raise UserError(f"--to {exc}") from None
    if proto == "icmp":
        port = None
    elif port is None or not 1 <= int(port) <= 65535:
        raise UserError(f"{proto} needs a port 1-65535")
    if size is not None and not 0 <= int(size) <= 65507:
        raise UserError(f"--size {size}: choose 0-65507 bytes")
    if not netns.exists(src_ns):
        raise UserError(f"--from {src_ns!r}: no such namespace")
    for ns in extra:
        if not netns.exists(ns):
            raise UserError(f"--ns {ns!r}: no such namespace")

    if namespaces is None:
        order, path_info, notes = path_namespaces(src_ns, dst, proto, port)
    else:
        order, path_info, notes = list(dict.fromkeys([src_ns, *namespaces])), None, []
    order = list(dict.fromkeys([*order, *extra]))

    with _term_as_interrupt(), _trace_lock():
        sender = _Sender(src_ns, dst, proto, port, size=size, df=df)
        try:
            with TraceSession(order, sender.match_rules(), family=FAMILY6 if ":" in dst else FAMILY) as sess:
                rulesets = {ns: _ruleset(ns) for ns in order}
                chains = {ns: read_chains(ns, rulesets[ns]) for ns in order}
                notes = [*notes, *(n for ns in order for n in chain_notes(ns, rulesets[ns]))]
                iptables = {ns: read_iptables_nft(ns, rulesets[ns]) for ns in order}
                legacy = {ns: d for ns in order if (d := read_legacy(ns))}
                with contextlib.ExitStack() as watching:
                    watches = [watching.enter_context(_ct_watch(ns)) for ns in order]
                    probe = sender.send(timeout)
                    time.sleep(settle)
                    ct_events = _drain(watches)
                sess.stop_monitors()
                lines = sess.lines
        finally:
            sender.close()

    passes = {ns: group_passes(ns, parse_monitor_output(lines.get(ns, [])), chains[ns], iptables[ns])
              for ns in order}
    request, reply = follow(passes, order, src_ns)
    if request.first:
        probe.src = request.first.get("ip saddr")
    conntrack = conntrack_of(probe, order, ct_events)
    for leg in (request, reply):
        if leg is not None:
            _enrich(leg, conntrack, legacy)
    t = Trace(src_ns, dst, probe, order, request, reply, conntrack, legacy, path_info, notes,
              raw={ns: [ln for ln in lines.get(ns, []) if ln.startswith("trace id ")] for ns in order})
    _explain(t)
    return t


__all__ = [
    "FAMILY", "FIRST", "HOOKS", "LAST", "LOCK_PATH", "PROTOCOLS", "REMOVE_SCRIPT", "TABLE",
    "ChainInfo", "ChainPass", "ConntrackSeen", "HookTrace", "HopTrace", "Leg", "Probe", "Rewrite",
    "RuleHit", "Stop", "Terminated", "Trace", "TraceEvent", "TraceSession",
    "answers", "clean_rule", "conntrack_of", "follow", "group_passes", "packet_key", "packet_summary",
    "parse_headers", "parse_line", "parse_monitor_output", "path_namespaces", "read_chains",
    "read_iptables_nft", "read_legacy", "render", "route_for", "table_script", "tcp_flags", "trace",
    "tracer_chains",
]

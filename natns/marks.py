"""Every ownership mark natns leaves in the kernel, in one place.

natns keeps no state file: everything it creates carries a mark the kernel
stores and gives back, and everything it reads back is recognised by that
mark alone.

* a namespace: the alias of its `lo` is ``natns:<lab>:<role>:<name>``
  (`ns_mark`, `parse_ns_mark`);
* a link: its alias is ``natns:<lab>:<purpose>`` (`link_mark`, `owns_link`),
  an uplink's in the host ``natns:<lab>:uplink <router>`` with the saved
  forwarding value appended (`` saved:ip_forward=0``);
* a route: its protocol number is `RT_PROTO` ("proto 233" in `ip route`);
* nftables: the table ``ip natns`` in a lab namespace, ``ip natnsup-<hex>``
  for one lab's uplink in the host (`NFT_TABLE`, `uplink_scope`);
* iptables: chains ``natns-*`` (``natnsup-<hex>-*`` in the host) and the
  jumps into them, which carry ``-m comment --comment natns`` (or the scope)
  (`iptables_scope_names`).
"""

from __future__ import annotations

import hashlib
import re

#: Every ownership mark starts with this.
MARK_PREFIX = "natns:"

#: Routing protocol number natns puts on every route it adds (rtm_protocol).
RT_PROTO = 233

#: The firewall scope of a lab namespace: nft table ``ip natns``, iptables chains ``natns-*``.
SCOPE = "natns"
#: nftables: the table natns owns in a lab namespace.
NFT_TABLE = SCOPE
#: iptables: the prefix of the chains natns owns in a lab namespace.
IPTABLES_PREFIX = "natns-"

#: Purpose word in the alias of a host-side uplink link: ``natns:<lab>:uplink <router>``.
UPLINK = "uplink"

#: The forwarding value saved in an uplink's alias (`` saved:ip_forward=0``).
SAVED_FORWARD = re.compile(r" saved:ip_forward=(\d+)$")
#: An uplink link of any lab.
ANY_UPLINK = re.compile(r"^natns:[^:]+:uplink ")

_SCOPE_RE = re.compile(r"natns(?:up-[0-9a-f]{1,12})?")


def ns_mark(lab: str, role: str, name: str) -> str:
    """The ownership mark natns writes on a namespace's `lo` alias."""
    return f"{MARK_PREFIX}{lab}:{role}:{name}"


def parse_ns_mark(alias: str | None) -> tuple[str, str, str] | None:
    """(lab, role, name) from a namespace mark, or None if it isn't natns's."""
    if not alias or not alias.startswith(MARK_PREFIX):
        return None
    parts = alias[len(MARK_PREFIX):].split(":", 2)
    if len(parts) != 3:
        return None
    return parts[0], parts[1], parts[2]


def is_natns_mark(alias: str | None) -> bool:
    """Whether `alias` is a mark of natns's (of any lab)."""
    return bool(alias) and alias.startswith(MARK_PREFIX)


def link_mark(lab: str, purpose: str) -> str:
    """The ownership mark natns writes on a link's alias."""
    return f"{MARK_PREFIX}{lab}:{purpose}"


def owns_link(alias: str | None, lab: str) -> bool:
    """Whether a link's alias marks it as `lab`'s."""
    return bool(alias) and (alias == f"{MARK_PREFIX}{lab}" or alias.startswith(f"{MARK_PREFIX}{lab}:"))


def uplink_mark(lab: str, router: str) -> str:
    """The mark of the host-side end of `router`'s ``uplink: host`` veth."""
    return link_mark(lab, f"{UPLINK} {router}")


def is_uplink_of(alias: str | None, lab: str) -> bool:
    """Whether `alias` marks a host-side uplink link of `lab`."""
    return (alias or "").startswith(f"{MARK_PREFIX}{lab}:{UPLINK} ")


def uplink_scope(lab: str) -> str:
    """The firewall scope (nft table, iptables chain prefix) of `lab`'s uplink in the host."""
    return "natnsup-" + hashlib.sha1(lab.encode()).hexdigest()[:8]


def is_scope(name: object) -> bool:
    """Whether `name` is a firewall scope natns owns: ``natns`` or ``natnsup-<hex>``."""
    return isinstance(name, str) and bool(_SCOPE_RE.fullmatch(name))


def iptables_scope_names(scope: str) -> tuple[str, str]:
    """(chain prefix, jump comment) of an iptables scope.

    Scope ``natns`` (lab namespaces) owns ``natns-*``; scope ``natnsup-<hex>``
    (one lab's uplink in the host) owns ``natnsup-<hex>-*``. Neither prefix
    is a prefix of the other, so scopes never see each other's chains.
    """
    return (IPTABLES_PREFIX, SCOPE) if scope == SCOPE else (f"{scope}-", scope)


def nft_table_comment(lab: str, namespace: str, digest: str) -> str:
    """The comment natns puts on its nft table: ``natns:<lab>:<namespace> rules:<digest>``."""
    return f"{MARK_PREFIX}{lab}:{namespace} rules:{digest}"

"""One nf_tables table read raw over nfnetlink: its chains, its rules' comments, its sets.

What `natns up` compares of its own table (firewall/nftables.py's NftKey) is
the table's comment, its chains (name, type, hook, priority, policy), each
rule's chain and comment, and the elements of its maps and sets. libnftables
gets there by building its whole cache (tables, chains, sets, elements,
rules with every expression, flowtables, objects) and printing it as JSON,
which natns then decodes: ~1 ms per router, most of a no-op `up`'s reading of
the kernel (docs/performance.md). This module asks the kernel for exactly
those parts (dumps of the table's chains, rules and sets, and of each set's
elements, on one socket) and hands back the raw values; the backend turns them into its key, and falls back to libnftables
for anything it can't name (`firewall.nftables._key_from_raw`).

A reading is consistent: the ruleset's generation (NFT_MSG_GETGEN) is asked
before and after the dumps, and a reading during which any transaction
committed (or a dump the kernel marks as interrupted) is made again; after
three tries it gives up (None), and the caller reads through libnftables.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass, field

from .nftlib import udata_comment
from .nsexec import call_in
from .rtnl import NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, parse_attrs

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETCHAIN, NFT_MSG_GETRULE, NFT_MSG_GETSET, NFT_MSG_GETSETELEM, NFT_MSG_GETGEN = 4, 7, 10, 13, 16
NLM_F_DUMP_INTR = 0x10
NLA_F_NESTED = 0x8000

NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HOOK, NFTA_CHAIN_POLICY, NFTA_CHAIN_TYPE = 1, 3, 4, 5, 7
NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY = 1, 2
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_USERDATA = 1, 2, 7
NFTA_SET_TABLE, NFTA_SET_NAME, NFTA_SET_FLAGS = 1, 2, 3
NFTA_SET_KEY_TYPE, NFTA_SET_KEY_LEN, NFTA_SET_DATA_TYPE, NFTA_SET_DATA_LEN = 4, 5, 6, 7
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_DATA, NFTA_SET_ELEM_FLAGS, NFTA_SET_ELEM_KEY_END = 1, 2, 3, 10
NFTA_DATA_VALUE = 1
NFTA_GEN_ID = 1
NFTNL_UDATA_RULE_COMMENT = 0

NFT_SET_ANONYMOUS, NFT_SET_MAP, NFT_SET_OBJECT = 0x1, 0x8, 0x40


@dataclass
class RawChain:
    name: str
    type: str | None = None      # "nat", "filter", ... (base chains only)
    hooknum: int | None = None
    prio: int | None = None
    policy: int | None = None    # NF_DROP 0, NF_ACCEPT 1


@dataclass
class RawSet:
    name: str
    flags: int
    key_type: int
    key_len: int
    data_type: int | None
    data_len: int | None
    #: (key bytes, data bytes or None, element flags, has a key end) per element, in dump order
    elements: list[tuple[bytes, bytes | None, int, bool]] = field(default_factory=list)


@dataclass
class RawTable:
    """A table's chains (kernel order), rules as (chain, comment) in listing order, and named sets."""

    chains: list[RawChain]
    rules: list[tuple[str, str | None]]
    sets: list[RawSet]


class _Changed(Exception):
    """The ruleset changed during a reading: read again."""


def _string(mv) -> str:
    return bytes(mv).split(b"\0", 1)[0].decode()


def _u32(mv) -> int:
    return struct.unpack_from(">I", mv)[0]


def _attr(kind: int, value: bytes) -> bytes:
    n = 4 + len(value)
    return struct.pack("=HH", n, kind) + value + b"\0" * ((-n) % 4)


def _strattr(kind: int, text: str) -> bytes:
    return _attr(kind, text.encode() + b"\0")


class _Reader:
    def __init__(self, s: socket.socket, family: int):
        self.s, self.family, self.seq = s, family, 0

    def ask(self, msg: int, attrs: bytes = b"", dump: bool = True, raw: bool = False) -> list:
        """The attribute dicts of every answer to one request (a dump unless `dump` is False);
        with `raw`, each answer's (buffer, start of its attributes, end) instead."""
        self.seq += 1
        body = struct.pack("=BBH", self.family, 0, 0) + attrs
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
        self.s.send(struct.pack("=LHHLL", 16 + len(body), (NFNL_SUBSYS_NFTABLES << 8) | msg, flags, self.seq, 0)
                    + body)
        out = []
        while True:
            data = self.s.recv(1 << 17)
            off = 0
            while off + 16 <= len(data):
                n, kind, mflags, seq = struct.unpack_from("=LHHL", data, off)
                if n < 16:
                    raise OSError(0, "nfnetlink: a short message")
                if seq != self.seq:
                    off += (n + 3) & ~3
                    continue
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, off + 16)[0]
                    if code:
                        raise OSError(code, os.strerror(code))
                    return out
                if kind == NLMSG_DONE:
                    return out
                if mflags & NLM_F_DUMP_INTR:
                    raise _Changed()
                out.append((data, off + 20, off + n) if raw else parse_attrs(data, off + 20, off + n))
                if not dump:
                    return out
                off += (n + 3) & ~3

    def genid(self) -> int:
        a = self.ask(NFT_MSG_GETGEN, dump=False)
        return _u32(a[0][NFTA_GEN_ID])


def _read(r: _Reader, table: str) -> RawTable:
    chains = []
    for a in r.ask(NFT_MSG_GETCHAIN, _strattr(NFTA_CHAIN_TABLE, table)):
        if _string(a.get(NFTA_CHAIN_TABLE, b"")) != table or NFTA_CHAIN_NAME not in a:
            continue
        c = RawChain(_string(a[NFTA_CHAIN_NAME]))
        if NFTA_CHAIN_HOOK in a:
            hook = parse_attrs(a[NFTA_CHAIN_HOOK], 0, len(a[NFTA_CHAIN_HOOK]))
            c.hooknum = _u32(hook[NFTA_HOOK_HOOKNUM]) if NFTA_HOOK_HOOKNUM in hook else None
            c.prio = struct.unpack_from(">i", hook[NFTA_HOOK_PRIORITY])[0] if NFTA_HOOK_PRIORITY in hook else None
            c.type = _string(a[NFTA_CHAIN_TYPE]) if NFTA_CHAIN_TYPE in a else None
            c.policy = _u32(a[NFTA_CHAIN_POLICY]) if NFTA_CHAIN_POLICY in a else None
        chains.append(c)
    rules = []
    for a in r.ask(NFT_MSG_GETRULE, _strattr(NFTA_RULE_TABLE, table)):
        if _string(a.get(NFTA_RULE_TABLE, b"")) != table:
            continue
        ud = a.get(NFTA_RULE_USERDATA)
        rules.append((_string(a[NFTA_RULE_CHAIN]), udata_comment(ud, NFTNL_UDATA_RULE_COMMENT)))
    sets = []
    for a in r.ask(NFT_MSG_GETSET, _strattr(NFTA_SET_TABLE, table)):
        if _string(a.get(NFTA_SET_TABLE, b"")) != table:
            continue
        flags = _u32(a[NFTA_SET_FLAGS]) if NFTA_SET_FLAGS in a else 0
        if flags & NFT_SET_ANONYMOUS:  # a rule's own `{ ... }`: not an object nft lists
            continue
        sets.append(RawSet(_string(a[NFTA_SET_NAME]), flags,
                           _u32(a[NFTA_SET_KEY_TYPE]) if NFTA_SET_KEY_TYPE in a else 0,
                           _u32(a[NFTA_SET_KEY_LEN]) if NFTA_SET_KEY_LEN in a else 0,
                           _u32(a[NFTA_SET_DATA_TYPE]) if NFTA_SET_DATA_TYPE in a else None,
                           _u32(a[NFTA_SET_DATA_LEN]) if NFTA_SET_DATA_LEN in a else None))
    for st in sets:
        attrs = _strattr(NFTA_SET_ELEM_LIST_TABLE, table) + _strattr(NFTA_SET_ELEM_LIST_SET, st.name)
        for data, off, end in r.ask(NFT_MSG_GETSETELEM, attrs, raw=True):
            _elements(data, off, end, st.elements)
    return RawTable(chains, rules, sets)


_HDR = struct.Struct("=HH")
_BE32 = struct.Struct(">I")


def _elements(data: bytes, off: int, end: int, out: list) -> None:
    """The elements of one NFT_MSG_NEWSETELEM answer (attributes from `off` to `end` of
    `data`), appended to `out` as RawSet.elements holds them. Read in place: a router's
    5,000 floating IPs are 10,000 elements, three nested attributes each."""
    unpack = _HDR.unpack_from
    while off + 4 <= end:
        n, kind = unpack(data, off)
        if n < 4:
            return
        if kind & ~NLA_F_NESTED == NFTA_SET_ELEM_LIST_ELEMENTS:
            e, e_end = off + 4, off + n
            while e + 4 <= e_end:
                en, _ = unpack(data, e)  # NFTA_LIST_ELEM
                if en < 4:
                    break
                key = value = None
                flags, has_end = 0, False
                a, a_end = e + 4, e + en
                while a + 4 <= a_end:
                    an, ak = unpack(data, a)
                    if an < 4:
                        break
                    ak &= ~NLA_F_NESTED
                    if ak in (NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_DATA) and an >= 8:
                        vn, vk = unpack(data, a + 4)  # NFTA_DATA_VALUE, or a verdict
                        v = data[a + 8:a + 4 + vn] if vk & ~NLA_F_NESTED == NFTA_DATA_VALUE and vn >= 4 else None
                        if ak == NFTA_SET_ELEM_KEY:
                            key = v
                        else:
                            value = v
                    elif ak == NFTA_SET_ELEM_FLAGS and an >= 8:
                        flags = _BE32.unpack_from(data, a + 4)[0]
                    elif ak == NFTA_SET_ELEM_KEY_END:
                        has_end = True
                    a += (an + 3) & ~3
                # no key: an element this reader can't name (flagged so that the caller falls back)
                out.append((b"" if key is None else key, value, flags if key is not None else flags | 0x80000000,
                            has_end))
                e += (en + 3) & ~3
        off += (n + 3) & ~3


def read_table(ns: str | None, family: int, table: str, tries: int = 3) -> RawTable | None:
    """Table `table` of `family` (NFPROTO_*) in `ns`, read raw (see the module's note), on a
    thread in `ns`; None if it could not be read consistently (the caller then lists it
    through libnftables). The table is assumed to exist: one that doesn't reads as empty."""

    def go() -> RawTable | None:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER) as s:
            s.bind((0, 0))
            r = _Reader(s, family)
            for _ in range(tries):
                try:
                    before = r.genid()
                    got = _read(r, table)
                    if r.genid() == before:
                        return got
                except _Changed:
                    pass
            return None

    try:
        return call_in(ns, go)
    except (OSError, KeyError, struct.error, UnicodeDecodeError, IndexError):
        return None

"""Run nft commands in a namespace: in-process through libnftables, or the `nft` tool.

`nft` is a thin command line around libnftables (libnftables.so.1, installed
with it). Calling the library on a thread that entered the namespace gives
the same result as ``nsenter --net=... nft ...`` (the library's netlink socket
is made in that thread's namespace) without forking and exec'ing two
programs: ~0.5 ms instead of ~4 ms per command, which is most of what
`up` and `status` spend per router. When the library can't be loaded, or with
``NATNS_NFT=tool`` in the environment, the `nft` program is run as before.

No shell is involved either way; the command text is what natns would have
given `nft` as arguments or on standard input.

**libnftables 1.0.6 (Debian 12) frees memory it still uses when it lists a table
with flags (``flags dormant``, ``owner``) as JSON**: table_flags_json() drops the
array holding the flag's string and returns the string; the JSON printer reads it
after it is freed and releases it again. In the `nft` program that is a wrong
``"flags"`` value (``"flags": "filter"`` for a dormant table); in a long-lived
process with other threads it corrupts the heap, and glibc aborts the process
later ("corrupted double-linked list"); with two such tables even the program's
JSON is broken. So before a JSON listing that prints tables, one table dump (in
the same thread; or the caller's own, just made) says whether any has flags; if
one has, the listing is made from listings that print no such table: the table
objects from the dump, their chains, sets and maps listed on their own
(`_listing_without_flags`). Text listings are not affected.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import threading
from typing import Sequence

from .nsexec import call_in, run as run_tool

# Output flags (nftables.h: enum nft_output_flags) for the options natns uses.
_FLAGS = {"-j": 1 << 4, "-a": 1 << 3, "-t": 1 << 11}

_lock = threading.Lock()  # one libnftables call at a time (it keeps some global state)
_lib = None
_lib_tried = False


def _load():
    global _lib, _lib_tried
    if _lib_tried:
        return _lib
    _lib_tried = True
    try:
        lib = ctypes.CDLL("libnftables.so.1")
    except OSError:
        return None
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    for fn in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
        getattr(lib, fn).argtypes = [ctypes.c_void_p]
        getattr(lib, fn).restype = ctypes.c_int
    for fn in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
        getattr(lib, fn).argtypes = [ctypes.c_void_p]
        getattr(lib, fn).restype = ctypes.c_char_p
    lib.nft_ctx_set_dry_run.argtypes = [ctypes.c_void_p, ctypes.c_bool]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    _lib = lib
    return lib


def in_process() -> bool:
    """Whether nft commands run through libnftables in this process."""
    return os.environ.get("NATNS_NFT", "") != "tool" and _load() is not None


def _split(argv: Sequence[str], input: str | None) -> tuple[int, str] | None:
    """(output flags, command text) for an ``nft`` argv, or None if it needs the tool."""
    if not argv or argv[0] != "nft":
        return None
    flags = 0
    rest = list(argv[1:])
    while rest and rest[0].startswith("-"):
        opt = rest.pop(0)
        if opt == "-f" and rest[:1] == ["-"] and input is not None:
            rest.pop(0)
            if rest:
                return None
            return flags, input
        if opt not in _FLAGS:
            return None
        flags |= _FLAGS[opt]
    if not rest or input is not None:
        return None
    return flags, " ".join(rest)


def _prints_tables(flags: int, text: str) -> bool:
    """Whether nft `text` with output `flags` is a JSON listing that prints table objects
    (``nft -j list ruleset``, ``list tables [FAMILY]``, ``list table FAMILY NAME``)."""
    words = text.split()
    return (bool(flags & _FLAGS["-j"]) and len(words) >= 2 and words[0] == "list"
            and words[1] in ("ruleset", "tables", "table"))


def _listed_tables(found: "Dump", words: list[str]) -> list[tuple[int, str]] | None:
    """(family, name) of the tables a ``list ruleset|tables|table`` command prints, in
    the kernel's order; None for a family or form this does not know."""
    if words[1] == "table":
        if len(words) != 4 or words[2] not in _NFPROTO_OF:
            return None
        return [(_NFPROTO_OF[words[2]], words[3])] if words[3] in found.get(_NFPROTO_OF[words[2]], {}) else []
    if len(words) == 3:
        if words[2] not in _NFPROTO_OF:
            return None
        return [t for t in found.order if t[0] == _NFPROTO_OF[words[2]]]
    return list(found.order) if len(words) == 2 else None


def _listing_without_flags(lib, flags: int, found: "Dump", words: list[str],
                           targets: list[tuple[int, str]]) -> tuple[int, str, str]:
    """What the JSON listing `words` prints (of the tables `targets`), made from listings
    that print no table with flags (see the module's note). On the thread in the namespace.

    A table without flags is listed as it is (``list table F T``). Of a table with
    flags, its object is made from the kernel's table dump (family, name, handle and
    flags, as nft prints them) and its contents listed without it: its chains with
    their rules (``list chain``), and its sets and maps. ``list tables`` prints only
    the table objects, all made from the dump."""
    only_tables = words[1] == "tables"
    metainfo: list[dict] = []

    def listed(commands: list[str]) -> list[list[dict]] | tuple[int, str, str]:
        # one call each: in one buffer, nft 1.0.6 fills its cache for the first
        # ``list chain`` only, and the next fails with "No such file or directory"
        docs = []
        for command in commands:
            rc, out, err = _run_lib(lib, flags, command)
            if rc != 0:
                return rc, out, err
            doc = json.loads(out).get("nftables", [])
            metainfo[:] = metainfo or [o for o in doc if "metainfo" in o][:1]
            docs.append([o for o in doc if "metainfo" not in o])
        return docs

    parts: dict[tuple[int, str], dict[str, list]] = {}
    families = sorted({f for f, n in targets if n in found[f].flagged}) if not only_tables else []
    if families:  # the chains, sets and maps of the flagged tables: these listings print no table
        docs = listed([f"list {k} {_FAMILY_NAME[f]}" for f in families for k in ("chains", "sets", "maps")])
        if isinstance(docs, tuple):
            return docs
        for obj in (o for d in docs for o in d):
            kind, body = next(iter(obj.items()))
            parts.setdefault((_NFPROTO_OF.get(body.get("family")), body.get("table")), {}).setdefault(kind, []).append(obj)
    plan: list[list] = []  # in nft's order: objects, and the nft commands that list the rest
    for fam, name in targets:
        bits = found[fam].flagged.get(name, 0)
        if not (only_tables or bits):
            plan.append([f"list table {_FAMILY_NAME[fam]} {name}"])
            continue
        table = {"family": _FAMILY_NAME[fam], "name": name}
        if name in found[fam].handles:
            table["handle"] = found[fam].handles[name]
        names = [w for bit, w in _TABLE_FLAG_NAMES if bits & bit]
        if names:
            table["flags"] = names[0] if len(names) == 1 else names
        mine = parts.get((fam, name), {}) if not only_tables else {}
        plan.append([{"table": table}] + mine.get("set", []) + mine.get("map", []))
        # nft prints a table's chains, then their rules: each chain listed alone, then sorted so
        plan.append([f"list chain {_FAMILY_NAME[fam]} {name} {c['chain']['name']}" for c in mine.get("chain", [])])
    objs: list[dict] = []
    for group in plan:
        commands = [p for p in group if isinstance(p, str)]
        docs = listed(commands) if commands else []
        if isinstance(docs, tuple):
            return docs
        if commands and commands[0].startswith("list chain "):
            got = [o for d in docs for o in d]
            objs += [o for o in got if "rule" not in o] + [o for o in got if "rule" in o]
        else:
            objs += [p for p in group if not isinstance(p, str)] + [o for d in docs for o in d]
    if not metainfo:
        rc, out, _ = _run_lib(lib, _FLAGS["-j"], "list tables arp")
        metainfo = [o for o in json.loads(out).get("nftables", []) if "metainfo" in o][:1] if rc == 0 else []
    objs = metainfo + objs
    return 0, json.dumps({"nftables": objs}) + "\n", ""


def _run_lib(lib, flags: int, text: str) -> tuple[int, str, str]:
    """Run `text` with libnftables on the calling thread: (exit status, stdout, stderr)."""
    with _lock:
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise OSError("nft_ctx_new failed")
        try:
            lib.nft_ctx_output_set_flags(ctx, flags)
            lib.nft_ctx_buffer_output(ctx)
            lib.nft_ctx_buffer_error(ctx)
            rc = lib.nft_run_cmd_from_buffer(ctx, text.encode())
            out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
            err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
        finally:
            lib.nft_ctx_free(ctx)
    return (0 if rc == 0 else 1), out, err


def run(ns: str | None, argv: Sequence[str], *, input: str | None = None, check: bool = True,
        timeout: float | None = 60, unflagged: bool = False) -> subprocess.CompletedProcess:
    """Like `nsexec.run(ns, argv, ...)` for an ``nft`` command, in-process when it can be.

    Same result and errors as running the tool: a CompletedProcess, and with
    `check` a KernelError naming the command when it fails. A JSON listing that
    would print a table with flags is made without printing one (see the module's
    note); `unflagged`: the caller has just dumped the tables and what this lists
    has none, so that check is not made again.
    """
    parsed = _split(argv, input)
    if parsed is None or not in_process():
        return run_tool(ns, argv, input=input, check=check, timeout=timeout)
    flags, text = parsed
    lib = _load()
    guard = _prints_tables(flags, text) and not unflagged

    def go():
        found = _tables(ns, NFPROTO_UNSPEC) if guard else None
        if found is not None and any(t.flagged for t in found.values()):
            words = text.split()
            targets = _listed_tables(found, words)
            if targets is None:  # a form not known here: the `nft` program, whose JSON may then be
                return None      # wrong or broken, but whose memory damage ends with it
            if any(n in found[f].flagged for f, n in targets):
                return _listing_without_flags(lib, flags, found, words, targets)  # see the module's note
        return _run_lib(lib, flags, text)

    try:
        done = call_in(ns, go)
    except OSError as exc:  # the namespace is gone: what nsenter would say
        done = 1, "", f"nsenter: {exc}"
    if done is None:
        return run_tool(ns, argv, input=input, check=check, timeout=timeout)
    rc, out, err = done
    proc = subprocess.CompletedProcess(list(argv), rc, out, err)
    if check and rc != 0:
        from ..errors import KernelError

        where = f" in namespace {ns}" if ns else ""
        msg = (err or out).strip().splitlines()
        raise KernelError(
            f"{' '.join(argv)}{where} failed (exit {rc}): " + (" | ".join(msg[:5]) if msg else "no output")
        )
    return proc


def check(ns: str | None, text: str) -> str | None:
    """Ask the kernel whether the nft script `text` would apply in `ns`, changing nothing.

    ``nft -c -f -`` (libnftables' dry run: the whole transaction is sent to the
    kernel, which checks it and aborts it). None if it would apply, else nft's
    message. In process when the library is there, else the `nft` tool.
    """
    if in_process():
        lib = _load()

        def go() -> tuple[int, str]:
            with _lock:
                ctx = lib.nft_ctx_new(0)
                if not ctx:
                    raise OSError("nft_ctx_new failed")
                try:
                    lib.nft_ctx_set_dry_run(ctx, True)
                    lib.nft_ctx_buffer_output(ctx)
                    lib.nft_ctx_buffer_error(ctx)
                    rc = lib.nft_run_cmd_from_buffer(ctx, text.encode())
                    err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
                finally:
                    lib.nft_ctx_free(ctx)
            return rc, err

        try:
            rc, err = call_in(ns, go)
        except OSError as exc:
            return f"nsenter: {exc}"
        if rc != 0:
            # libnftables points at the wrong line of a buffer in its message; the tool,
            # reading the same text as a file, names the line and quotes it. Failures only.
            try:
                proc = run_tool(ns, ["nft", "-c", "-f", "-"], input=text, check=False)
                if proc.returncode != 0 and (proc.stderr or proc.stdout).strip():
                    err = proc.stderr or proc.stdout
            except (OSError, subprocess.SubprocessError):
                pass
    else:
        proc = run_tool(ns, ["nft", "-c", "-f", "-"], input=text, check=False)
        rc, err = proc.returncode, proc.stderr or proc.stdout
    if rc == 0:
        return None
    return err.strip() or f"nft -c failed (exit {rc}), no message"


# ----------------------------------------------------------------------------- tables, read raw

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETTABLE = 1
NFTA_TABLE_NAME, NFTA_TABLE_FLAGS, NFTA_TABLE_USERDATA = 1, 2, 6
NFTNL_UDATA_TABLE_COMMENT = 0
NFPROTO_UNSPEC = 0
NFPROTO_INET = 1
NFPROTO_IPV4 = 2
NFPROTO_ARP = 3
NFPROTO_NETDEV = 5
NFPROTO_BRIDGE = 7
NFPROTO_IPV6 = 10
_NFPROTO_OF = {"inet": NFPROTO_INET, "ip": NFPROTO_IPV4, "arp": NFPROTO_ARP, "netdev": NFPROTO_NETDEV,
               "bridge": NFPROTO_BRIDGE, "ip6": NFPROTO_IPV6}
_FAMILY_NAME = {v: k for k, v in _NFPROTO_OF.items()}
NFTA_TABLE_HANDLE = 4
#: the kernel's table flags (NFT_TABLE_F_*) by the names nft prints
_TABLE_FLAG_NAMES = ((1, "dormant"), (2, "owner"), (4, "persist"))


class Tables(dict):
    """One family's tables from one kernel dump: name -> comment (None: none). `flagged`:
    name -> flags of those with flags set (dormant, owner, ...: see the module's note);
    `handles`: name -> handle."""

    def __init__(self):
        super().__init__()
        self.flagged: dict[str, int] = {}
        self.handles: dict[str, int] = {}


class Dump(dict):
    """A table dump: family -> Tables, and `order`, the (family, name) of every table in
    the kernel's order (the order nft lists them in)."""

    def __init__(self):
        super().__init__()
        self.order: list[tuple[int, str]] = []


def tables(ns: str | None, family: int = NFPROTO_IPV4) -> Tables | None:
    """The nf_tables tables of `family` (ip) in `ns`: name -> comment; None if it can't tell.

    One netlink dump (no libnftables cache, no program): what natns asks
    first in every namespace it observes ("is my table there, and what does
    its comment say?"), where listing the table would cost ten times more.
    """
    found = _tables(ns, family)
    return None if found is None else found.get(family, Tables())


def tables_by_family(ns: str | None) -> Dump | None:
    """`tables` of every family at once (one dump): family (NFPROTO_IPV4, NFPROTO_IPV6,
    ...) -> name -> comment; None if it can't tell. For a reader that needs the ``ip``
    and the ``ip6`` tables of a namespace (inside `one_reading`, the dump made first)."""
    memo = getattr(_reading, "dumps", None)
    if memo is None:
        return _tables(ns, NFPROTO_UNSPEC)
    if ns not in memo:
        memo[ns] = _tables(ns, NFPROTO_UNSPEC)
    return memo[ns]


_reading = threading.local()


class one_reading:
    """``with one_reading():`` on this thread, `tables_by_family` of a namespace dumps the
    tables once: both backends' readers of a namespace ask for them (observe's firewall
    loop), and nothing changes the tables between the two. Not for code that writes."""

    def __enter__(self):
        self._outer = getattr(_reading, "dumps", None)
        _reading.dumps = {}
        return self

    def __exit__(self, *exc):
        _reading.dumps = self._outer
        return False


def _tables(ns: str | None, family: int) -> Dump | None:
    """The tables of `family` (NFPROTO_UNSPEC: all) by family, from one dump."""
    import socket
    import struct

    from .rtnl import NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, parse_attrs

    def go() -> Dump:
        out = Dump()
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER) as s:
            s.bind((0, 0))
            body = struct.pack("=BBH", family, 0, 0)
            s.send(struct.pack("=LHHLL", 16 + len(body), (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
                               NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
            while True:
                data = s.recv(1 << 16)
                off = 0
                while off + 16 <= len(data):
                    n, kind = struct.unpack_from("=LH", data, off)
                    if n < 16:
                        return out
                    if kind == NLMSG_DONE:
                        return out
                    if kind == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", data, off + 16)[0]
                        if code:
                            raise OSError(code, os.strerror(code))
                        return out
                    a = parse_attrs(data, off + 16 + 4, off + n)
                    name = a.get(NFTA_TABLE_NAME)
                    if name is not None:
                        family_ = data[off + 16]  # nfgenmsg's family
                        fam = out.setdefault(family_, Tables())
                        text = bytes(name).split(b"\0", 1)[0].decode()
                        fam[text] = udata_comment(a.get(NFTA_TABLE_USERDATA))
                        out.order.append((family_, text))
                        flags = a.get(NFTA_TABLE_FLAGS)
                        bits = struct.unpack_from(">I", flags)[0] if flags is not None and len(flags) >= 4 else 0
                        if bits:
                            fam.flagged[text] = bits
                        handle = a.get(NFTA_TABLE_HANDLE)
                        if handle is not None and len(handle) >= 8:
                            fam.handles[text] = struct.unpack_from(">Q", handle)[0]
                    off += (n + 3) & ~3

    try:
        return call_in(ns, go)
    except OSError:
        return None


def udata_comment(udata, comment_type: int = NFTNL_UDATA_TABLE_COMMENT) -> str | None:
    """The comment in the user data of a table, chain or rule (libnftnl's TLVs: a byte of
    type, a byte of length, the value); `comment_type` is that object's comment type
    (NFTNL_UDATA_TABLE_COMMENT, NFTNL_UDATA_RULE_COMMENT: both 0)."""
    if udata is None:
        return None
    b = bytes(udata)
    i = 0
    while i + 2 <= len(b):
        kind, n = b[i], b[i + 1]
        if kind == comment_type:
            return b[i + 2:i + 2 + n].split(b"\0", 1)[0].decode(errors="replace")
        i += 2 + n
    return None

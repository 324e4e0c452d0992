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
"""

from __future__ import annotations

import ctypes
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
        timeout: float | None = 60) -> subprocess.CompletedProcess:
    """Like `nsexec.run(ns, argv, ...)` for an ``nft`` command, in-process when it can be.

    Same result and errors as running the tool: a CompletedProcess, and with
    `check` a KernelError naming the command when it fails.
    """
    parsed = _split(argv, input)
    if parsed is None or not in_process():
        return run_tool(ns, argv, input=input, check=check, timeout=timeout)
    flags, text = parsed
    lib = _load()
    try:
        rc, out, err = call_in(ns, lambda: _run_lib(lib, flags, text))
    except OSError as exc:  # the namespace is gone: what nsenter would say
        rc, out, err = 1, "", f"nsenter: {exc}"
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
NFTA_TABLE_NAME, NFTA_TABLE_USERDATA = 1, 6
NFTNL_UDATA_TABLE_COMMENT = 0
NFPROTO_UNSPEC = 0
NFPROTO_IPV4 = 2
NFPROTO_IPV6 = 10


def tables(ns: str | None, family: int = NFPROTO_IPV4) -> dict[str, str | None] | None:
    """The nf_tables tables of `family` (ip) in `ns`: name -> comment; None if it can't tell.

    One netlink dump (no libnftables cache, no program): what natns asks
    first in every namespace it observes ("is my table there, and what does
    its comment say?"), where listing the table would cost ten times more.
    """
    found = _tables(ns, family)
    return None if found is None else found.get(family, {})


def tables_by_family(ns: str | None) -> dict[int, dict[str, str | None]] | None:
    """`tables` of every family at once (one dump): family (NFPROTO_IPV4, NFPROTO_IPV6,
    ...) -> name -> comment; None if it can't tell. For a reader that needs the ``ip``
    and the ``ip6`` tables of a namespace."""
    return _tables(ns, NFPROTO_UNSPEC)


def _tables(ns: str | None, family: int) -> dict[int, dict[str, str | None]] | None:
    """The tables of `family` (NFPROTO_UNSPEC: all) by family, from one dump."""
    import socket
    import struct

    from .rtnl import NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, parse_attrs

    def go() -> dict[int, dict[str, str | None]]:
        out: dict[int, dict[str, str | None]] = {}
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
                        fam = out.setdefault(data[off + 16], {})  # nfgenmsg's family
                        fam[bytes(name).split(b"\0", 1)[0].decode()] = _udata_comment(a.get(NFTA_TABLE_USERDATA))
                    off += (n + 3) & ~3

    try:
        return call_in(ns, go)
    except OSError:
        return None


def _udata_comment(udata) -> str | None:
    """The comment in a table's user data (libnftnl TLVs: type, length, value)."""
    if udata is None:
        return None
    b = bytes(udata)
    i = 0
    while i + 2 <= len(b):
        kind, n = b[i], b[i + 1]
        if kind == NFTNL_UDATA_TABLE_COMMENT:
            return b[i + 2:i + 2 + n].split(b"\0", 1)[0].decode(errors="replace")
        i += 2 + n
    return None

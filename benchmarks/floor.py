"""The kernel floor: the bring-up benchmark's objects made by the leanest builder we can write.

The same objects `natns up` makes for the bring-up lab (benchmarks.bringup):
per router a router and a host namespace, `lo` up with natns's mark as alias,
the external veth into the internet namespace's bridge, the tenant bridge and
the host's veth, aliases, masters, addresses, the two default routes,
`net.ipv4.ip_forward=1`, `net.bridge.bridge-nf-call-iptables=0` and natns's nft ruleset for the router (the same text
natns renders). How, and nothing else:

* one process, one thread that makes every namespace in turn: unshare(2), a
  bind mount under /run/netns, a netlink socket and an fd of the namespace,
  the sysctl written and the ruleset loaded (libnftables, in process) while
  the thread is in it;
* netlink requests built by pyroute2's message classes, the ifindex of every
  link chosen by us (so no request waits for an answer to learn one), links
  created up and enslaved in the create request (a veth's peer is brought up
  with its alias), all of a namespace's requests written in one send(2) and
  their ACKs read afterwards;
* no reading the kernel, no planning, no marks checked.

It is a floor, not a tool: it knows it starts from nothing. natns's bring-up
reads as a multiple of it (docs/performance.md).

`read` is the floor of a no-op `up` the same way: the very requests natns's
reading makes in every namespace (12,506 for 500 routers), and nothing decoded.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_ERROR
from pyroute2.netlink.rtnl import RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from natns.kernel import nftlib

CLONE_NEWNET, MS_BIND, MNT_DETACH = 0x40000000, 0x1000, 2
NETNS_DIR = "/run/netns"
IFF_UP = 1
PROTO = 233  # natns's route protocol
_libc = ctypes.CDLL(None, use_errno=True)
_CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
_SET = NLM_F_REQUEST | NLM_F_ACK


def _err(what: str) -> OSError:
    e = ctypes.get_errno()
    return OSError(e, f"{what}: {os.strerror(e)}")


class _Batch:
    """Netlink requests for one namespace, encoded now, sent in one write, ACKs read after."""

    def __init__(self):
        self.parts: list[bytes] = []

    def add(self, kind: int, flags: int, msg) -> None:
        msg["header"]["type"] = kind
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = len(self.parts) + 1
        msg.encode()
        self.parts.append(bytes(msg.data))

    def link(self, index: int, name: str | None = None, *, up: bool = False, master: int | None = None,
             alias: str | None = None, kind: str | None = None, peer: dict | None = None) -> None:
        attrs: list = []
        if name:
            attrs.append(("IFLA_IFNAME", name))
        if master is not None:
            attrs.append(("IFLA_MASTER", master))
        if alias is not None:
            attrs.append(("IFLA_IFALIAS", alias))
        if kind:
            info: list = [("IFLA_INFO_KIND", kind)]
            if peer is not None:
                info.append(("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer)]}))
            attrs.append(("IFLA_LINKINFO", {"attrs": info}))
        m = ifinfmsg()
        m["family"], m["index"] = 0, index
        m["flags"], m["change"] = (IFF_UP, IFF_UP) if up else (0, 0)
        m["attrs"] = attrs
        self.add(RTM_NEWLINK, _CREATE if kind else _SET, m)

    def addr(self, index: int, address: str, plen: int) -> None:
        m = ifaddrmsg()
        m["family"], m["prefixlen"], m["index"] = socket.AF_INET, plen, index
        m["attrs"] = [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]
        self.add(RTM_NEWADDR, _CREATE, m)

    def default_route(self, gateway: str) -> None:
        m = rtmsg()
        m["family"], m["dst_len"], m["table"], m["proto"], m["scope"], m["type"] = \
            socket.AF_INET, 0, 254, PROTO, 0, 1
        m["attrs"] = [("RTA_TABLE", 254), ("RTA_GATEWAY", gateway)]
        self.add(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | 0x100, m)  # NLM_F_REPLACE

    def send(self, sock: socket.socket) -> None:
        """Write every request at once, then read one ACK per request; OSError on any refusal."""
        if not self.parts:
            return
        sock.send(b"".join(self.parts))
        want = len(self.parts)
        self.parts = []
        while want:
            data = sock.recv(1 << 16)
            off = 0
            while off + 16 <= len(data):
                n, kind, _, seq, _ = struct.unpack_from("=IHHII", data, off)
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data, off + 16)
                    if code:
                        raise OSError(-code, f"netlink request {seq}: {os.strerror(-code)}")
                    want -= 1
                off += (n + 3) & ~3


def _sock() -> socket.socket:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind((0, 0))
    return s


def _new_namespace(name: str, mark: str, forward: bool, ruleset: str | None) -> tuple[socket.socket, int]:
    """On the calling thread: a new namespace mounted at /run/netns/`name`; (netlink socket, fd) in it."""
    path = os.path.join(NETNS_DIR, name)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0))
    if _libc.unshare(CLONE_NEWNET) != 0:
        raise _err("unshare")
    src = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
    if _libc.mount(src, path.encode(), b"none", ctypes.c_ulong(MS_BIND), None) != 0:
        raise _err("mount")
    sock = _sock()
    b = _Batch()
    b.link(1, up=True, alias=mark)
    b.send(sock)
    if forward:
        with open("/proc/sys/net/ipv4/ip_forward", "w") as fh:
            fh.write("1")
        try:  # natns's routers switch bridge netfilter off (where br_netfilter is loaded)
            with open("/proc/sys/net/bridge/bridge-nf-call-iptables", "w") as fh:
                fh.write("0")
        except FileNotFoundError:
            pass
    if ruleset is not None:
        rc, _, err = nftlib._run_lib(nftlib._load(), 0, ruleset)
        if rc:
            raise OSError(f"nft in {name}: {err.strip()}")
    return sock, os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def build(lab: str, inet: tuple[str, str, str, int], routers: list[tuple[str, str, str, str]],
          rulesets: dict[str, str]) -> None:
    """Make the bring-up lab from nothing.

    `inet` = (namespace, its address, the internet host, prefix length);
    `routers` = [(router ns, host ns, router address, network name)];
    `rulesets` = router ns -> the nft text natns renders for it.
    """
    inet_ns, inet_addr, inet_host, plen = inet
    stop = threading.Event()

    def body():
        sock_i, _ = _new_namespace(inet_ns, f"natns:{lab}:internet:{inet_ns}", False, None)
        bi = _Batch()
        bi.link(2, "ext", kind="bridge", up=True)
        bi.link(2, alias=f"natns:{lab}:internet")
        bi.addr(2, inet_addr, plen)
        bi.addr(1, inet_host, 32)
        bi.send(sock_i)
        for i, (r, h, addr, net) in enumerate(routers):
            if stop.is_set():  # the caller was interrupted: make nothing more
                break
            sock_r, fd_r = _new_namespace(r, f"natns:{lab}:router:{r}", True, rulesets[r])
            sock_h, fd_h = _new_namespace(h, f"natns:{lab}:host:{h}", False, None)
            try:
                e = 3 + i
                bi.link(e, f"e-{r}", kind="veth", up=True, master=2,
                        peer={"index": 2,
                              "attrs": [("IFLA_IFNAME", "eth0"), ("IFLA_NET_NS_FD", fd_r)]})
                bi.link(e, alias=f"natns:{lab}:port {r}")
                bi.send(sock_i)
                br = _Batch()
                br.link(3, f"qr-{net}", kind="bridge", up=True)
                br.link(4, f"tap-{h}", kind="veth", up=True, master=3,
                        peer={"index": 2,
                              "attrs": [("IFLA_IFNAME", "eth0"), ("IFLA_NET_NS_FD", fd_h)]})
                br.link(2, alias=f"natns:{lab}:external {r}", up=True)
                br.link(3, alias=f"natns:{lab}:network {net}")
                br.link(4, alias=f"natns:{lab}:port {h}")
                br.addr(2, addr, plen)
                br.addr(3, "192.0.2.1", 24)
                br.default_route(inet_addr)
                br.send(sock_r)
                bh = _Batch()
                bh.link(2, alias=f"natns:{lab}:host {net}", up=True)
                bh.addr(2, "192.0.2.2", 24)
                bh.default_route("192.0.2.1")
                bh.send(sock_h)
            finally:
                for x in (sock_r, sock_h):
                    x.close()
                os.close(fd_r)
                os.close(fd_h)
        sock_i.close()

    _on_new_thread(body, stop)


def teardown(names: list[str]) -> None:
    """Unmount and unlink each namespace (what `ip netns del` does)."""
    for n in names:
        path = os.path.join(NETNS_DIR, n)
        _libc.umount2(path.encode(), MNT_DETACH)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _on_new_thread(fn, stop: threading.Event) -> None:
    """Run `fn` on a thread of its own (it unshares its namespace, so it must not be ours).

    Interrupted (Ctrl-C, SIGTERM), it sets `stop` and waits for the thread, so
    that nothing is made after the caller's cleanup has run.
    """
    box: dict = {}

    def run():
        try:
            fn()
        except BaseException as exc:  # handed back to the caller
            box["exc"] = exc

    t = threading.Thread(target=run, name="floor-build")
    t.start()
    try:
        t.join()
    except BaseException:
        stop.set()
        t.join()
        raise
    if "exc" in box:
        raise box["exc"]


# ----------------------------------------------------------------------------- the floor of a no-op `up`

NETLINK_NETFILTER, NFNL_SUBSYS_NFTABLES = 12, 10
NFT_GETTABLE, NFT_GETCHAIN, NFT_GETRULE, NFT_GETSET, NFT_GETSETELEM, NFT_GETGEN = 1, 4, 7, 10, 13, 16
RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE, RTM_GETNETCONF = 18, 22, 26, 82
NLM_F_DUMP, NLMSG_DONE, NETLINK_GET_STRICT_CHK = 0x300, 3, 12


def _attr(kind: int, text: str) -> bytes:
    v = text.encode() + b"\0"
    n = 4 + len(v)
    return struct.pack("=HH", n, kind) + v + b"\0" * ((-n) % 4)


def _ask(s: socket.socket, kind: int, flags: int, body: bytes, seq: int) -> None:
    """One request and every answer to it read, nothing decoded but the message headers."""
    s.send(struct.pack("=LHHLL", 16 + len(body), kind, flags, seq, 0) + body)
    while True:
        data = s.recv(1 << 17)
        off = 0
        while off + 16 <= len(data):
            n, t, _, got = struct.unpack_from("=LHHL", data, off)
            if got == seq and t == NLMSG_ERROR and struct.unpack_from("=i", data, off + 16)[0]:
                code = -struct.unpack_from("=i", data, off + 16)[0]
                raise OSError(code, f"netlink request {kind}: {os.strerror(code)}")
            if got == seq and (t in (NLMSG_DONE, NLMSG_ERROR) or not flags & NLM_F_DUMP):
                return
            off += (n + 3) & ~3


def read(names: list[str], routers: set[str], table: str, sets: list[str]) -> int:
    """The requests a no-op `natns up` makes to read each namespace, made by the leanest
    reader we can write: one thread entering each namespace in turn (setns), per namespace
    one rtnetlink socket with the link, address and (kernel-filtered) route dumps and the
    two forwarding netconf requests, one nfnetlink socket with the table dump, and in a
    router the reading of natns's table (generation, chains, rules, sets, the elements of
    each of `sets`, generation) and the open of bridge-nf-call-iptables; nothing decoded
    but message headers, nothing compared. Returns the number of requests."""
    out = {"n": 0}

    def go() -> None:
        seq = 0
        for name in names:
            if stop.is_set():
                return
            fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise _err(f"setns {name}")
            finally:
                os.close(fd)
            with _sock() as s:
                s.setsockopt(270, NETLINK_GET_STRICT_CHK, 1)  # SOL_NETLINK
                asks = [(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, struct.pack("=BxHiII", 0, 0, 0, 0, 0)),
                        (RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, struct.pack("=BBBBI", 0, 0, 0, 0, 0)),
                        (RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, struct.pack("=BBBBBBBBI", 0, 0, 0, 0, 254, PROTO,
                                                                               0, 0, 0))]
                asks += [(RTM_GETNETCONF, NLM_F_REQUEST, struct.pack("=B3xHHi", fam, 8, 1, -1)) for fam in (2, 10)]
                for kind, flags, body in asks:
                    seq += 1
                    _ask(s, kind, flags, body, seq)
                    out["n"] += 1
            with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER) as s:
                s.bind((0, 0))
                nf = [(NFT_GETTABLE, NLM_F_DUMP, b"")]
                if name in routers:
                    nf += [(NFT_GETGEN, 0, b""), (NFT_GETCHAIN, NLM_F_DUMP, _attr(1, table)),
                           (NFT_GETRULE, NLM_F_DUMP, _attr(1, table)), (NFT_GETSET, NLM_F_DUMP, _attr(1, table))]
                    nf += [(NFT_GETSETELEM, NLM_F_DUMP, _attr(1, table) + _attr(2, st)) for st in sets]
                    nf += [(NFT_GETGEN, 0, b"")]
                for msg, flags, attrs in nf:
                    seq += 1
                    _ask(s, (NFNL_SUBSYS_NFTABLES << 8) | msg, NLM_F_REQUEST | flags,
                         struct.pack("=BBH", 2 if msg != NFT_GETTABLE else 0, 0, 0) + attrs, seq)
                    out["n"] += 1
            if name in routers:
                try:
                    with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as fh:
                        fh.read()
                except FileNotFoundError:
                    pass

    stop = threading.Event()
    _on_new_thread(go, stop)
    return out["n"]

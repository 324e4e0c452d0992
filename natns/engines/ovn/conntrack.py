"""`natns conntrack` on an OVN lab: OVS's userspace conntrack on a router's active gateway.

On OVN, a router's SNAT and floating IPs (centralized NAT) are done by the chassis its
gateway port is resident on: the chassis the SB ``Port_Binding`` of the router's
``chassisredirect`` port (``cr-<gateway port>``) names. With the userspace datapath the
connection tracker is ovs-vswitchd's own, read with
``ovs-appctl -t <chassis run dir>/ovs-vswitchd.ctl dpctl/dump-conntrack -s``; each line

    tcp,orig=(src=192.0.2.2,dst=203.0.113.114,sport=47462,dport=8080),reply=(src=...),
    zone=5,timeout=29,protoinfo=(state=TIME_WAIT)

becomes a natns conntrack `Entry` (original and reply tuples, the SNAT/DNAT they imply,
state, timeout, zone), the same view the kernel engine's routers give. Only entries
with a translation are shown unless asked (`all_entries`): the NAT entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import KernelError, UserError
from ...kernel.conntrack import CtTuple, Entry, translations
from ...topology.schema import Topology
from . import live, nb


def _split(text: str) -> list[str]:
    """Split at the commas outside parentheses."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
            continue
        depth += (ch == "(") - (ch == ")")
        cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


def _fields(text: str) -> dict[str, str]:
    out = {}
    for part in _split(text):
        k, _, v = part.partition("=")
        if v.startswith("(") and v.endswith(")"):
            v = v[1:-1]
        out[k.strip()] = v
    return out


def _tuple(text: str) -> CtTuple:
    f = _fields(text)

    def num(k: str) -> int | None:
        return int(f[k]) if k in f else None

    return CtTuple(f.get("src", "?"), f.get("dst", "?"), num("sport"), num("dport"),
                   num("type"), num("code"), num("id"))


def parse_line(line: str) -> Entry | None:
    """One line of ``dpctl/dump-conntrack -s`` as an Entry (None for a line that is not an entry)."""
    line = line.strip()
    if not line or "orig=(" not in line:
        return None
    parts = _split(line)
    proto = parts[0]
    f = _fields(",".join(parts[1:]))
    orig, reply = _tuple(f.get("orig", "")), _tuple(f.get("reply", ""))
    info = _fields(f.get("protoinfo", "")) if f.get("protoinfo") else {}
    state = info.get("state") or info.get("state_orig")
    if state is None:
        state = "REPLIED" if proto != "tcp" else "?"
    return Entry(protocol=proto, original=orig, reply=reply, nat=translations(orig, reply), state=state,
                 status=[], timeout=int(f["timeout"]) if "timeout" in f else None,
                 mark=int(f["mark"], 0) if "mark" in f else None,
                 zone=int(f["zone"]) if "zone" in f else None)


def parse(text: str) -> list[Entry]:
    return [e for e in (parse_line(ln) for ln in text.splitlines()) if e is not None]


@dataclass
class GatewayTable:
    """The conntrack entries of one router's active gateway chassis."""

    router: str
    chassis: str | None  # None: the gateway port is bound to no chassis
    namespace: str | None
    entries: list[Entry] = field(default_factory=list)
    note: str | None = None

    def to_json(self) -> dict:
        return {"router": self.router, "engine": "ovn", "chassis": self.chassis, "namespace": self.namespace,
                "conntrack": "ovs-userspace", "accounting": None, "note": self.note,
                "entries": [e.to_json() for e in self.entries]}


def active_chassis(lab: live.Lab, router: str) -> str | None:
    """The chassis the router's gateway port is resident on (its chassisredirect port's binding)."""
    rows = lab.sb_rows("Port_Binding", f"logical_port=cr-{nb.gateway_port(lab.name, router)}")
    if not rows or not live.one(rows[0]["chassis"]):
        return None
    uuid = live.one(rows[0]["chassis"])
    for c in lab.sb_rows("Chassis"):
        if c["_uuid"] == uuid:
            return c["name"]
    return None


def dump(lab: live.Lab, chassis: str) -> str:
    ch = lab.chassis[chassis]
    return lab.runner(None, ["ovs-appctl", "-t", ch.vswitchd_ctl(), "dpctl/dump-conntrack", "-s"])


def tables(t: Topology, router: str | None = None, all_entries: bool = False) -> list[GatewayTable]:
    """The NAT entries on each (or `router`'s) active gateway chassis of OVN lab `t`."""
    names = [r.name for r in t.routers]
    if router is not None:
        if router not in names:
            raise UserError(f"lab {t.name} has no router {router!r} (its routers are {', '.join(names) or 'none'})")
        names = [router]
    try:
        lab = live.find(t.name)
    except KernelError:
        raise UserError(f"the OVN lab {t.name} is not up (run `natns up` on the topology first)") from None
    out = []
    for name in names:
        ch = active_chassis(lab, name)
        if ch is None or ch not in lab.chassis:
            out.append(GatewayTable(name, ch, None, note="the router's gateway port is bound to no chassis "
                                    "(see `natns doctor`)"))
            continue
        entries = parse(dump(lab, ch))
        if not all_entries:
            entries = [e for e in entries if e.nat]
        out.append(GatewayTable(name, ch, lab.chassis[ch].ns, entries))
    return out

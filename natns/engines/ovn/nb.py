"""The northbound mapping: a topology to the OVN NB rows natns wants, and converging to them.

The pure part (`wanted_rows`, `nbctl_commands`) needs no OVN: it maps a validated
`Topology` the way Neutron's OVN driver maps its resources:

* network -> Logical_Switch, each host -> a Logical_Switch_Port ("MAC IP",
  with port security on the same), the router's side -> a router-type port;
* router -> Logical_Router with a Logical_Router_Port on each of its networks and a
  gateway port on the lab's external switch, whose `localnet` port reaches the
  internet through the gateway chassis' bridge (``ovn-bridge-mappings``
  ``PHYSNET:br-ex``); `gateway_chassis` -> Gateway_Chassis rows in priority order
  (the first is active); a default route to the external gateway;
* SNAT -> NAT ``snat`` per network; a floating IP -> NAT ``dnat_and_snat``.

Every row carries ``external_ids`` ``natns:lab`` (the lab) and ``natns:key`` (which
wanted row it is), so converge and remove touch only rows natns wrote for that lab.

The ovsdbapp part (`connect`, `converge`, `remove`) writes the difference between the
wanted rows and the lab's marked rows in ONE transaction: creates, updates the
columns that differ, deletes marked rows no longer wanted. A second converge finds
nothing to do and writes nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ...topology.schema import Topology

LAB = "natns:lab"
KEY = "natns:key"
#: The physical network name of the internet: ``ovn-bridge-mappings`` maps it to br-ex.
PHYSNET = "internet"
#: The MTU lab hosts get on OVN: Geneve needs headroom on a 1500-byte underlay (Neutron: 1442).
HOST_MTU = 1442

#: Tables natns writes, parents before children.
TABLES = ("Logical_Switch", "Logical_Router", "Logical_Switch_Port", "Logical_Router_Port",
          "Gateway_Chassis", "NAT", "Logical_Router_Static_Route")


@dataclass
class Row:
    """One NB row natns wants: its table, its key in the lab, columns, and child rows.

    `children` maps a reference column (``ports``, ``nat``, ...) to the rows it must
    hold; rows in that column natns did not write are left in it.
    """

    table: str
    key: str
    columns: dict[str, Any]
    children: dict[str, list["Row"]] = field(default_factory=dict)

    def walk(self):
        """This row and all rows below it, parents first."""
        yield self
        for kids in self.children.values():
            for k in kids:
                yield from k.walk()


def mac(lab: str, what: str) -> str:
    """A stable locally administered unicast MAC for `what` in `lab`."""
    h = hashlib.sha1(f"{lab}\0{what}".encode()).digest()
    return "0a:" + ":".join(f"{b:02x}" for b in h[:5])


def switch_name(lab: str, network: str) -> str:
    return f"natns-{lab}-{network}"


def external_switch_name(lab: str) -> str:
    return f"natns-{lab}-ext"


def router_name(lab: str, router: str) -> str:
    return f"natns-{lab}-{router}"


def host_port(lab: str, host_ns: str) -> str:
    """The logical switch port of a host: the ``external_ids:iface-id`` of its veth on br-int."""
    return f"natns-{lab}-h-{host_ns}"


def host_mac(lab: str, host_ns: str) -> str:
    """The MAC a host's interface must have (its port's address and port security)."""
    return mac(lab, f"host {host_ns}")


def gateway_port(lab: str, router: str) -> str:
    return f"natns-{lab}-gw-{router}"


def wanted_rows(t: Topology) -> list[Row]:
    """The root rows (switches, routers) with all their children, for topology `t`."""
    lab = t.name
    rows: list[Row] = []
    switches: dict[str, Row] = {}
    for n in t.networks:
        ports = []
        for h in n.hosts:
            addr = f"{host_mac(lab, h.namespace)} {h.address}"
            ports.append(Row("Logical_Switch_Port", f"lsp:host:{h.namespace}", {
                "name": host_port(lab, h.namespace), "addresses": [addr], "port_security": [addr],
            }))
        ports.append(Row("Logical_Switch_Port", f"lsp:rtr:{n.name}", {
            "name": f"natns-{lab}-rp-{n.name}", "type": "router", "addresses": ["router"],
            "options": {"router-port": f"natns-{lab}-lrp-{n.name}"},
        }))
        sw = Row("Logical_Switch", f"ls:{n.name}", {"name": switch_name(lab, n.name)},
                 {"ports": ports})
        switches[n.name] = sw
        rows.append(sw)

    if t.routers:
        ext_ports = [Row("Logical_Switch_Port", "lsp:localnet", {
            "name": f"natns-{lab}-ext-localnet", "type": "localnet", "addresses": ["unknown"],
            "options": {"network_name": PHYSNET},
        })]
        for r in t.routers:
            ext_ports.append(Row("Logical_Switch_Port", f"lsp:gw:{r.name}", {
                "name": f"natns-{lab}-ext-{r.name}", "type": "router", "addresses": ["router"],
                "options": {"router-port": gateway_port(lab, r.name), "nat-addresses": "router"},
            }))
        rows.append(Row("Logical_Switch", "ls:ext", {"name": external_switch_name(lab)},
                        {"ports": ext_ports}))

    for r in t.routers:
        nets = [n for n in t.networks if n.router == r.name]
        ports = []
        for n in nets:
            ports.append(Row("Logical_Router_Port", f"lrp:{n.name}", {
                "name": f"natns-{lab}-lrp-{n.name}", "mac": mac(lab, f"lrp {n.name}"),
                "networks": [f"{n.gateway}/{n.cidr.prefixlen}"],
            }))
        gw_name = gateway_port(lab, r.name)
        chassis = [Row("Gateway_Chassis", f"gwc:{r.name}:{c}", {
            "name": f"{gw_name}_{c}", "chassis_name": c, "priority": len(r.gateway_chassis) - i,
        }) for i, c in enumerate(r.gateway_chassis)]
        ports.append(Row("Logical_Router_Port", f"lrp:gw:{r.name}", {
            "name": gw_name, "mac": mac(lab, f"gw {r.name}"), "networks": [str(r.external.address)],
        }, {"gateway_chassis": chassis}))
        gw = r.external.gateway or t.internet.address.ip
        routes = [Row("Logical_Router_Static_Route", f"route:{r.name}:default", {
            "ip_prefix": "0.0.0.0/0", "nexthop": str(gw),
        })]
        nat = []
        if r.snat != "off":
            to = r.external.address.ip if r.snat == "masquerade" else r.snat
            for n in nets:
                nat.append(Row("NAT", f"nat:snat:{r.name}:{n.name}", {
                    "type": "snat", "external_ip": str(to), "logical_ip": str(n.cidr),
                }))
        for f in t.floating_ips:
            if f.router == r.name:
                nat.append(Row("NAT", f"nat:fip:{r.name}:{f.address}", {
                    "type": "dnat_and_snat", "external_ip": str(f.address), "logical_ip": str(f.host),
                }))
        rows.append(Row("Logical_Router", f"lr:{r.name}", {"name": router_name(lab, r.name)},
                        {"ports": ports, "static_routes": routes, "nat": nat}))
    return rows


def nbctl_commands(rows: list[Row]) -> list[list[str]]:
    """The ``ovn-nbctl`` commands (argument lists) that would create `rows` from nothing.

    For `plan` to show; natns itself writes through ovsdbapp in one transaction.
    The external_ids marks are left out of the commands to keep them readable.
    """
    out: list[list[str]] = []
    for root in rows:
        c = root.columns
        if root.table == "Logical_Switch":
            out.append(["ovn-nbctl", "ls-add", c["name"]])
            for p in root.children.get("ports", []):
                pc = p.columns
                out.append(["ovn-nbctl", "lsp-add", c["name"], pc["name"]])
                if pc.get("type"):
                    out.append(["ovn-nbctl", "lsp-set-type", pc["name"], pc["type"]])
                out.append(["ovn-nbctl", "lsp-set-addresses", pc["name"], *pc["addresses"]])
                if pc.get("port_security"):
                    out.append(["ovn-nbctl", "lsp-set-port-security", pc["name"], *pc["port_security"]])
                if pc.get("options"):
                    out.append(["ovn-nbctl", "lsp-set-options", pc["name"],
                                *[f"{k}={v}" for k, v in sorted(pc["options"].items())]])
        elif root.table == "Logical_Router":
            out.append(["ovn-nbctl", "lr-add", c["name"]])
            for p in root.children.get("ports", []):
                pc = p.columns
                out.append(["ovn-nbctl", "lrp-add", c["name"], pc["name"], pc["mac"], *pc["networks"]])
                for g in p.children.get("gateway_chassis", []):
                    out.append(["ovn-nbctl", "lrp-set-gateway-chassis", pc["name"],
                                g.columns["chassis_name"], str(g.columns["priority"])])
            for s in root.children.get("static_routes", []):
                out.append(["ovn-nbctl", "lr-route-add", c["name"], s.columns["ip_prefix"], s.columns["nexthop"]])
            for n in root.children.get("nat", []):
                out.append(["ovn-nbctl", "lr-nat-add", c["name"], n.columns["type"],
                            n.columns["external_ip"], n.columns["logical_ip"]])
    return out


# --------------------------------------------------------------------------- ovsdbapp


def connect(remote: str, timeout: float = 10):
    """An ovsdbapp NB API on `remote` (``unix:/path`` or ``tcp:HOST:PORT``); `close` it."""
    from ovsdbapp.backend.ovs_idl import connection, idlutils
    from ovsdbapp.schema.ovn_northbound import impl_idl

    helper = idlutils.get_schema_helper(remote, "OVN_Northbound")
    for table in TABLES:
        helper.register_table(table)
    idl = connection.OvsdbIdl(remote, helper)
    conn = connection.Connection(idl, timeout)
    return impl_idl.OvnNbApiIdlImpl(conn)


def close(api) -> None:
    """Stop the API's connection thread (and forget it: ovsdbapp keeps one connection per API
    class and process, shared by every API object, so without this the next `connect` in the
    process would reuse the stopped one). Closing twice is harmless."""
    conn = api.ovsdb_connection
    if conn is None:
        return
    conn.stop()
    for cls in type(api).__mro__:
        if cls.__dict__.get("_ovsdb_connection") is not None:
            cls._ovsdb_connection = None


def _norm(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _norm(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return sorted(_norm(x) for x in v)
    return v


@dataclass(frozen=True)
class Change:
    """One write of a converge: ``create``/``update``/``delete`` of row `key` in `table`."""

    op: str
    table: str
    key: str
    column: str | None = None

    def __str__(self) -> str:
        return f"{self.op} {self.table} {self.key}" + (f" ({self.column})" if self.column else "")


def _converge_command(api, lab: str, rows: list[Row]):
    from ovsdbapp.backend.ovs_idl import command

    class Converge(command.BaseCommand):
        """Make the lab's marked NB rows equal `rows`, inside the transaction it is added to."""

        def run_idl(self, txn):
            tables = self.api.tables
            existing: dict[tuple[str, str], Any] = {}
            for tname in TABLES:
                for row in tables[tname].rows.values():
                    ext = row.external_ids
                    if ext.get(LAB) == lab and KEY in ext:
                        existing[(tname, ext[KEY])] = row
            keep: set[tuple[str, str]] = set()
            changes: list[Change] = []

            def ensure(w: Row):
                row = existing.get((w.table, w.key))
                new = row is None
                if new:
                    row = txn.insert(tables[w.table])
                    changes.append(Change("create", w.table, w.key))
                keep.add((w.table, w.key))
                want = dict(w.columns)
                want["external_ids"] = {**want.get("external_ids", {}), LAB: lab, KEY: w.key}
                for col, val in want.items():
                    if new or _norm(getattr(row, col)) != _norm(val):
                        setattr(row, col, val)
                        if not new:
                            changes.append(Change("update", w.table, w.key, col))
                for col, kids in w.children.items():
                    kid_rows = [ensure(k) for k in kids]
                    cur = [] if new else list(getattr(row, col))
                    foreign = [r for r in cur if r.external_ids.get(LAB) != lab]
                    if new or {r.uuid for r in cur} != {r.uuid for r in foreign + kid_rows}:
                        setattr(row, col, foreign + kid_rows)
                        if not new:
                            changes.append(Change("update", w.table, w.key, col))
                return row

            for w in rows:
                ensure(w)
            for (tname, key), row in existing.items():
                if (tname, key) not in keep:
                    row.delete()
                    changes.append(Change("delete", tname, key))
            self.result = changes

    return Converge(api)


def converge(api, t: Topology | None, lab: str | None = None) -> list[Change]:
    """Write, in one NB transaction, what makes the lab's rows those of `t` (None: no rows).

    Returns the changes made; none means nothing was written.
    """
    lab = t.name if t is not None else lab
    rows = wanted_rows(t) if t is not None else []
    cmd = _converge_command(api, lab, rows)
    with api.transaction(check_error=True) as txn:
        txn.add(cmd)
    return cmd.result


def remove(api, lab: str) -> list[Change]:
    """Delete exactly the NB rows marked as lab `lab`'s, in one transaction."""
    return converge(api, None, lab)


def marked_rows(api, lab: str) -> dict[tuple[str, str], Any]:
    """(table, natns:key) -> row of every NB row marked as `lab`'s (read from the IDL)."""
    out = {}
    for tname in TABLES:
        for row in api.tables[tname].rows.values():
            if row.external_ids.get(LAB) == lab:
                out[(tname, row.external_ids.get(KEY, ""))] = row
    return out

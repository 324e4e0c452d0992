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
import shlex
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
          "Gateway_Chassis", "NAT", "Logical_Router_Static_Route", "Load_Balancer", "Port_Group", "ACL")
#: Tables whose rows live on by themselves (OVSDB root tables): everything else is deleted
#: by the database once no row refers to it.
ROOT_TABLES = ("Logical_Switch", "Logical_Router", "Load_Balancer", "Port_Group")


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
    #: Reference columns that point at rows wanted elsewhere (a port group's ``ports``):
    #: column -> the keys of those rows.
    refs: dict[str, list[str]] = field(default_factory=dict)

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
        lbs = [Row("Load_Balancer", f"lb:{r.name}:{pf.protocol}:{pf.port[0]}", {
            "name": f"natns-{lab}-pf-{r.name}-{pf.protocol}-{pf.port[0]}", "protocol": pf.protocol,
            "vips": {f"{r.external.address.ip}:{p}": f"{pf.to[0]}:{pf.to_port + p - pf.port[0]}"
                     for p in range(pf.port[0], pf.port[1] + 1)},
        }) for pf in t.port_forwards if pf.router == r.name]
        rows.append(Row("Logical_Router", f"lr:{r.name}", {"name": router_name(lab, r.name)},
                        {"ports": ports, "static_routes": routes, "nat": nat, "load_balancer": lbs}))
        if r.isolation and nets:
            rows.append(_port_group(t, r, nets))
    return rows


def port_group_name(lab: str, router: str) -> str:
    """The port group of a router's hosts: OVN allows only letters, digits and '_' there, so
    the lab and router are spelled that way, with a digest keeping different names apart."""
    raw = f"{lab}/{router}"
    safe = "".join(ch if ch.isalnum() else "_" for ch in raw)
    return f"natns_{safe}_{hashlib.sha1(raw.encode()).hexdigest()[:6]}"


def _port_group(t: Topology, r, nets) -> Row:
    """Isolation as Neutron's default security group does it, on a port group of the router's
    hosts (port security on each port is the anti-spoofing half): outbound and replies pass
    (allow-related), inbound passes from the router's own networks, to floating-IP hosts and
    to port-forward targets; any other inbound IPv4 is dropped."""
    lab = t.name
    pg = port_group_name(lab, r.name)
    acls: list[tuple[str, int, str, str]] = [
        ("from-lport", 1002, f"inport == @{pg} && ip4", "allow-related"),
        ("to-lport", 1002, f"outport == @{pg} && ip4 && ip4.src == ${pg}_ip4", "allow-related"),
    ]
    for f in t.floating_ips:
        if f.router == r.name:
            acls.append(("to-lport", 1002, f"outport == @{pg} && ip4 && ip4.dst == {f.host}", "allow-related"))
    for pf in t.port_forwards:
        if pf.router == r.name:
            lo, hi = pf.to_ports
            ports = f"{pf.protocol}.dst == {lo}" if lo == hi else \
                f"{pf.protocol}.dst >= {lo} && {pf.protocol}.dst <= {hi}"
            acls.append(("to-lport", 1002, f"outport == @{pg} && ip4 && ip4.dst == {pf.to[0]} && {ports}",
                         "allow-related"))
    acls.append(("to-lport", 1001, f"outport == @{pg} && ip4", "drop"))
    rows = [Row("ACL", f"acl:{r.name}:{d}:{prio}:{match}", {
        "direction": d, "priority": prio, "match": match, "action": action,
    }) for d, prio, match, action in acls]
    return Row("Port_Group", f"pg:{r.name}", {"name": pg}, {"acls": rows},
               refs={"ports": [f"lsp:host:{h.namespace}" for n in nets for h in n.hosts]})


def create_commands(w: Row, parent: Row | None = None) -> list[list[str]]:
    """The ``ovn-nbctl`` commands (argument lists) that create row `w` alone (its children
    are rows of their own), under `parent` (the row whose reference column holds it)."""
    c = w.columns
    pc = parent.columns.get("name", "") if parent is not None else ""
    nbctl = ["ovn-nbctl"]
    if w.table == "Logical_Switch":
        return [nbctl + ["ls-add", c["name"]]]
    if w.table == "Logical_Router":
        return [nbctl + ["lr-add", c["name"]]]
    if w.table == "Logical_Switch_Port":
        out = [nbctl + ["lsp-add", pc, c["name"]]]
        if c.get("type"):
            out.append(nbctl + ["lsp-set-type", c["name"], c["type"]])
        out.append(nbctl + ["lsp-set-addresses", c["name"], *c["addresses"]])
        if c.get("port_security"):
            out.append(nbctl + ["lsp-set-port-security", c["name"], *c["port_security"]])
        if c.get("options"):
            out.append(nbctl + ["lsp-set-options", c["name"], *[f"{k}={v}" for k, v in sorted(c["options"].items())]])
        return out
    if w.table == "Logical_Router_Port":
        return [nbctl + ["lrp-add", pc, c["name"], c["mac"], *c["networks"]]]
    if w.table == "Gateway_Chassis":
        return [nbctl + ["lrp-set-gateway-chassis", pc, c["chassis_name"], str(c["priority"])]]
    if w.table == "Logical_Router_Static_Route":
        return [nbctl + ["lr-route-add", pc, c["ip_prefix"], c["nexthop"]]]
    if w.table == "NAT":
        return [nbctl + ["lr-nat-add", pc, c["type"], c["external_ip"], c["logical_ip"]]]
    if w.table == "Load_Balancer":
        out = [nbctl + (["--may-exist"] if i else []) + ["lb-add", c["name"], vip, backend, c["protocol"]]
               for i, (vip, backend) in enumerate(sorted(c["vips"].items()))]
        return out + ([nbctl + ["lr-lb-add", pc, c["name"]]] if parent is not None else [])
    if w.table == "Port_Group":
        return [nbctl + ["pg-add", c["name"]]]
    if w.table == "ACL":
        return [nbctl + ["--type=port-group", "acl-add", pc, c["direction"], str(c["priority"]), c["match"],
                         c["action"]]]
    raise ValueError(w.table)


def nbctl_commands(rows: list[Row]) -> list[list[str]]:
    """The ``ovn-nbctl`` commands (argument lists) that would create `rows` from nothing.

    For `plan` to show; natns itself writes through ovsdbapp in one transaction.
    The external_ids marks are left out of the commands to keep them readable.
    """
    out: list[list[str]] = []

    def walk(w: Row, parent: Row | None) -> None:
        out.extend(create_commands(w, parent))
        for kids in w.children.values():
            for k in kids:
                walk(k, w)

    for root in rows:
        walk(root, None)
    for root in rows:
        for col, keys in root.refs.items():
            if keys:
                out.append(["ovn-nbctl", "pg-set-ports", root.columns["name"], *_ref_names(rows, keys)])
    return out


def _ref_names(rows: list[Row], keys: list[str]) -> list[str]:
    by_key = {r.key: r for root in rows for r in root.walk()}
    return [by_key[k].columns.get("name", k) for k in keys]


def _db_value(v: Any) -> str:
    """A column value as ovn-nbctl's ``set`` takes it."""
    if isinstance(v, dict):
        return "{" + ",".join(f"{_db_value(k)}={_db_value(x)}" for k, x in sorted(v.items())) + "}"
    if isinstance(v, (list, tuple, set)):
        return "[" + ",".join(_db_value(x) for x in v) + "]"
    if isinstance(v, (int, bool)):
        return str(v).lower()
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _delete_command(table: str, row, parent) -> list[str]:
    """The ``ovn-nbctl`` command that deletes an existing `row` (its `parent` row, or None)."""
    name = getattr(row, "name", None) if table not in ("NAT", "Logical_Router_Static_Route", "ACL") else None
    pn = getattr(parent, "name", "") if parent is not None else ""
    simple = {"Logical_Switch": "ls-del", "Logical_Router": "lr-del", "Logical_Switch_Port": "lsp-del",
              "Logical_Router_Port": "lrp-del", "Load_Balancer": "lb-del", "Port_Group": "pg-del"}
    if table in simple and name:
        return ["ovn-nbctl", simple[table], name]
    if table == "Gateway_Chassis" and parent is not None:
        return ["ovn-nbctl", "lrp-del-gateway-chassis", pn, row.chassis_name]
    if table == "NAT" and parent is not None:
        return ["ovn-nbctl", "lr-nat-del", pn, row.type, row.external_ip]
    if table == "Logical_Router_Static_Route" and parent is not None:
        return ["ovn-nbctl", "lr-route-del", pn, row.ip_prefix]
    if table == "ACL" and parent is not None:
        return ["ovn-nbctl", "--type=port-group", "acl-del", pn, row.direction, str(row.priority), row.match]
    return ["ovn-nbctl", "destroy", table, str(row.uuid)]


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


def _same(have: Any, want: Any) -> bool:
    """Whether a column's value in the IDL is `want` (an optional column reads as a list of 0..1)."""
    if isinstance(have, list) and not isinstance(want, (list, tuple, set, dict)):
        have = have[0] if len(have) == 1 else have
    return _norm(have) == _norm(want)


@dataclass(frozen=True)
class Change:
    """One write of a converge: ``create``/``update``/``delete`` of row `key` in `table`;
    `argv` the ``ovn-nbctl`` command it amounts to (what `plan` prints; empty when it is
    implied by another change: a parent's reference column when a child is made or removed)."""

    op: str
    table: str
    key: str
    column: str | None = None
    argv: tuple[str, ...] = field(default=(), compare=False)

    def __str__(self) -> str:
        return f"{self.op} {self.table} {self.key}" + (f" ({self.column})" if self.column else "")


def _diff(tables, lab: str, rows: list[Row], txn=None) -> list[Change]:
    """The changes that make the lab's marked rows in `tables` (an IDL's tables) equal `rows`;
    made in `txn` too when one is given (else only computed: `plan`, `status`)."""
    existing: dict[tuple[str, str], Any] = {}
    for tname in TABLES:
        if tname not in tables:
            continue
        for row in tables[tname].rows.values():
            ext = row.external_ids
            if ext.get(LAB) == lab and KEY in ext:
                existing[(tname, ext[KEY])] = row
    parents: dict[Any, Any] = {}  # uuid of a marked child -> its marked parent row
    for (tname, _), row in existing.items():
        for col in ("ports", "nat", "static_routes", "gateway_chassis", "load_balancer", "acls"):
            for kid in getattr(row, col, []) if hasattr(row, col) else []:
                parents[kid.uuid] = row
    keep: set[tuple[str, str]] = set()
    changes: list[Change] = []
    made: dict[str, Any] = {}  # wanted key -> row (None when only computing and new)
    created: set[str] = set()

    def ensure(w: Row, parent: Row | None):
        row = existing.get((w.table, w.key))
        new = row is None
        if new:
            row = txn.insert(tables[w.table]) if txn is not None else None
            created.add(w.key)
            changes.append(Change("create", w.table, w.key,
                                  argv=tuple(shlex.join(c) for c in create_commands(w, parent))))
        keep.add((w.table, w.key))
        made[w.key] = row
        want = dict(w.columns)
        want["external_ids"] = {**want.get("external_ids", {}), LAB: lab, KEY: w.key}
        for col, val in want.items():
            if new or not _same(getattr(row, col), val):
                if txn is not None:
                    setattr(row, col, val)
                if not new:
                    name = getattr(row, "name", "") if hasattr(row, "name") else ""
                    changes.append(Change("update", w.table, w.key, col, argv=(shlex.join(
                        ["ovn-nbctl", "set", w.table, name or str(row.uuid), f"{col}={_db_value(val)}"]),)))
        for col, kids in w.children.items():
            kid_rows = [ensure(k, w) for k in kids]
            cur = [] if new else list(getattr(row, col))
            foreign = [r for r in cur if r.external_ids.get(LAB) != lab]
            if new or txn is None and any(r is None for r in kid_rows) or \
                    {r.uuid for r in cur} != {r.uuid for r in foreign + kid_rows if r is not None}:
                if txn is not None:
                    setattr(row, col, foreign + kid_rows)
                if not new:
                    wanted = {k.key for k in kids}
                    implied = any(k.key in created for k in kids) or any(
                        r.external_ids.get(LAB) == lab and r.external_ids.get(KEY) not in wanted for r in cur)
                    if implied:  # the child's own create/delete command does it
                        argv: tuple[str, ...] = ()
                    elif col == "load_balancer":
                        argv = tuple(f"ovn-nbctl lr-lb-add {w.columns['name']} {k.columns['name']}" for k in kids)
                    else:
                        argv = (f"ovn-nbctl set {w.table} {w.columns.get('name', '')} {col}=[...]",)
                    changes.append(Change("update", w.table, w.key, col, argv=argv))
        return row

    for w in rows:
        ensure(w, None)
    for w in (r for root in rows for r in root.walk()):  # references to rows wanted elsewhere
        row = made[w.key]
        for col, keys in w.refs.items():
            targets = [made[k] for k in keys]
            cur = [] if row is None or w.key in created else list(getattr(row, col))
            if row is None or w.key in created or any(t is None for t in targets) or \
                    {r.uuid for r in cur} != {t.uuid for t in targets}:
                if txn is not None:
                    setattr(row, col, targets)
                argv = shlex.join(["ovn-nbctl", "pg-set-ports", w.columns["name"], *_ref_names(rows, keys)])
                if w.key in created:  # part of making the row: its create command says it
                    i = next(j for j, c in enumerate(changes) if c.op == "create" and c.key == w.key)
                    changes[i] = Change("create", w.table, w.key, argv=changes[i].argv + (argv,))
                else:
                    changes.append(Change("update", w.table, w.key, col, argv=(argv,)))
    doomed = []
    for (tname, key), row in existing.items():
        if (tname, key) not in keep:
            parent = parents.get(row.uuid)
            gone_with_parent = parent is not None and (parent._table.name, parent.external_ids.get(KEY)) \
                not in keep and tname not in ROOT_TABLES
            changes.append(Change("delete", tname, key,
                                  argv=() if gone_with_parent else (shlex.join(_delete_command(tname, row, parent)),)))
            doomed.append(row)
    if txn is not None:  # after every command is rendered: a deleted row can't be read
        for row in doomed:
            row.delete()
    return changes


def _converge_command(api, lab: str, rows: list[Row]):
    from ovsdbapp.backend.ovs_idl import command

    class Converge(command.BaseCommand):
        """Make the lab's marked NB rows equal `rows`, inside the transaction it is added to."""

        def run_idl(self, txn):
            self.result = _diff(self.api.tables, lab, rows, txn)

    return Converge(api)


def diff(api, t: Topology | None, lab: str | None = None) -> list[Change]:
    """What `converge` would write now, computed from the IDL's copy of the NB; writes nothing."""
    lab = t.name if t is not None else lab
    return _diff(api.tables, lab, wanted_rows(t) if t is not None else [])


def diff_empty(t: Topology) -> list[Change]:
    """What `converge` writes into an empty NB (a sandbox whose central is made anew)."""
    return _diff({}, t.name, wanted_rows(t))


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

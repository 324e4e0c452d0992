"""The OVN engine's pure parts: the NB diff on a fake IDL (what `plan`/`status` show for a
missing, edited or stale row, and that foreign rows are never in it), the port forward and
isolation mapping, and the engine seam's dispatch."""

from __future__ import annotations

import copy
import pathlib
import uuid

import yaml

from natns import topology
from natns.engines import for_topology
from natns.engines.kernel import KernelEngine
from natns.engines.ovn import nb

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "ovn.yaml"


def _t(mutate=None):
    d = yaml.safe_load(EXAMPLE.read_text())
    if mutate:
        mutate(d)
    return topology.parse(d, "ovn.yaml")


class FakeRow:
    """What ovsdbapp's IDL rows offer the diff: columns as attributes, a uuid, a table."""

    def __init__(self, table, columns):
        self.uuid = uuid.uuid4()
        self._table = type("T", (), {"name": table})
        for k, v in columns.items():
            setattr(self, k, v)


def _idl(t) -> dict:
    """Fake IDL tables holding exactly the rows natns wants for `t` (as a converge leaves them)."""
    tables = {name: type("Table", (), {"rows": {}})() for name in nb.TABLES}
    made = {}

    def put(w):
        cols = copy.deepcopy(w.columns)
        cols["external_ids"] = {nb.LAB: t.name, nb.KEY: w.key}
        row = FakeRow(w.table, cols)
        for col, kids in w.children.items():
            setattr(row, col, [put(k) for k in kids])
        tables[w.table].rows[row.uuid] = row
        made[w.key] = row
        return row

    rows = nb.wanted_rows(t)
    for w in rows:
        put(w)
    for w in (r for root in rows for r in root.walk()):
        for col, keys in w.refs.items():
            setattr(made[w.key], col, [made[k] for k in keys])
    return tables


def test_nothing_to_do_when_the_nb_holds_the_rows_and_foreign_rows_are_not_looked_at():
    t = _t()
    tables = _idl(t)
    tables["Logical_Switch"].rows["x"] = FakeRow("Logical_Switch", {"name": "foreign", "external_ids": {}})
    other = FakeRow("Logical_Switch", {"name": "natns-other-tenant", "external_ids": {nb.LAB: "other",
                                                                                        nb.KEY: "ls:tenant"}})
    tables["Logical_Switch"].rows["y"] = other
    assert nb._diff(tables, t.name, nb.wanted_rows(t)) == []


def test_a_deleted_an_edited_and_a_stale_row_each_become_one_ovn_nbctl_command():
    t = _t()
    tables = _idl(t)
    nat = next(r for r in tables["NAT"].rows.values() if r.type == "dnat_and_snat")
    router = next(iter(tables["Logical_Router"].rows.values()))
    router.nat = [r for r in router.nat if r is not nat]
    del tables["NAT"].rows[nat.uuid]  # deleted by hand (a NAT row goes with its reference)
    lsp = next(r for r in tables["Logical_Switch_Port"].rows.values() if r.name.endswith("-h-vm1"))
    lsp.addresses = ["0a:00:00:00:00:01 192.0.2.2"]  # edited by hand
    stale = FakeRow("NAT", {"type": "snat", "external_ip": "198.51.100.99", "logical_ip": "192.0.2.0/25",
                            "external_ids": {nb.LAB: t.name, nb.KEY: "nat:old"}})
    tables["NAT"].rows[stale.uuid] = stale
    router.nat.append(stale)
    changes = nb._diff(tables, t.name, nb.wanted_rows(t))
    shown = {str(c): c.argv for c in changes}
    assert shown["create NAT nat:fip:r1:198.51.100.50"] == (
        "ovn-nbctl lr-nat-add natns-ovnseed-r1 dnat_and_snat 198.51.100.50 192.0.2.3",)
    assert shown["update Logical_Switch_Port lsp:host:vm1 (addresses)"] == (
        "ovn-nbctl set Logical_Switch_Port natns-ovnseed-h-vm1 "
        "'addresses=[\"" + nb.host_mac("ovnseed", "vm1") + " 192.0.2.2\"]'",)
    assert shown["delete NAT nat:old"] == ("ovn-nbctl lr-nat-del natns-ovnseed-r1 snat 198.51.100.99",)
    assert shown["update Logical_Router lr:r1 (nat)"] == ()  # implied by the create and the delete


def test_an_empty_nb_gets_every_row_with_its_command():
    t = _t()
    changes = nb.diff_empty(t)
    assert {c.op for c in changes} == {"create"} and all(c.argv for c in changes)
    assert len(changes) == sum(1 for root in nb.wanted_rows(t) for _ in root.walk())


def test_port_forward_is_a_load_balancer_on_the_router_and_opens_its_acl():
    def pf(d):
        d["port_forwards"] = [{"router": "r1", "protocol": "tcp", "port": "8000-8001", "to": "192.0.2.2:80"}]
    t = _t(pf)
    rows = {(r.table, r.key): r for root in nb.wanted_rows(t) for r in root.walk()}
    lb = rows[("Load_Balancer", "lb:r1:tcp:8000")]
    assert lb.columns["vips"] == {"198.51.100.116:8000": "192.0.2.2:80", "198.51.100.116:8001": "192.0.2.2:81"}
    assert lb in rows[("Logical_Router", "lr:r1")].children["load_balancer"]
    acls = [r.columns for r in rows[("Port_Group", "pg:r1")].children["acls"]]
    assert any(a["match"].endswith("ip4.dst == 192.0.2.2 && tcp.dst >= 80 && tcp.dst <= 81")
               and a["action"] == "allow-related" for a in acls)


def test_isolation_is_neutrons_default_security_group_on_a_port_group():
    t = _t()
    pg = next(r for r in nb.wanted_rows(t) if r.table == "Port_Group")
    name = pg.columns["name"]
    assert name.replace("_", "").isalnum()  # OVN allows letters, digits and '_' only
    assert pg.refs["ports"] == ["lsp:host:vm1", "lsp:host:vm2"]
    acls = {(a.columns["direction"], a.columns["priority"], a.columns["match"], a.columns["action"])
            for a in pg.children["acls"]}
    assert ("from-lport", 1002, f"inport == @{name} && ip4", "allow-related") in acls
    assert ("to-lport", 1002, f"outport == @{name} && ip4 && ip4.src == ${name}_ip4", "allow-related") in acls
    assert ("to-lport", 1002, f"outport == @{name} && ip4 && ip4.dst == 192.0.2.3", "allow-related") in acls
    assert ("to-lport", 1001, f"outport == @{name} && ip4", "drop") in acls

    def off(d):
        d["routers"][0]["isolation"] = False
    assert not [r for r in nb.wanted_rows(_t(off)) if r.table == "Port_Group"]


def test_the_engine_is_chosen_by_the_topology():
    assert for_topology(_t()).name == "ovn"
    d = yaml.safe_load((EXAMPLE.parent / "seed.yaml").read_text())
    assert isinstance(for_topology(topology.parse(d, "seed.yaml")), KernelEngine)

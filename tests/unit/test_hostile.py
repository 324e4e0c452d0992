"""Hostile input: generated topologies, valid and invalid, never crash natns.

Property (hypothesis): every input either validates, and then the desired
state and the plan from nothing (both backends' rules rendered) are built
without an exception and are self-consistent, or it raises TopologyError
whose message is one line naming a field that is in the input (or, when
missing, one the schema has). Never another exception. The inputs are
topology dicts built to collide on purpose (few names, few addresses,
overlapping CIDRs and port ranges), the same with a random part replaced
by junk (wrong types, unicode, huge numbers, deep nesting), YAML text and
raw bytes, and a few fixed monsters (deep, huge).

Also here: no natns source hands a string to a shell.
"""

from __future__ import annotations

import ast
import copy
import datetime
import ipaddress
import os
import pathlib
import re
import tempfile
import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natns import topology
from natns.desired import desired_state
from natns.errors import TopologyError
from natns.firewall import BACKENDS, get_backend
from natns.plan import plan_up
from natns.state import LabState, ObservedLab

SOURCE = pathlib.Path(__file__).resolve().parents[2] / "natns"
IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
SETTINGS = {"deadline": None, "database": None,
            "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}

# --------------------------------------------------------------------------- the property


def _fields() -> set[str]:
    """Every field name the schema knows (and the aliases users write)."""
    out = {"from"}
    for cls in (topology.Topology, topology.Internet, topology.Router, topology.External, topology.Network, topology.Host,
                topology.FloatingIpSpec, topology.PortForwardSpec, topology.Check, topology.Ingress):
        out |= set(cls.model_fields)
    return out


FIELDS = _fields()


def _tokens(path: str) -> list:
    """``a.b[0]['x y']`` -> ["a", "b", 0, "x y"]; the whole path must parse."""
    out: list = []
    pos = 0
    token = re.compile(r"\.?([A-Za-z0-9_-]+)|\[(\d+)\]|\[('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\]")
    while pos < len(path):
        m = token.match(path, pos)
        assert m, f"unparsable field path {path!r} at {pos}"
        out.append(m.group(1) if m.group(1) is not None else int(m.group(2)) if m.group(2) is not None
                   else ast.literal_eval(m.group(3)))
        pos = m.end()
    return out


def assert_names_a_field(exc: TopologyError, data) -> None:
    """One line, ``lab.yaml: <path>: <problem>``, the path walking into `data`."""
    msg = str(exc)
    assert "\n" not in msg and "\r" not in msg, repr(msg)
    assert msg.startswith("lab.yaml: "), msg
    assert exc.problem.strip(), msg
    if not isinstance(data, dict):
        return  # the whole document is wrong: "a topology must be a mapping"
    assert exc.path, msg
    if exc.path.startswith("line "):
        return  # YAML syntax: a line number
    cur = data
    toks = _tokens(exc.path)
    assert toks, msg
    for i, tok in enumerate(toks):
        last = i == len(toks) - 1
        if isinstance(tok, int):
            assert isinstance(cur, (list, tuple)) and (0 <= tok < len(cur) or last), msg
            if tok >= len(cur):
                return
            cur = cur[tok]
        elif isinstance(cur, dict) and tok in cur:
            cur = cur[tok]
        elif isinstance(cur, dict) and any(str(k) == tok for k in cur):
            cur = next(v for k, v in cur.items() if str(k) == tok)
        else:
            # A field that is not in the input: missing, or defaulted and clashing.
            assert tok in FIELDS, msg
            return


def outcome(data, text: str | None = None):
    """Validate; on success build everything `up` would from nothing. Returns the Topology or None."""
    try:
        t = topology.loads(text, "lab.yaml") if text is not None else topology.parse(data, "lab.yaml")
    except TopologyError as exc:
        if text is not None:
            try:
                data = yaml.safe_load(text)
            except Exception:  # the message names a line or nothing: checked above
                data = None
        assert_names_a_field(exc, data)
        return None
    desired = desired_state(t)
    for backend in BACKENDS:
        plan = plan_up(desired, ObservedLab(t.name), get_backend(backend))
        assert sorted(s.target for s in plan.steps if s.action == "create_netns") == sorted(t.namespaces())
        for step in plan.steps:
            assert "\n" not in step.command()
    consistent(t, desired)
    return t


def consistent(t: topology.Topology, desired: LabState) -> None:
    """What a valid topology turns into: every name usable, nothing silently overwritten."""
    assert len(set(t.namespaces())) == len(t.namespaces()) == len(desired.namespaces)
    for ns in desired.namespaces.values():
        assert topology._NAME_RE.fullmatch(ns.name) and len(ns.name.encode()) <= 64
        for name in ns.links:
            assert IFNAME.fullmatch(name) and name not in topology.RESERVED_IFNAMES, (ns.name, name)
    for r in t.routers:
        nets = [n for n in t.networks if n.router == r.name]
        want = 1 + len(nets) + sum(len(n.hosts) for n in nets)
        assert len(desired.namespaces[r.ns].links) == want, (r.name, sorted(desired.namespaces[r.ns].links))
    if t.internet:
        ports = sum(1 for r in t.routers if r.external.uplink == "internet")
        assert len(desired.namespaces[t.internet.namespace].links) == 1 + ports


# --------------------------------------------------------------------------- strategies

NASTY_STRINGS = [
    "", " ", "lo", "all", "default", "eth0", "a;rm -rf /", "$(touch /tmp/natns-pwned)", "`id`", "a b", "a\nb",
    "tenant\n", "x\x00y", "名前", "ünï", "é", "a" * 15, "b" * 16, "c" * 64, "d" * 65, "-x", ".x", "x:y", "x/y",
    "..", "tap-h1", "qr-n1", "e-r1", "ext", "inet", "natns:x:router:y", "'; DROP TABLE", "%s%n", "\u202e",
    "1" * 5, "0",
]
POOL_NAMES = ["r1", "r2", "h1", "h2", "n1", "n2", "inet", "tap-h1", "x" * 15, "y" * 16, "lo"]
ADDRS = ["198.51.100.1", "198.51.100.2", "198.51.100.50", "198.51.100.0", "198.51.100.255",
         "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.129", "203.0.113.5", "0.0.0.0", "255.255.255.255",
         "2001:db8::1", "::ffff:192.0.2.1", "192.0.2.256", "1.2.3", "192.0.2.1 ", "192.0.2.01"]
IFACES = ["198.51.100.1/24", "198.51.100.2/24", "198.51.100.3/30", "198.51.100.2/31", "198.51.100.2/32",
          "198.51.100.0/24", "192.0.2.1/24", "2001:db8::1/64", "198.51.100.2", "198.51.100.2/0", "198.51.100.2/33"]
CIDRS = ["192.0.2.0/24", "192.0.2.0/25", "192.0.2.128/25", "192.0.2.0/30", "192.0.2.0/31", "192.0.2.1/24",
         "198.51.100.0/24", "0.0.0.0/0", "2001:db8::/64", "192.0.2.0"]

nasty = st.sampled_from(NASTY_STRINGS)
name = st.one_of(st.sampled_from(POOL_NAMES), nasty, st.from_regex(r"[a-z][a-z0-9._-]{0,17}", fullmatch=True),
                 st.text(max_size=20))
addr = st.one_of(st.sampled_from(ADDRS), st.ip_addresses(v=4, network="198.51.100.0/30").map(str),
                 st.ip_addresses(v=6).map(str), st.integers(-5, 2**40))
iface_addr = st.one_of(st.sampled_from(IFACES), addr)
port = st.one_of(st.integers(-1, 70000), st.sampled_from(["80", "8000-8010", "10-5", "1-2000", "٨٠", " 80", "80-"]))
scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63), st.floats(),
                   st.text(max_size=30), nasty, st.binary(max_size=10), st.dates(), st.datetimes(),
                   st.just(float("nan")), st.just(10**400))
junk = st.recursive(scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), st.integers(), nasty), inner,
                                                 max_size=4)), max_leaves=20)


def maybe(strategy, p_absent=0.3):
    """Sometimes absent (None means: leave the key out)."""
    return st.one_of(st.none(), strategy) if p_absent else strategy


@st.composite
def topologies(draw) -> dict:
    """Topology dicts that are often valid and collide on purpose when they aren't."""
    data: dict = {"name": draw(st.one_of(st.sampled_from(["lab", "x" * 32, "y" * 33]), name))}
    if draw(st.booleans()):
        data["backend"] = draw(st.sampled_from(["nftables", "iptables", "pf", "NFTABLES"]))
    routers = draw(st.lists(st.sampled_from(["r1", "r2", "r3", "lo", "x" * 14, "y" * 20]), max_size=4))
    if draw(st.integers(0, 9)):
        inet = {"address": draw(st.sampled_from(["198.51.100.1/24", "198.51.100.1/24", "198.51.100.1/30"])),
                "namespace": draw(st.sampled_from(["inet", "inet", "r1", "h1"]))}
        if draw(st.booleans()):
            inet["hosts"] = draw(st.lists(st.sampled_from(["203.0.113.5", "203.0.113.6", "198.51.100.1",
                                                           "192.0.2.2", "127.0.0.1", "224.0.0.1"]), max_size=3))
        if draw(st.integers(0, 5)) == 0:
            inet["interface"] = draw(name)
        data["internet"] = inet
    data["routers"] = []
    for i, r in enumerate(routers):
        ext = {"address": draw(st.sampled_from([f"198.51.100.{10 + i}/24", "198.51.100.10/24",
                                                "198.51.100.1/24", "198.51.100.2/30"]))}
        if draw(st.integers(0, 4)) == 0:
            ext["gateway"] = draw(st.sampled_from(["198.51.100.1", "198.51.100.9", "192.0.2.1"]))
        if draw(st.integers(0, 6)) == 0:
            ext["uplink"] = "host"
        if draw(st.integers(0, 6)) == 0:
            ext["interface"] = draw(st.one_of(st.sampled_from(["eth0", "qr-n1", "tap-h1", "lo"]), name))
        if draw(st.integers(0, 8)) == 0:
            ext["mtu"] = draw(st.integers(0, 70000))
        router = {"name": r, "external": ext}
        if draw(st.integers(0, 5)) == 0:
            router["snat"] = draw(st.sampled_from(["masquerade", "off", False, f"198.51.100.{10 + i}", "1.2.3.4"]))
        if draw(st.integers(0, 6)) == 0:
            router["namespace"] = draw(st.sampled_from(["h1", "inet", "rx", "r1"]))
        if draw(st.integers(0, 6)) == 0:
            router["isolation"] = draw(st.booleans())
        data["routers"].append(router)
    data["networks"] = []
    for i in range(draw(st.integers(0, 4))):
        cidr = draw(st.sampled_from(["192.0.2.0/24", "192.0.2.0/25", "192.0.2.128/25", "192.0.2.0/30"]))
        net = ipaddress.ip_network(cidr)
        hosts = list(net.hosts())
        n = {"name": draw(st.sampled_from(["n1", "n2", "n3", f"n{i}", "z" * 70])),
             "router": draw(st.sampled_from(routers or ["r1"])),
             "cidr": cidr, "gateway": str(draw(st.sampled_from(hosts[:2])))}
        if draw(st.integers(0, 6)) == 0:
            n["interface"] = draw(st.sampled_from(["qr-n1", "eth0", "tap-h1", "br0", "lo"]))
        n["hosts"] = [{"namespace": draw(st.sampled_from(["h1", "h2", "h3", f"h{i}x", "inet", "r1",
                                                          "tap-name-of-twenty"])),
                       "address": str(draw(st.sampled_from(hosts)))}
                      for _ in range(draw(st.integers(0, 3)))]
        data["networks"].append(n)
    if draw(st.booleans()):
        data["floating_ips"] = [{"router": draw(st.sampled_from(routers or ["r1"])),
                                 "address": draw(st.sampled_from(["198.51.100.50", "198.51.100.51",
                                                                  "198.51.100.10", "203.0.113.5"])),
                                 "host": draw(st.sampled_from(["192.0.2.2", "192.0.2.3", "192.0.2.130"]))}
                                for _ in range(draw(st.integers(0, 3)))]
    if draw(st.booleans()):
        data["port_forwards"] = [{"router": draw(st.sampled_from(routers or ["r1"])),
                                  "protocol": draw(st.sampled_from(["tcp", "udp", "sctp"])),
                                  "port": draw(st.sampled_from([80, 8080, "8000-8010", "8005", "65530-65535"])),
                                  "to": draw(st.sampled_from(["192.0.2.2", "192.0.2.2:80", "192.0.2.3:65535",
                                                              "192.0.2.130:22"]))}
                                 for _ in range(draw(st.integers(0, 3)))]
    if draw(st.integers(0, 3)) == 0:
        data["checks"] = [{"from": draw(st.sampled_from(["h1", "r1", "nope"])), "to": "203.0.113.5",
                           draw(st.sampled_from(["tcp", "udp", "expect"])): draw(st.sampled_from([80, "blocked"]))}]
    return data


@st.composite
def sound_topologies(draw) -> dict:
    """Topologies built to be valid (unusual but legal names, same CIDR behind several
    routers, mappings, both uplinks), then with one collision or bad value put in
    about half the time."""
    rnames = draw(st.lists(st.sampled_from(["r1", "r2", "0", "a.b", "R_3", "x" * 14, "y" * 20, "z" * 64]),
                           unique=True, max_size=4))
    data: dict = {"name": draw(st.sampled_from(["lab", "L.1", "x" * 32, "0"])),
                  "backend": draw(st.sampled_from(["nftables", "iptables"]))}
    has_inet = draw(st.integers(0, 9)) > 0
    if has_inet:
        data["internet"] = {"address": "198.51.100.1/24", "namespace": draw(st.sampled_from(["inet", "i" * 64])),
                            "hosts": draw(st.lists(st.sampled_from(["203.0.113.5", "203.0.113.6"]), unique=True))}
    data["routers"] = []
    for i, r in enumerate(rnames):
        host_uplink = not has_inet or draw(st.integers(0, 5)) == 0
        ext = {"address": f"198.51.100.{10 + i}/24"}
        if host_uplink:
            ext.update(uplink="host", gateway="198.51.100.1")
        if draw(st.booleans()):
            ext["interface"] = draw(st.sampled_from(["eth0", "qg-1", "e" * 15]))
        router = {"name": r, "external": ext,
                  "snat": draw(st.sampled_from(["masquerade", "off", f"198.51.100.{10 + i}"]))}
        data["routers"].append(router)
    data["networks"], data["floating_ips"], data["port_forwards"] = [], [], []
    n_host = 0
    v6 = has_inet and draw(st.booleans())  # IPv6 beside (or instead of) IPv4
    if v6:
        data["internet"]["address6"] = "2001:db8:ff::1/64"
        data["internet"]["hosts"] += draw(st.lists(st.sampled_from(["2001:db8:ffff::5", "2001:db8:ffff::6"]),
                                                   unique=True))
    for i, r in enumerate(rnames):
        if v6 and data["routers"][i]["external"].get("uplink") != "host":
            data["routers"][i]["external"]["address6"] = f"2001:db8:ff::{10 + i:x}/64"
            data["routers"][i]["snat6"] = draw(st.sampled_from(["off", "masquerade", False]))
        cidrs = draw(st.sampled_from([[], ["192.0.2.0/24"], ["192.0.2.0/25", "192.0.2.128/25"], ["192.0.2.0/30"]]))
        hosts_here = []
        for j, cidr in enumerate(cidrs):
            net = ipaddress.ip_network(cidr)
            addrs = [str(a) for a in net.hosts()]
            hosts = []
            for k in range(draw(st.integers(0, min(2, len(addrs) - 1)))):
                n_host += 1
                hosts.append({"namespace": draw(st.sampled_from([f"h{n_host}", f"h{n_host}-" + "q" * 20])),
                              "address": addrs[1 + k]})
            hosts_here += [h["address"] for h in hosts]
            n = {"name": f"n{i}-{j}", "router": r, "cidr": cidr, "gateway": addrs[0], "hosts": hosts}
            if "address6" in data["routers"][i]["external"]:
                n.update(cidr6=f"2001:db8:{i + 1:x}{j}::/64", gateway6=f"2001:db8:{i + 1:x}{j}::1")
                v6_only = draw(st.integers(0, 3)) == 0
                if v6_only:
                    del n["cidr"], n["gateway"]
                for k, h in enumerate(hosts):
                    h["address6"] = f"2001:db8:{i + 1:x}{j}::{k + 2:x}"
                    if v6_only:
                        del h["address"]
                if hosts and data["routers"][i]["snat6"] == "off" and draw(st.booleans()):
                    data["routers"][i]["ingress"] = [{"to": hosts[0]["address6"], "protocol": "tcp",
                                                      "port": draw(st.sampled_from([80, "8000-8010"]))}]
                if v6_only:
                    hosts = []  # no IPv4 address for floating IPs and port forwards
            if draw(st.integers(0, 3)) == 0:
                n["interface"] = f"br{i}-{j}"
            if draw(st.integers(0, 4)) == 0:
                n["mtu"] = draw(st.sampled_from([576, 1400, 9000]))
            data["networks"].append(n)
        if hosts_here and draw(st.booleans()):
            data["floating_ips"].append({"router": r, "address": f"198.51.100.{100 + i}", "host": hosts_here[0]})
        if hosts_here and draw(st.booleans()):
            lo = draw(st.integers(1, 65000))
            data["port_forwards"].append({"router": r, "protocol": draw(st.sampled_from(["tcp", "udp"])),
                                          "port": draw(st.sampled_from([lo, f"{lo}-{lo + 5}"])),
                                          "to": draw(st.sampled_from([hosts_here[-1], f"{hosts_here[-1]}:80"]))})
    if draw(st.booleans()):
        # One collision or bad value, somewhere.
        paths = [p for p in _paths(data) if p and not isinstance(p[-1], int) or len(p) > 1]
        where = draw(st.sampled_from(paths))
        parent = data
        for k in where[:-1]:
            parent = parent[k]
        existing_values = [v for p in _paths(data) if p for v in [_get(data, p)] if isinstance(v, (str, int))]
        parent[where[-1]] = draw(st.one_of(st.sampled_from(existing_values or [""]), nasty, addr, port))
    return data


def _get(obj, path):
    for k in path:
        obj = obj[k]
    return obj


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@st.composite
def damaged(draw) -> dict:
    """A generated topology with one part replaced by junk, or a key added or dropped."""
    data = draw(topologies())
    paths = [p for p in _paths(data) if p]
    if not paths:
        return data
    where = draw(st.sampled_from(paths))
    parent = data
    for k in where[:-1]:
        parent = parent[k]
    how = draw(st.sampled_from(["junk", "junk", "nasty", "drop", "add"]))
    if how == "drop":
        del parent[where[-1]]
    elif how == "add" and isinstance(parent, dict):
        parent[draw(st.one_of(nasty, st.text(max_size=8)))] = draw(junk)
    else:
        parent[where[-1]] = draw(junk if how == "junk" else st.one_of(nasty, addr, iface_addr, port))
    return data


# --------------------------------------------------------------------------- the tests


@settings(max_examples=300, **SETTINGS)
@given(sound_topologies())
def test_sound_topologies_with_one_collision_validate_or_name_the_field(data):
    outcome(data)


@settings(max_examples=300, **SETTINGS)
@given(topologies())
def test_colliding_topologies_validate_or_name_the_field(data):
    outcome(data)


@settings(max_examples=300, **SETTINGS)
@given(damaged())
def test_damaged_topologies_validate_or_name_the_field(data):
    outcome(data)


@settings(max_examples=200, **SETTINGS)
@given(junk)
def test_junk_documents_are_refused_in_one_line(data):
    outcome(data)


@settings(max_examples=150, **SETTINGS)
@given(topologies(), st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(
    ["", "\n", ":", "- ", "[", "]", "{", "}", "&a", "*a", "!!binary", "\t", "'", '"', "#", "%YAML 1.1\n",
     "!!python/object:os.system", "\x00", "\ud7ff", "\ufeff", "---\n", "<<: *a\n", "!!int ", "!!bool ",
     "!!float ", "!!set ", "!!binary ", "2001-99-99", "? ", "|", ">", "~", "1e400", ".inf", "0x"])), max_size=4))
def test_yaml_text_validates_or_names_the_field(data, edits):
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    for pos, piece in edits:
        pos %= len(text) + 1
        text = text[:pos] + piece + text[pos:]
    outcome(None, text)


@settings(max_examples=150, **SETTINGS)
@given(sound_topologies(), st.data())
def test_a_key_written_twice_anywhere_is_refused_with_both_lines(data, draw):
    """PyYAML alone keeps the last of two equal keys; natns names both lines instead."""
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    lines = text.splitlines()
    scalar_keys = [(i, m) for i, ln in enumerate(lines)
                   for m in [re.fullmatch(r"((?:  |- )*)([A-Za-z_]+): (\S.*)", ln)] if m]
    i, m = draw.draw(st.sampled_from(scalar_keys))
    column = len(m.group(1))
    again = " " * column + f"{m.group(2)}: {m.group(3)}"
    text = "\n".join(lines[:i + 1] + [again] + lines[i + 1:]) + "\n"
    with pytest.raises(TopologyError) as info:
        topology.loads(text, "lab.yaml")
    assert str(info.value) == (f"lab.yaml: line {i + 2}: not valid YAML: key {m.group(2)!r} appears twice "
                               f"in one mapping (lines {i + 1} and {i + 2})"), text


@settings(max_examples=150, **SETTINGS)
@given(sound_topologies(), st.data())
def test_a_misspelt_key_anywhere_is_named_with_the_key_it_stands_for(data, draw):
    """One letter dropped from a key of a valid topology: the error names that key and the right one."""
    try:
        topology.parse(copy.deepcopy(data), "lab.yaml")
    except TopologyError:
        return  # the collision sound_topologies sometimes puts in
    keys = [p for p in _paths(data) if p and isinstance(p[-1], str) and len(p[-1]) >= 3]
    where = draw.draw(st.sampled_from(keys))
    parent = _get(data, where[:-1])
    right = where[-1]
    k = draw.draw(st.integers(1, len(right) - 1))  # keep the first letter
    typo = right[:k] + right[k + 1:]
    if typo in parent or typo == right:
        return
    parent[typo] = parent.pop(right)
    with pytest.raises(TopologyError) as info:
        topology.parse(data, "lab.yaml")
    e = info.value
    assert _tokens(e.path) == [*where[:-1], typo], str(e)
    assert e.problem == f"unknown field; did you mean {right!r}?", str(e)


@settings(max_examples=100, **SETTINGS)
@given(st.binary(max_size=300))
def test_any_file_content_is_refused_in_one_line_or_read(content):
    fd, path = tempfile.mkstemp(suffix=".yaml")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        try:
            topology.load(path)
        except TopologyError as exc:
            msg = str(exc)
            assert "\n" not in msg and msg.startswith(f"{path}: "), msg
    finally:
        os.unlink(path)


def _valid(routers: int = 2) -> dict:
    return {"name": "lab", "internet": {"address": "198.51.100.1/24"},
            "routers": [{"name": f"r{i}", "external": {"address": f"198.51.100.{10 + i}/24"}}
                        for i in range(routers)],
            "networks": [{"name": f"n{i}", "router": f"r{i}", "cidr": "192.0.2.0/24", "gateway": "192.0.2.1",
                          "hosts": [{"namespace": f"h{i}", "address": "192.0.2.2"}]} for i in range(routers)]}


def test_found_by_hypothesis_stay_fixed():
    """Inputs the properties above found, each once a crash or a broken lab."""
    def refused(mutate, path, words):
        data = _valid()
        mutate(data)
        with pytest.raises(TopologyError) as info:
            topology.parse(data, "lab.yaml")
        assert info.value.path == path and words in info.value.problem, str(info.value)
        outcome(data)

    # A trailing newline passed the name patterns ("$" matches before it), then the
    # firewall refused the name with a UserError that was not a TopologyError.
    refused(lambda d: d.__setitem__("name", "lab\n"), "name", "letters")
    refused(lambda d: d["networks"][0].__setitem__("name", "n0\n"), "networks[0].name", "only letters")
    refused(lambda d: d["routers"][0]["external"].__setitem__("interface", "eth0\n"),
            "routers[0].external.interface", "only letters")
    # Names the kernel keeps or refuses validated, then `up` failed half way.
    for bad in ("lo", "all", "default"):
        refused(lambda d, bad=bad: d["networks"][0]["hosts"][0].__setitem__("interface", bad),
                "networks[0].hosts[0].interface", "reserved")
        refused(lambda d, bad=bad: d["networks"][0].__setitem__("interface", bad), "networks[0].interface",
                "reserved")
    # A host's port in the router clashing with a bridge or the external interface:
    # two links of one name in the desired state, one silently lost.
    refused(lambda d: d["networks"][0].__setitem__("interface", "tap-h0"), "networks[0].hosts[0].namespace",
            "clashes")
    refused(lambda d: d["routers"][0]["external"].__setitem__("interface", "tap-h0"),
            "networks[0].hosts[0].namespace", "clashes")

    def second_network_bridge_named_like_a_port(d):
        d["networks"].append({"name": "m", "router": "r0", "cidr": "192.0.2.128/25", "gateway": "192.0.2.129",
                              "interface": "tap-h0"})
        d["networks"][0]["cidr"] = "192.0.2.0/25"
    refused(second_network_bridge_named_like_a_port, "networks[2].interface", "already used")
    # Non-ASCII digits were taken as port numbers.
    refused(lambda d: d.__setitem__("port_forwards", [{"router": "r0", "protocol": "tcp", "port": "٨٠",
                                                        "to": "192.0.2.2"}]), "port_forwards[0].port", "not a port")
    # Deeply nested YAML raised RecursionError, not a one-line error.
    with pytest.raises(TopologyError, match="nested too deeply"):
        topology.loads("a: " + "[" * 20000 + "]" * 20000, "lab.yaml")
    # PyYAML's constructors raise ValueError/KeyError for values it resolves but can't build.
    for text in ("name: !!int interface", "name: 2001-99-99", "name: !!bool maybe", "name: !!float x"):
        with pytest.raises(TopologyError, match="not valid YAML: a value cannot be read"):
            topology.loads(text, "lab.yaml")
    # A key that is empty (or not a plain name) gave an error without a field path.
    for key in ("", "a b", "a\nb", "x.y"):
        with pytest.raises(TopologyError) as info:
            topology.parse({**_valid(), key: 1}, "lab.yaml")
        assert info.value.path == f"[{key!r}]" and info.value.problem == "unknown field"
    # A key called like a pydantic union member was dropped from the path.
    with pytest.raises(TopologyError) as info:
        topology.parse({**_valid(), "str": 1}, "lab.yaml")
    assert str(info.value) == "lab.yaml: str: unknown field"


def test_a_file_that_is_not_utf8_is_refused_in_one_line(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_bytes(b"name: lab\xff\xfe\n")
    with pytest.raises(TopologyError) as info:
        topology.load(str(path))
    assert str(info.value) == f"{path}: not UTF-8 text (byte 9 is 0xff)"


def test_deeply_nested_input_is_refused_in_one_line():
    deep: list = []
    cur = deep
    for _ in range(50_000):
        cur.append([])
        cur = cur[0]
    for data in ({"name": "x", "routers": deep}, {"name": "x", "colour": deep}, deep):
        with pytest.raises(TopologyError) as info:
            topology.parse(data, "lab.yaml")
        assert "\n" not in str(info.value)
    with pytest.raises(TopologyError):
        topology.loads("{a: " * 3000 + "}" * 3000, "lab.yaml")


def test_a_huge_topology_validates_and_plans_in_seconds():
    t0 = time.monotonic()
    data = {"name": "huge", "internet": {"address": "198.51.100.1/24"},
            "routers": [{"name": f"r{i}", "external": {"address": f"198.51.100.{2 + i}/24"}} for i in range(200)],
            "networks": [{"name": f"n{i}", "router": f"r{i}", "cidr": "192.0.2.0/24", "gateway": "192.0.2.1",
                          "hosts": [{"namespace": f"h{i}-{k}", "address": f"192.0.2.{2 + k}"} for k in range(20)]}
                         for i in range(200)],
            "port_forwards": [{"router": f"r{i % 200}", "protocol": "tcp", "port": 1000 + i, "to": "192.0.2.2:80"}
                              for i in range(2000)]}
    t = outcome(data)
    assert t is not None and len(t.namespaces()) == 1 + 200 + 4000
    assert time.monotonic() - t0 < 60
    bad = copy.deepcopy(data)
    bad["networks"][199]["hosts"][19]["address"] = "192.0.3.1"
    with pytest.raises(TopologyError, match=r"networks\[199\]\.hosts\[19\]\.address"):
        topology.parse(bad, "lab.yaml")


@pytest.mark.parametrize("value", [datetime.date(2024, 1, 1), b"\x00", {1, 2}, 1.5, 10**30, -1, True, None])
def test_yaml_types_a_user_can_write_are_refused_in_one_line(value):
    for path in (["name"], ["routers", 0, "external", "address"], ["networks", 0, "hosts", 0, "address"],
                 ["networks", 0, "cidr"], ["routers", 0, "snat"], ["internet", "hosts"]):
        data = _valid()
        obj = data
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value
        outcome(data)


# --------------------------------------------------------------------------- no shell


def _py_files():
    return sorted(SOURCE.rglob("*.py"))


def test_no_natns_source_hands_anything_to_a_shell():
    offenders = []
    for path in _py_files():
        text = path.read_text()
        for pattern in (r"shell\s*=\s*True", r"\bos\.system\s*\(", r"\bos\.popen\s*\(", r"\bos\.exec[lv]p?e?\s*\(\s*['\"]/bin/sh",
                        r"\bsubprocess\.getoutput\b", r"\bsubprocess\.getstatusoutput\b", r"\bpty\.spawn\b"):
            for m in re.finditer(pattern, text):
                offenders.append(f"{path.relative_to(SOURCE.parent)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}")
    assert offenders == []


def test_every_subprocess_call_gets_an_argument_list():
    """Calls of subprocess.run/Popen/call/check_*: the command is never a string literal,
    an f-string or a concatenation of strings (which only a shell would split)."""
    calls = 0
    bad = []
    for path in _py_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            if node.func.attr not in ("run", "Popen", "call", "check_call", "check_output"):
                continue
            owner = node.func.value
            if not (isinstance(owner, ast.Name) and owner.id == "subprocess"):
                continue
            calls += 1
            cmd = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "args"), None)
            if isinstance(cmd, (ast.Constant, ast.JoinedStr, ast.BinOp)) and not isinstance(cmd, ast.List):
                bad.append(f"{path.name}:{node.lineno}")
            if any(k.arg == "shell" for k in node.keywords):
                bad.append(f"{path.name}:{node.lineno} shell=")
    assert calls > 0 and bad == []

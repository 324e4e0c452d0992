"""A picture of a topology: a tree for the terminal, or a diagram (DOT, SVG, Mermaid).

Drawn from the topology file alone (pure, no kernel access, no root): the
internet namespace, routers (external interface and address, gateway, SNAT
mode), the networks behind them (bridge, CIDR, gateway) and their hosts,
with the interface names natns gives each end of each link. `graph(t)` is
the one model every rendering is made from; `to_svg` runs graphviz's `dot`
(an argument list, the DOT text on stdin; no shell).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field

from rich.text import Text
from rich.tree import Tree

from ..errors import KernelError, UserError
from .names import host_port_name, router_port_name, uplink_name
from .schema import Router, Topology

FORMATS = ("tree", "dot", "svg", "mermaid")
_FILL = {"internet": "#dbeafe", "router": "#fde68a", "network": "#e5e7eb", "host": "#d1fae5",
         "uplink": "#fecaca"}
_STYLE = {"internet": "bold blue", "router": "bold yellow", "network": "bold", "host": "bold green",
          "uplink": "bold red"}


@dataclass
class Node:
    """One box of the picture: a namespace, or a network (a bridge in a router)."""

    id: str
    kind: str  # internet | router | network | host | uplink
    name: str
    namespace: str | None
    details: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"id": self.id, "kind": self.kind, "name": self.name, "namespace": self.namespace,
                "details": self.details}


@dataclass
class Edge:
    """A link between two nodes, labelled with the interface at each end."""

    a: str
    b: str
    label: str

    def to_json(self) -> dict:
        return {"from": self.a, "to": self.b, "label": self.label}


@dataclass
class Graph:
    """The topology as nodes and edges, with the checks written in it."""

    lab: str
    backend: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)

    def node(self, id: str) -> Node:
        return next(n for n in self.nodes if n.id == id)

    def children(self, id: str) -> list[Node]:
        return [self.node(e.b) for e in self.edges if e.a == id]

    def edge(self, a: str, b: str) -> Edge:
        return next(e for e in self.edges if e.a == a and e.b == b)

    def to_json(self) -> dict:
        return {"lab": self.lab, "backend": self.backend, "nodes": [n.to_json() for n in self.nodes],
                "edges": [e.to_json() for e in self.edges], "checks": self.checks}


def snat_mode(r: Router) -> str:
    """``masquerade``, ``to 198.51.100.20`` or ``off``."""
    return r.snat if isinstance(r.snat, str) else f"to {r.snat}"


def _ports(lo_hi: tuple[int, int]) -> str:
    """``80``, or ``5000-5001`` for a range."""
    lo, hi = lo_hi
    return str(lo) if lo == hi else f"{lo}-{hi}"


def graph(t: Topology) -> Graph:
    """The nodes and edges every rendering is drawn from."""
    g = Graph(t.name, t.backend, checks=[c.describe() for c in t.checks])
    inet_id = None
    if t.internet:
        i = t.internet
        inet_id = "internet"
        details = [f"{i.interface} {i.address}"]
        if i.address6:
            details.append(f"{i.interface} {i.address6}")
        if i.hosts:
            details.append("hosts " + ", ".join(str(h) for h in i.hosts))
        g.nodes.append(Node(inet_id, "internet", i.namespace, i.namespace, details))
    for k, r in enumerate(t.routers):
        rid = f"router{k}"
        ext = r.external
        gw = ext.gateway or (t.internet.address.ip if t.internet else None)
        details = []
        if r.namespace and r.namespace != r.name:
            details.append(f"namespace {r.namespace}")
        details += [f"{ext.interface} {ext.address}", f"default via {gw}", f"SNAT {snat_mode(r)}",
                    "ip_forward=1"]
        if ext.address6:
            gw6 = ext.gateway6 or (t.internet.address6.ip if t.internet and t.internet.address6 else None)
            details += [f"{ext.interface} {ext.address6}", f"default via {gw6}",
                        "IPv6 " + ("NAT66 masquerade" if r.snat6 == "masquerade" else "routed")]
        for g_ in r.ingress:
            details.append(f"ingress {g_.protocol}/{_ports(g_.port)} -> {g_.to}")
        for f in getattr(t, "floating_ips", []):
            if f.router == r.name:
                details.append(f"floating IP {f.address} -> {f.host}")
        for pf in getattr(t, "port_forwards", []):
            if pf.router == r.name:
                details.append(f"forward {pf.protocol}/{_ports(pf.port)} -> {pf.to[0]}:{_ports(pf.to_ports)}")
        g.nodes.append(Node(rid, "router", r.name, r.ns, details))
        if ext.uplink == "internet" and inet_id:
            g.edges.append(Edge(inet_id, rid, f"{router_port_name(r.name)} / {ext.interface}"))
        else:
            uid = f"uplink{k}"
            g.nodes.append(Node(uid, "uplink", "uplink: host", None,
                                [f"{uplink_name(t.name, r.name)} in natns's own namespace"]))
            g.edges.append(Edge(uid, rid, f"{uplink_name(t.name, r.name)} / {ext.interface}"))
        for j, n in enumerate(t.networks):
            if n.router != r.name:
                continue
            nid = f"network{j}"
            g.nodes.append(Node(nid, "network", n.name, None,
                                [str(c) for c in (n.cidr, n.cidr6) if c is not None]
                                + [f"{n.router_interface} {gw_}" for gw_ in (n.gateway, n.gateway6) if gw_]))
            g.edges.append(Edge(rid, nid, ""))  # the bridge is in the network's box
            for h in n.hosts:
                hid = f"host:{h.namespace}"
                lines = []
                if h.address is not None:
                    lines += [f"{h.interface} {h.address}/{n.cidr.prefixlen}", f"default via {n.gateway}"]
                if h.address6 is not None:
                    lines += [f"{h.interface} {h.address6}/{n.cidr6.prefixlen}", f"default via {n.gateway6}"]
                g.nodes.append(Node(hid, "host", h.namespace, h.namespace, lines))
                g.edges.append(Edge(nid, hid, f"{host_port_name(h.namespace)} / {h.interface}"))
    return g


def _title(n: Node) -> str:
    what = {"uplink": ""}.get(n.kind, n.kind + " ")
    return f"{what}{n.name}".strip()


# --------------------------------------------------------------------------- renderings


def tree(t: Topology) -> Tree:
    """A rich Tree for the terminal: internet, routers, networks, hosts, then the checks."""
    g = graph(t)
    root = Tree(Text.assemble((f"lab {g.lab}", "bold"), f"  (firewall backend {g.backend})"))

    def label(n: Node, via: str | None) -> Text:
        txt = Text.assemble((_title(n), _STYLE[n.kind]))
        if n.details:
            txt.append("  " + "; ".join(n.details))
        if via:
            txt.append(f"  [{via}]", style="dim")
        return txt

    def add(parent: Tree, n: Node, via: str | None) -> None:
        branch = parent.add(label(n, via))
        for c in g.children(n.id):
            add(branch, c, g.edge(n.id, c.id).label)

    tops = [n for n in g.nodes if not any(e.b == n.id for e in g.edges)]
    for n in tops:
        add(root, n, None)
    if g.checks:
        checks = root.add(Text("checks", style="bold magenta"))
        for i, c in enumerate(g.checks):
            checks.add(f"checks[{i}] {c}")
    return root


def _dot_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(t: Topology) -> str:
    """The topology as a Graphviz DOT graph (undirected)."""
    g = graph(t)
    lines = [
        f"graph {_dot_str('natns-' + g.lab)} {{",
        (f"  graph [label={_dot_str(f'natns lab {g.lab} (firewall backend {g.backend})')}, labelloc=t, "
         'fontname="Helvetica", fontsize=12, rankdir=TB, nodesep=0.4];'),
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    for n in g.nodes:
        shape = ", shape=ellipse" if n.kind == "network" else ""
        label = "\n".join([_title(n)] + n.details)
        lines.append(f"  {_dot_str(n.id)} [label={_dot_str(label)}, fillcolor={_dot_str(_FILL[n.kind])}{shape}];")
    for e in g.edges:
        lines.append(f"  {_dot_str(e.a)} -- {_dot_str(e.b)} [label={_dot_str(e.label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mm(s: str) -> str:
    return s.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def to_mermaid(t: Topology) -> str:
    """The topology as a Mermaid flowchart (renders on GitHub and in many docs tools)."""
    g = graph(t)
    ids = {n.id: f"n{i}" for i, n in enumerate(g.nodes)}
    lines = ["flowchart TB", f"  %% natns lab {g.lab} (firewall backend {g.backend})"]
    for n in g.nodes:
        label = "<br/>".join(_mm(x) for x in [_title(n)] + n.details)
        open_, close = ("([", "])") if n.kind == "network" else ("[", "]")
        lines.append(f'  {ids[n.id]}{open_}"{label}"{close}')
    for e in g.edges:
        label = f'|"{_mm(e.label)}"| ' if e.label else " "
        lines.append(f"  {ids[e.a]} ---{label}{ids[e.b]}")
    for n in g.nodes:
        lines.append(f"  style {ids[n.id]} fill:{_FILL[n.kind]},stroke:#333")
    return "\n".join(lines) + "\n"


def to_svg(t: Topology) -> bytes:
    """The topology as SVG, drawn by graphviz's `dot` (UserError if it is not installed)."""
    dot = shutil.which("dot")
    if dot is None:
        raise UserError("drawing SVG needs graphviz's `dot` program; install graphviz, "
                        "or use --format dot or mermaid")
    proc = subprocess.run([dot, "-Tsvg"], check=False, input=to_dot(t).encode(), capture_output=True, timeout=60)
    if proc.returncode != 0:
        raise KernelError(f"dot -Tsvg failed (exit {proc.returncode}): "
                          + proc.stderr.decode(errors="replace").strip()[:300])
    return proc.stdout


def render(t: Topology, fmt: str) -> bytes:
    """The diagram in `fmt` (dot, svg or mermaid) as bytes to write to a file."""
    if fmt == "dot":
        return to_dot(t).encode()
    if fmt == "mermaid":
        return to_mermaid(t).encode()
    if fmt == "svg":
        return to_svg(t)
    raise UserError(f"unknown format {fmt!r} (choose one of {', '.join(f for f in FORMATS if f != 'tree')})")

"""`natns demo`: the seed's walk-through replayed for real, failures included.

The seed (../shared/seed, English summary in docs) builds NAT by hand and
fails three times before it works. The demo rebuilds its lab in throwaway
namespaces with an emulated internet, in documentation addresses:

    tenant1 (192.0.2.2) -- vm (192.0.2.3 | eth0 198.51.100.116) -- inet (198.51.100.1, 203.0.113.114)

and walks the same four steps. Each step is one change planned by natns's own
planner (the desired state grows by one piece), shown as the seed's command
and natns's equivalent, then proven with a real ping and a capture at the
seed's three points showing how far the packet got. At the end: the three
captures side by side, the SNAT rule's counter, the conntrack entry, and a
check that the hand-built lab is exactly what `natns up` builds.
"""

from __future__ import annotations

import copy
import secrets
import signal
from dataclasses import dataclass

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from . import firewall, topology
from .apply import apply
from .desired import desired_state
from .verify.capture import Capture
from .verify.probe import ping
from .kernel import nsexec
from .lab import down_lab, require_root
from .observe import observe_lab
from .plan import plan_up
from .steps import LoadFirewall
from .state import LabState

TARGET = "203.0.113.114"


def demo_topology(prefix: str, backend: str) -> topology.Topology:
    """The seed's lab with namespace names unique to this run."""
    return topology.parse({
        "name": prefix,
        "backend": backend,
        "internet": {"namespace": f"{prefix}-inet", "address": "198.51.100.1/24", "hosts": [TARGET]},
        "routers": [{
            "name": f"{prefix}-vm",
            "external": {"interface": "eth0", "address": "198.51.100.116/24", "gateway": "198.51.100.1"},
            "snat": "masquerade",
        }],
        "networks": [{
            "name": "tenant", "router": f"{prefix}-vm", "cidr": "192.0.2.0/24", "gateway": "192.0.2.3",
            "hosts": [{"namespace": f"{prefix}-tenant1", "address": "192.0.2.2"}],
        }],
    }, "demo")


@dataclass
class DemoStep:
    title: str
    seed_cmd: str
    explain: str


STEPS = [
    DemoStep(
        "Step 1 - no default route in the tenant",
        "ip netns exec lihui_namespace ping 114.114.114.114",
        "tenant1 knows only its connected network 192.0.2.0/24. There is no route to "
        f"{TARGET}, so the kernel refuses to send: no packet leaves, ping fails at once.",
    ),
    DemoStep(
        "Step 2 - default route via the router",
        "ip netns exec lihui_namespace route add default gw 1.1.1.3",
        "The request now leaves tenant1 and reaches the router on qr-tenant, and goes no "
        "further. The seed blamed the private source address here; that is the next problem, "
        "but the capture shows the first one: the router does not forward (ip_forward=0).",
    ),
    DemoStep(
        "Step 3 - SNAT rule in the router",
        "iptables -t nat -A POSTROUTING -s 1.1.1.0/24 -j SNAT --to-source 192.168.38.116",
        "Without SNAT the internet would see 192.0.2.2 and have no route back to it. The rule is "
        "in place now, but nothing changes: while forwarding is off the packet never reaches "
        "postrouting, and the rule's counter stays at 0.",
    ),
    DemoStep(
        "Step 4 - ip_forward=1 in the router",
        "echo 1 > /proc/sys/net/ipv4/ip_forward",
        "The router forwards. In postrouting, leaving eth0, the source 192.0.2.2 becomes "
        "198.51.100.116; inet replies to that address; conntrack remembers the mapping and "
        "rewrites the reply's destination back to 192.0.2.2.",
    ),
]


class Demo:
    """One run of the demo; `run()` cleans up unless `keep` and it succeeded."""

    def __init__(self, backend: str = "nftables", keep: bool = False, console: Console | None = None):
        self.prefix = f"demo{secrets.token_hex(2)}"
        self.backend = backend
        self.keep = keep
        self.con = console or Console(highlight=False)
        self.topo = demo_topology(self.prefix, backend)
        self.full = desired_state(self.topo)
        self.tenant = f"{self.prefix}-tenant1"
        self.vm = f"{self.prefix}-vm"
        self.inet = f"{self.prefix}-inet"
        self.points = [(self.tenant, "eth0"), (self.vm, "qr-tenant"), (self.vm, "eth0")]
        self.firewall = firewall.get_backend(backend)

    # -- building blocks ---------------------------------------------------------------

    def _stage(self, n: int) -> LabState:
        """The desired state after step n (0: wiring only, 4: the full seed lab)."""
        st = copy.deepcopy(self.full)
        tenant, vm = st.namespaces[self.tenant], st.namespaces[self.vm]
        if n < 2:
            tenant.routes = ()
        if n < 3:
            vm.firewall = None
        if n < 4:
            vm.sysctls = {"net.ipv4.ip_forward": "0"}
        return st

    def _converge(self, n: int):
        desired = self._stage(n)
        actual = observe_lab(self.prefix, self.backend, list(desired.namespaces))
        plan = plan_up(desired, actual, self.firewall)
        apply(plan)
        return plan

    def _probe(self, count: int = 1):
        with Capture(self.points, bpf="icmp") as cap:
            result = ping(self.tenant, TARGET, count=count, timeout=1)
        return result, cap

    def _reach(self, cap: Capture) -> Text:
        t = Text()
        for ns, iface in self.points:
            pkts = cap.packets[f"{ns}:{iface}"]
            req = any("echo request" in p.info for p in pkts)
            rep = any("echo reply" in p.info for p in pkts)
            label = f"{self._short(ns)}:{iface}"
            mark = ("request " + ("[green]seen[/]" if req else "[red]not seen[/]")
                    + ", reply " + ("[green]seen[/]" if rep else "[red]not seen[/]"))
            t.append_text(Text.from_markup(f"  {label:<20} {mark}\n"))
        return t

    def _short(self, ns: str) -> str:
        return ns.removeprefix(self.prefix + "-")

    # -- the walk-through --------------------------------------------------------------

    def run(self) -> int:
        """Walk the steps; remove the lab afterwards unless `keep` and every step behaved.

        On any error (an exception, Ctrl-C, a step that did not behave as in the
        seed) what the demo built is removed, `keep` or not: a half-built lab is
        no lab to explore.
        """
        require_root("demo")
        old = signal.signal(signal.SIGTERM, _raise_interrupt)
        ok = False
        try:
            ok = self._walk()
        finally:
            signal.signal(signal.SIGTERM, old)
            if self.keep and ok:
                self._print_keep()
            else:
                down_lab(self.prefix)
                why = " (the demo did not complete, so --keep does not keep it)" if self.keep else ""
                self.con.print(f"\n[dim]Removed the demo's namespaces ({self.tenant}, {self.vm}, "
                               f"{self.inet}){why}.[/]")
        return 0 if ok else 1

    def _walk(self) -> bool:
        c = self.con
        c.print(Panel.fit(
            "The seed's NAT lab, rebuilt for real in throwaway namespaces:\n\n"
            f"  {self.tenant} (192.0.2.2) --veth-- {self.vm} (192.0.2.3 | eth0 198.51.100.116)"
            f" --veth-- {self.inet} (198.51.100.1, 'the internet' {TARGET})\n\n"
            f"firewall backend: {self.backend}. Seed addresses map to documentation ones: "
            "1.1.1.0/24 -> 192.0.2.0/24, 192.168.38.116 -> 198.51.100.116, 114.114.114.114 -> 203.0.113.114.",
            title="natns demo", border_style="cyan"))
        plan = self._converge(0)
        c.print(f"\n[bold]Step 0 - the wiring[/]: {len(plan.steps)} netlink changes "
                "(namespaces, veth pairs, bridges, addresses), as the seed did with ip link / ifconfig.")
        gw = ping(self.tenant, "192.0.2.3")
        c.print(f"  tenant1 -> its gateway 192.0.2.3: {gw.summary()}")

        results = []
        for n, step in enumerate(STEPS, 1):
            c.rule(f"[bold]{step.title}")
            if n > 1:
                plan = self._converge(n)
                c.print(f"  seed:  [magenta]{step.seed_cmd}[/]")
                for s in plan.steps:
                    c.print(f"  natns: [cyan]{s.command()}[/]")
                    if isinstance(s, LoadFirewall):
                        # The whole table also holds the router's filter policy and
                        # the (empty) maps for floating IPs; the seed's rule is this one.
                        for line in s.ruleset.text().splitlines():
                            if "natns snat" in line:
                                c.print(f"         [dim]{line.strip()}[/]")
            else:
                c.print(f"  seed:  [magenta]{step.seed_cmd}[/]")
            result, cap = self._probe()
            colour = "green" if result.ok else "red"
            c.print(f"  ping {TARGET}: [{colour}]{result.summary()}[/]")
            c.print(self._reach(cap), end="")
            if n >= 3:
                for ctr in self._snat_counters():
                    c.print(f"  SNAT rule counter: {ctr['packets']} packets, {ctr['bytes']} bytes")
            c.print(Text(step.explain, style="dim"))
            results.append(result)

        expected = [False, False, False, True]
        as_seed = [r.ok for r in results] == expected and results[0].error is not None
        c.rule("[bold]The proof")
        self._final_capture()
        self._conntrack()
        actual = observe_lab(self.prefix, self.backend, list(self.full.namespaces))
        again = plan_up(self.full, actual, self.firewall)
        if again.empty:
            c.print("[green]natns plan finds nothing to do:[/] what was built step by step is exactly "
                    "what `natns up` builds from examples/seed.yaml.")
        else:
            c.print(f"[red]natns plan still finds {len(again.steps)} step(s)[/]")
        if not as_seed:
            c.print("[red]The steps did not fail and succeed as in the seed; see above.[/]")
        return as_seed and again.empty

    def _final_capture(self) -> None:
        result, cap = self._probe(count=3)
        c = self.con
        c.print(f"ping -c 3 {TARGET}: {result.summary()}\n")
        table = Table(title="the same packets at the seed's three points", title_justify="left")
        table.add_column("packet")
        for ns, iface in self.points:
            table.add_column(f"{self._short(ns)}:{iface}")
        rows: dict[tuple, dict[str, str]] = {}
        for p in cap.merged():
            key = _icmp_key(p.info)
            if key:
                rows.setdefault(key, {})[p.point] = (p.src, p.dst)
        for key, seen in rows.items():
            cells = []
            first = None
            for ns, iface in self.points:
                v = seen.get(f"{ns}:{iface}")
                if v is None:
                    cells.append("[red]-[/]")
                    continue
                first = first or v
                src = f"[bold yellow]{v[0]}[/]" if v[0] != first[0] else v[0]
                dst = f"[bold yellow]{v[1]}[/]" if v[1] != first[1] else v[1]
                cells.append(f"{src} > {dst}")
            table.add_row(f"{key[0]} seq {key[1]}", *cells)
        c.print(table)
        c.print("[dim]Highlighted: fields rewritten between points. Only on eth0 is the source "
                "198.51.100.116: SNAT happens in postrouting, as the packet leaves.[/]\n")
        for ctr in self._snat_counters():
            c.print(f"SNAT rule [cyan]{ctr['rule']}[/]: {ctr['packets']} packets, {ctr['bytes']} bytes")
        c.print("[dim]NAT rules see only the first packet of each connection; conntrack "
                "translates the rest.[/]")

    def _snat_counters(self) -> list[dict]:
        """The counter of the seed's rule: natns's source NAT for the tenant network (the
        router's table also holds its filter policy and the floating-IP rules)."""
        return [ctr for ctr in firewall.get_backend(self.backend).counters(self.vm)
                if (ctr.get("comment") or "").startswith("natns snat")]

    def _conntrack(self) -> None:
        proc = nsexec.run(self.vm, ["conntrack", "-L", "-p", "icmp"], check=False)
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        self.con.print("\nconntrack entry in the router (original tuple, then the reply tuple):")
        for ln in lines:
            self.con.print(f"  [cyan]{ln}[/]")
        if not lines:
            self.con.print("  (none)")
        self.con.print("[dim]The reply tuple's dst=198.51.100.116 is what the internet answers to; "
                       "conntrack maps it back to 192.0.2.2.[/]\n")

    def _print_keep(self) -> None:
        self.con.print(Panel.fit(
            "The lab is still up. Look around:\n"
            f"  natns exec {self.tenant} -- ping -c1 {TARGET}\n"
            f"  natns exec {self.vm} -- nft list ruleset     (or iptables -t nat -vnL)\n"
            f"  natns exec {self.vm} -- tcpdump -ni eth0 icmp\n"
            f"  natns status\n"
            "Remove it with:\n"
            f"  natns down --lab {self.prefix}",
            title="--keep", border_style="cyan"))


def _icmp_key(info: str):
    import re

    m = re.match(r"ICMP (echo request|echo reply), id \d+, seq (\d+)", info)
    return (m.group(1), int(m.group(2))) if m else None


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) ended the demo; `str()` says what is left of it, as found in
    the kernel after the demo's cleanup ran."""


def _left_after(demo: Demo) -> str:
    from .kernel import netns

    left = [n for n in netns.list_names() if n.startswith(demo.prefix + "-")]
    if not left:
        return "the demo's namespaces are removed"
    if demo.keep:
        return (f"the demo's lab is left as it was (--keep): {', '.join(left)}; "
                f"`natns down --lab {demo.prefix}` removes it")
    return f"the demo's namespaces {', '.join(left)} are left; `natns down --lab {demo.prefix}` removes them"


def run_demo(backend: str = "nftables", keep: bool = False, console: Console | None = None) -> int:
    """Run the demo; return 0 when every step behaved as in the seed. On Ctrl-C (or
    SIGTERM), raises `Interrupted` saying what is left."""
    demo = Demo(backend, keep, console)
    try:
        return demo.run()
    except KeyboardInterrupt:
        raise Interrupted(_left_after(demo)) from None

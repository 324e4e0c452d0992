"""Run a plan's steps against the kernel, in order.

Links, addresses, routes, namespaces and sysctls go through netlink (one
rtnetlink socket per namespace, reused across steps; see kernel/rtnl.py); firewall rules through
the backend, one atomic transaction per namespace. If a step fails, the error
says which step and what is left: a later `up` converges and `down` removes it.
"""

from __future__ import annotations

import os
from typing import Callable

from . import firewall
from .errors import KernelError, UserError
from .kernel import link, netns, nsexec, procs, route, rtnl, sysctl
from .plan import Plan, Step

Progress = Callable[[int, int, Step], None]


class Handles:
    """Netlink handles (`rtnl.Rtnl`) by namespace, opened on first use, closed together."""

    def __init__(self) -> None:
        self._open: dict[str | None, rtnl.Rtnl] = {}

    def __getitem__(self, ns: str | None) -> rtnl.Rtnl:
        if ns not in self._open:
            self._open[ns] = rtnl.open_in(ns)
        return self._open[ns]

    def create_netns(self, ns: str, mark: str | None = None) -> rtnl.Rtnl:
        """Create namespace `ns` (marked with `mark` before it appears) and keep the
        handle made in it on the same thread."""
        self.drop(ns)
        self._open[ns] = netns.create_open(ns, mark=mark)
        return self._open[ns]

    def drop(self, ns: str | None) -> None:
        h = self._open.pop(ns, None)
        if h is not None:
            h.close()

    def close(self) -> None:
        for ns in list(self._open):
            self.drop(ns)

    def __enter__(self) -> "Handles":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_step(step: Step, h: Handles) -> None:
    """Carry out one step."""
    a, ns, t = step.action, step.ns, step.target
    if a == "create_netns":
        link.configure(h.create_netns(t, step.args[0]), "lo", alias=step.args[0], up=True)
    elif a == "delete_netns":
        procs.stop_in_netns(t)  # what runs inside would live on in an orphaned namespace
        h.drop(t)
        netns.remove(t)
    elif a == "set_mark":
        link.configure(h[ns], "lo", alias=step.args[0], up=True)
    elif a == "create_bridge":
        link.create_bridge(h[ns], t)
    elif a == "create_veth":
        peer_ns, peer = step.args
        link.create_veth(h[ns], t, peer_ns, peer)
    elif a == "configure_link":
        opts = dict(step.args)
        link.configure(
            h[ns], t, alias=opts.get("alias"), master=opts.get("master", False),
            mtu=opts.get("mtu"), up=opts.get("up"),
        )
    elif a == "delete_link":
        link.delete(h[ns], t)
    elif a == "add_address":
        link.add_address(h[ns], t, step.args[0])
    elif a == "del_address":
        link.del_address(h[ns], t, step.args[0])
    elif a == "add_route":
        route.add(h[ns], step.args[0])
    elif a == "del_route":
        route.delete(h[ns], step.args[0])
    elif a == "set_sysctl":
        sysctl.write(ns, {t: step.args[0]})
    elif a == "load_firewall":
        backend, ruleset = step.args
        firewall.get_backend(backend).load(ns, ruleset)
    elif a == "update_firewall":
        backend, scope, changes = step.args
        firewall.get_backend(backend).update_elements(ns, scope, changes)
    elif a == "clear_flush_notes":
        run_step(Step(step.args[0], ns, t, step.args[1:], step.reason), h)
    elif a == "flush_conntrack":
        conntrack_forget(ns, *step.args)
    elif a == "forget_conntrack":
        forget_stale(ns, step.args[0])
    elif a == "remove_firewall":
        firewall.get_backend(t).remove(ns, *step.args)
    else:  # pragma: no cover - plan only makes the actions above
        raise KernelError(f"unknown step {a}")


def conntrack_forget(ns: str | None, kind: str, outside: str, *_: str) -> None:
    """Delete the conntrack entries that use a removed mapping, so it stops working at once.

    A floating IP: entries whose original destination (inbound) or reply
    destination (outbound, translated to it) is the floating address. A port
    forward: entries to that address and port.
    """
    if kind == "fip":
        filters = [["--orig-dst", outside], ["--reply-dst", outside]]
    else:
        addr, port = outside.split(":")
        filters = [["-p", kind, "--orig-dst", addr, "--dport", port]]
    for f in filters:
        proc = nsexec.run(ns, ["conntrack", "-D", *f], check=False)
        if proc.returncode not in (0, 1):  # 1: nothing matched
            raise KernelError(f"conntrack -D {' '.join(f)}: {proc.stderr.strip()}")


def forget_stale(ns: str | None, nat) -> int:
    """Delete the conntrack entries of `ns` that router rules `nat` (a ctselect.NatIntent)
    translate otherwise than the entries do, read and deleted over ctnetlink; how many."""
    from .firewall import ctselect
    from .kernel import conntrack

    return conntrack.delete(ns, ctselect.stale(nat, conntrack.entries(ns)))


def apply(plan: Plan, progress: Progress | None = None) -> int:
    """Run every step of `plan`; return how many ran. Stops at the first failure."""
    total = len(plan.steps)
    if any(s.action in ("create_netns", "delete_netns") for s in plan.steps) and not netns.mounts_reach_the_system():
        raise UserError(
            "this process has a mount namespace of its own (as under `ip netns exec`) whose mounts don't reach "
            "the rest of the system: namespaces made here would vanish when it exits. To run natns in another "
            "network namespace, use `nsenter --net=/run/netns/NAME natns ...`; nothing was changed")
    kill = _test_kill_hook()
    with Handles() as h:
        for i, step in enumerate(plan.steps, 1):
            if kill:
                kill.before(i, total, step.action)
            if progress:
                progress(i, total, step)
            try:
                run_step(step, h)
            except KernelError as exc:
                raise KernelError(
                    f"step {i}/{total} failed: {step.command()}: {exc}. "
                    f"{i - 1} steps were applied; `natns up` again converges, `natns down` removes them"
                ) from None
        if kill:
            kill.after_all(total)
    return total


def _test_kill_hook():
    """Test hook, for crash-recovery tests only: NATNS_TEST_KILL_AT_STEP=N[:during]
    makes natns SIGKILL itself before (or during) step N; see natns/testing/hooks.py."""
    if not os.environ.get("NATNS_TEST_KILL_AT_STEP"):
        return None
    from .testing.hooks import from_environment

    return from_environment()

"""Run a plan's steps against the kernel, in order: a loop over `Step.run`.

Links, addresses, routes, namespaces and sysctls go through netlink (one
rtnetlink socket per namespace, reused across steps; see kernel/rtnl.py); firewall rules through
the backend, one atomic transaction per namespace. What each step does is in
steps.py. If a step fails, the error says which step and what is left: a
later `up` converges and `down` removes it.
"""

from __future__ import annotations

import os
from typing import Callable

from .errors import KernelError, UserError
from .kernel import netns, rtnl
from .plan import Plan
from .steps import CreateNetns, DeleteNetns, Step

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
    """Carry out one step (`step.run(h)`)."""
    step.run(h)


def apply(plan: Plan, progress: Progress | None = None) -> int:
    """Run every step of `plan`; return how many ran. Stops at the first failure."""
    total = len(plan.steps)
    if any(isinstance(s, (CreateNetns, DeleteNetns)) for s in plan.steps) and not netns.mounts_reach_the_system():
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
                step.run(h)
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

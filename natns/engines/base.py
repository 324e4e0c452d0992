"""The engine seam: what `natns plan/up/down/status` ask of an engine.

An engine turns a validated topology into running networks. Both engines answer the
same four questions, and the CLI dispatches on the topology's ``engine:``
(`natns.engines.for_topology`; `for_lab` for ``down --lab NAME``, from what the
machine holds):

* ``plan(lab)`` -> `natns.plan.Plan`: the steps `up` would run now. Each step is a
  `natns.steps.Step` (``action``, ``reason``, ``command()`` the command a person would
  type — ``ip``/``nft`` for the kernel engine, ``ovn-nbctl``/``ovs-vsctl`` for OVN —
  and ``run``); empty when nothing differs.
* ``up(lab, progress)`` -> the plan applied (by `natns.apply.apply`: the same loop, the
  same crash-test hook, natns/testing/hooks.py); returns when traffic can flow.
* ``down(name, progress)`` -> the plan of what was removed; needs only the lab's name.
* ``status(lab)`` -> `natns.lab.Status`: per namespace (or other part) ok / missing /
  drift / stale, each problem with its fix.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..apply import Progress
    from ..lab import Lab, Status
    from ..plan import Plan


class Engine(ABC):
    """One way of running a topology (kernel namespaces, or OVN)."""

    name: str = ""

    @abstractmethod
    def plan(self, lab: "Lab", adopt: bool = False) -> "Plan":
        """The steps `up` would run now."""

    @abstractmethod
    def up(self, lab: "Lab", progress: "Progress | None" = None, adopt: bool = False) -> "Plan":
        """Create or converge the lab; the plan that was applied (empty: no change)."""

    @abstractmethod
    def down(self, name: str, progress: "Progress | None" = None) -> "Plan":
        """Remove everything natns made for lab `name`; the steps run."""

    @abstractmethod
    def status(self, lab: "Lab") -> "Status":
        """The lab as found, compared with its topology."""

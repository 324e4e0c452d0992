"""natns's engines: what turns a validated topology into running networks.

Both sit behind one seam (`base.Engine`: plan, up, down, status), chosen by the
topology's ``engine:``. The kernel engine (namespaces, veths, bridges,
nftables/iptables) is natns's original one and lives in natns.desired/plan/apply
(`kernel.KernelEngine` wraps `natns.lab.Lab`); `natns.engines.ovn` is the OVN engine
of issue 12 (its sandbox, its northbound mapping, `ovn.engine.OvnEngine`). Nothing
here imports ovsdbapp until the OVN engine runs.
"""

from __future__ import annotations

from .base import Engine


def for_topology(t) -> Engine:
    """The engine the topology's ``engine:`` names."""
    if t.engine == "ovn":
        from .ovn.engine import OvnEngine

        return OvnEngine()
    from .kernel import KernelEngine

    return KernelEngine()


def for_lab(name: str) -> Engine:
    """The engine that made lab `name`, from what this machine holds (for ``down --lab``):
    OVN when the lab has an OVN run directory or a chassis or central namespace."""
    import os

    from ..observe import marked_namespaces
    from .ovn import sandbox

    if os.path.isdir(sandbox.lab_dir(name)) or any(
            role in ("ovn-central", "chassis") for _, role, _n in marked_namespaces(name).values()):
        from .ovn.engine import OvnEngine

        return OvnEngine()
    from .kernel import KernelEngine

    return KernelEngine()

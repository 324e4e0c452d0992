"""The kernel engine behind the seam (natns.engines.base): natns's namespaces, veths,
bridges and nftables/iptables rules, as `natns.lab.Lab` has always run them."""

from __future__ import annotations

from .base import Engine


class KernelEngine(Engine):
    name = "kernel"

    def plan(self, lab, adopt=False):
        return lab.plan(adopt=adopt)

    def up(self, lab, progress=None, adopt=False):
        return lab.up(progress=progress, adopt=adopt)

    def down(self, name, progress=None):
        from ..lab import down_lab

        return down_lab(name, progress)

    def status(self, lab):
        return lab.status()

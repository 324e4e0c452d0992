"""One topology file, both engines (issue 12): what test_ovn_lifecycle.py runs on OVN —
examples/ovn.yaml plus a port forward, a second tenant with the same CIDR behind a
second router, and the same `checks:` — runs on the kernel engine once the OVN-only
fields (`engine`, `ovn`, `gateway_chassis`, a host's `chassis`) are taken out: `natns
check` holds there too (SNAT source, floating IP both ways, the private network blocked
from outside), and `down` leaves nothing."""

from __future__ import annotations

import pytest

from tests.integration import ovn_labs
from tests.integration.labs import existing, lab_namespaces, natns, write
from tests.integration.test_ovn_lifecycle import _data

pytestmark = pytest.mark.root


def kernel_engine(d: dict) -> dict:
    """`d` without what only the OVN engine reads."""
    d = {k: v for k, v in d.items() if k not in ("engine", "ovn")}
    d["routers"] = [{k: v for k, v in r.items() if k != "gateway_chassis"} for r in d["routers"]]
    d["networks"] = [dict(n, hosts=[{k: v for k, v in h.items() if k != "chassis"} for h in n["hosts"]])
                     for n in d["networks"]]
    return d


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_the_ovn_example_and_its_checks_hold_on_the_kernel_engine(tmp_path, backend):
    d = kernel_engine(_data(ovn_labs.uid()))
    d["backend"] = backend
    path = write(tmp_path, d)
    try:
        r = natns("up", path)
        assert r.returncode == 0, r.stdout + r.stderr
        r = natns("check", "--timeout", "3", path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert len(d["checks"]) == 4
    finally:
        natns("down", path)
    assert existing(lab_namespaces(d)) == []

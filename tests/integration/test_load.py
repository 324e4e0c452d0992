"""Under load: streams through a router survive `up` changing the lab around them (quick version).

50 TCP connections from a tenant to a server in the internet namespace
stream random bytes (sha256 checked at the far end) while `natns up` adds
and removes floating IPs (one of them the streaming tenant's own), a port
forward, and a whole network with a host. No stream may be reset, stall
out or lose a byte. tests/soak/test_load_soak.py runs 200 streams longer.
"""

from __future__ import annotations

import copy

import pytest

from .labs import SEED_INET, write
from .loadgen import Streams
from .reliability_tools import run_natns

pytestmark = pytest.mark.root
BACKENDS = ["nftables", "iptables"]


def load_lab(uid: str, backend: str) -> dict:
    vm = f"t{uid}-vm"
    return {
        "name": f"ld{uid}", "backend": backend,
        "internet": {"namespace": f"t{uid}-inet", "address": "198.51.100.1/24", "hosts": [SEED_INET]},
        "routers": [{"name": vm, "external": {"address": "198.51.100.116/24"}}],
        "networks": [{"name": "tenant", "router": vm, "cidr": "192.0.2.0/25", "gateway": "192.0.2.1",
                      "hosts": [{"namespace": f"t{uid}-h1", "address": "192.0.2.10"},
                                {"namespace": f"t{uid}-h2", "address": "192.0.2.11"}]}],
        "floating_ips": [],
        "port_forwards": [],
    }


def variants(data: dict) -> list[dict]:
    """The lab as `up` changes it during the test: mappings and a network come and go."""
    vm = data["routers"][0]["name"]
    uid = vm[1:-3]
    plus_fip = copy.deepcopy(data)
    plus_fip["floating_ips"] = [{"router": vm, "address": "198.51.100.50", "host": "192.0.2.10"},
                                {"router": vm, "address": "198.51.100.51", "host": "192.0.2.11"}]
    plus_net = copy.deepcopy(plus_fip)
    plus_net["networks"].append({"name": "extra", "router": vm, "cidr": "192.0.2.128/25", "gateway": "192.0.2.129",
                                 "hosts": [{"namespace": f"t{uid}-x1", "address": "192.0.2.130"}]})
    plus_net["port_forwards"] = [{"router": vm, "protocol": "tcp", "port": 8080, "to": "192.0.2.130:80"}]
    minus_fip = copy.deepcopy(plus_net)
    minus_fip["floating_ips"] = minus_fip["floating_ips"][1:]  # the streaming host's goes
    return [plus_fip, plus_net, minus_fip, copy.deepcopy(data)]


def churn_under_load(uid: str, backend: str, tmp_path, *, streams: int, size: int, cycles: int) -> tuple:
    data = load_lab(uid, backend)
    path = write(tmp_path, data)
    res = run_natns("up", path)
    assert res.returncode == 0, res.stderr
    load = Streams(f"t{uid}-h1", f"t{uid}-inet", SEED_INET, 9000, streams, size, spread=30)
    applied = []
    try:
        load.start()
        assert load.established(), [s.error for s in load.streams if s.error]
        for _ in range(cycles):
            for k, variant in enumerate(variants(data)):
                vpath = write(tmp_path, variant, f"v{k}.yaml")
                res = run_natns("up", vpath)
                assert res.returncode == 0, res.stderr
                assert "change(s) applied" in res.stdout, res.stdout
                applied.append(res.stdout.strip())
        running = sum(1 for s in load.streams if not s.done and not s.error)
        result = load.finish()
    finally:
        load.close()
        run_natns("down", "--lab", data["name"])
    return result, applied, running


@pytest.mark.parametrize("backend", BACKENDS)
def test_streams_survive_up_adding_and_removing_mappings_and_networks(uid, backend, tmp_path):
    result, applied, running = churn_under_load(uid, backend, tmp_path, streams=50, size=512 * 1024, cycles=1)
    assert running == 50  # every stream was still open while the last change was applied
    assert result.errors == [], result.errors[:10]
    assert result.ok == 50 and result.bytes_verified == 50 * 512 * 1024
    assert len(applied) == 4

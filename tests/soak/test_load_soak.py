"""Under load, long: 200 checksummed TCP streams through a router while `up` changes the lab 20 times.

The streams and the changes are those of tests/integration/test_load.py
(floating IPs, one of them the streaming tenant's own, a port forward, a
network with a host, added and removed), five rounds of four `up`s, both
backends. No stream may be reset, stall out or lose a byte.
"""

from __future__ import annotations

import pytest

from tests.integration.test_load import churn_under_load

pytestmark = pytest.mark.root
BACKENDS = ["nftables", "iptables"]
STREAMS, SIZE, CYCLES = 200, 2 * 1024 * 1024, 5


@pytest.mark.parametrize("backend", BACKENDS)
def test_200_streams_survive_20_ups_changing_mappings_and_networks(uid, backend, tmp_path, figures):
    result, applied, running = churn_under_load(uid, backend, tmp_path, streams=STREAMS, size=SIZE, cycles=CYCLES)
    assert running == STREAMS
    assert result.errors == [], result.errors[:10]
    assert result.ok == STREAMS and result.bytes_verified == STREAMS * SIZE
    assert len(applied) == 4 * CYCLES
    figures(f"{backend}: {STREAMS} streams x {SIZE // 1024} KiB = {result.bytes_verified / 2**20:.0f} MiB, "
            f"sha256-verified; {len(applied)} ups applied while all {running} streams were open "
            f"(floating IPs, a port forward, a network added and removed); streams open "
            f"{result.seconds:.1f} s; 0 resets, 0 bytes lost")

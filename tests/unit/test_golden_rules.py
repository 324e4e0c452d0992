"""The rendered rules of every example, on both backends, against golden text (no root).

For each file in examples/ and each backend, every namespace with a firewall
(each router; the host for ``uplink: host``) is rendered and the text natns
would load (``nft -f`` script, or the iptables-restore lines of natns's
chains) is compared with tests/unit/golden/<example>.<backend>.txt, the way
CNI plugins diff knftables' fake dump against golden text. A change of the
rendered rules then shows up as a diff of that file in review.

To accept a deliberate change, regenerate the files and read the diff:

    NATNS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/unit/test_golden_rules.py
    git diff tests/unit/golden/

Also here: both backends implement the contract (natns.firewall.base.FirewallBackend)
exactly, with the Protocol's methods and parameter names, and nothing else public.
"""

from __future__ import annotations

import inspect
import os
import pathlib

import pytest
import yaml

from natns import firewall, topology
from natns.desired import desired_state
from natns.firewall.base import CONTRACT, FirewallBackend

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.yaml") if "engine: ovn" not in p.read_text())  # kernel engine
GOLDEN = pathlib.Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("NATNS_UPDATE_GOLDEN") == "1"


def rendered(example: pathlib.Path, backend: str) -> str:
    """Every firewall of `example` with `backend`, as the text natns would load, namespace by namespace."""
    data = yaml.safe_load(example.read_text())
    data["backend"] = backend
    desired = desired_state(topology.parse(data, example.name))
    be = firewall.get_backend(backend)
    parts = []
    spaces = [(name, ns) for name, ns in desired.namespaces.items()]
    if desired.host is not None:
        spaces.append(("(host)", desired.host))
    for name, ns in spaces:
        if ns.firewall is None:
            continue
        rs = be.render(ns.firewall)
        assert rs.backend == backend
        parts.append(f"# {name} ({ns.firewall.role}, scope {ns.firewall.scope})\n{rs.text()}")
    assert parts, f"{example.name} has no firewall"
    return "\n".join(parts)


@pytest.mark.parametrize("backend", firewall.BACKENDS)
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_rendered_rules_match_the_golden_text(example, backend):
    text = rendered(example, backend)
    path = GOLDEN / f"{example.stem}.{backend}.txt"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path.name}: run with NATNS_UPDATE_GOLDEN=1 to write it"
    assert text == path.read_text(), (
        f"the rendered rules of {example.name} ({backend}) changed; if that is meant, "
        f"regenerate with NATNS_UPDATE_GOLDEN=1 and review `git diff {path.relative_to(ROOT)}`")


def test_every_example_has_golden_files_and_no_golden_file_is_left_over():
    want = {f"{e.stem}.{b}.txt" for e in EXAMPLES for b in firewall.BACKENDS}
    assert {p.name for p in GOLDEN.glob("*.txt")} == want


def test_golden_text_is_not_trivial():
    """The golden files hold real rules: each backend's SNAT of the seed, and the seed's
    router isolation policy."""
    nft = (GOLDEN / "seed.nftables.txt").read_text()
    assert 'oifname "eth0" ip saddr 192.0.2.0/24 counter masquerade comment "natns snat tenant"' in nft
    assert "type filter hook forward priority filter; policy drop;" in nft
    ipt = (GOLDEN / "seed.iptables.txt").read_text()
    assert '-A natns-POSTROUTING -s 192.0.2.0/24 -o eth0 -m comment --comment "natns snat tenant" -j MASQUERADE' in ipt
    assert "-A FORWARD -m comment --comment natns -j natns-FORWARD" in ipt


def _public(obj) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n))}


@pytest.mark.parametrize("backend", firewall.BACKENDS)
def test_each_backend_implements_the_contract_exactly(backend):
    be = firewall.get_backend(backend)
    assert isinstance(be, FirewallBackend)
    assert be.name == backend
    assert _public(be) == set(CONTRACT), "a backend's public methods are the contract's, no more, no fewer"
    assert _public(FirewallBackend) >= set(CONTRACT)
    for method in CONTRACT:
        want = list(inspect.signature(getattr(FirewallBackend, method)).parameters)[1:]
        have = list(inspect.signature(getattr(be, method)).parameters)
        assert have == want, f"{backend}.{method}{tuple(have)} differs from the contract's {tuple(want)}"

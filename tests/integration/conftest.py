"""Fixtures for integration tests that build labs with natns itself."""

from __future__ import annotations

import pytest

from natns import Lab, down_lab, topology

from .labs import existing, lab_namespaces


@pytest.fixture
def make_lab():
    """Factory: a Lab from a topology dict; every lab made is taken down afterwards,
    pass or fail, and its namespaces must be gone."""
    made = []

    def make(data: dict) -> Lab:
        lab = Lab(topology.parse(data, "test.yaml"))
        made.append((lab, lab_namespaces(data)))
        return lab

    yield make
    for lab, names in made:
        down_lab(lab.name)
        assert existing(names) == [], f"namespaces left behind: {existing(names)}"


@pytest.fixture
def make_up_lab(make_lab):
    """Factory: as `make_lab`, and the lab is brought up (taken down afterwards all the same)."""

    def make(data: dict) -> Lab:
        lab = make_lab(data)
        lab.up()
        return lab

    return make

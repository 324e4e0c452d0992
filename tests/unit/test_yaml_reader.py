"""The topology's YAML reader builds what PyYAML's SafeLoader builds, and fails as it does.

natns.topology.loader makes plain documents (strings, scalars, mappings,
sequences, aliases) itself, ~2x faster than PyYAML's constructor on a file of
5,000 floating IPs, and hands everything else (and every error) to PyYAML's
own constructor with the duplicate-key check. These tests compare the two
readers on documents of every kind the fast one must get exactly right or
leave alone.
"""

from __future__ import annotations

import pytest
import yaml

from natns.topology import loader
from natns.topology.loader import _Loader, read_yaml


class _PyYAML(_Loader):
    """The reader as it was: PyYAML's constructor for every document (duplicate keys refused)."""


_PyYAML.construct_document = yaml.constructor.BaseConstructor.construct_document

SAME = {
    "plain": "name: lab\nrouters:\n- name: r1\n  external: {address: 198.51.100.2/24}\n",
    "scalars": "a: 1\nb: 0x1f\nc: 1_000\nd: 1:30\ne: 1.5\nf: .inf\ng: yes\nh: no\ni: ~\nj: null\nk: 2026-12-03\n"
               "l: 2026-12-03T10:00:00Z\nm: '1'\nn: \"yes\"\no: !!str 5\np: !!int '7'\nq: !!binary aGk=\nr: -0o17\n"
               "s: 0b101\nt: +12\nu: ''\nv: .NaN\n",
    "keys": "1: int key\nfalse: bool key\n~: null key\n1.5: float\n'1': str key\n",
    "aliases": "base: &b {address: 192.0.2.1, list: &l [1, 2]}\nuse: *b\nagain: *l\nnested: [*b, *l]\n",
    "anchored scalar": "a: &x 192.0.2.9\nb: *x\n",
    "empty": "",
    "only a scalar": "just text\n",
    "sequence root": "- 1\n- [2, 3]\n- {a: b}\n",
    "merge key": "base: &b {a: 1, b: 2}\nuse:\n  <<: *b\n  b: 3\n",
    "set": "s: !!set {a, b}\n",
    "omap": "o: !!omap [a: 1, b: 2]\n",
    "pairs": "p: !!pairs [a: 1, a: 2]\n",
    "deep": "a: " + "[" * 50 + "]" * 50 + "\n",
}

FAIL = {
    "duplicate key": "name: a\nname: b\n",
    "duplicate nested": "routers:\n- name: r\n  external: {address: x, address: y}\n",
    "two duplicates": "a: {x: 1, x: 2}\nb: 1\nb: 2\n",
    "bad int": "a: !!int nope\n",
    "bad int then duplicate": "a: !!int nope\na: 1\n",
    "unhashable key": "? [1, 2]\n: v\n",
    "unknown tag": "a: !python/object:os.system x\n",
    "bad bool": "a: !!bool maybe\n",
    "value key": "=: equals\n",
    "1 and true": "1: a\ntrue: b\n",
}


def _both(text: str):
    out = []
    for reader in (lambda t: read_yaml(t), lambda t: yaml.load(t, Loader=_PyYAML)):  # noqa: S506
        try:
            out.append(("ok", reader(text)))
        except Exception as exc:  # noqa: BLE001
            out.append(("error", type(exc).__name__, str(exc)))
    return out


@pytest.mark.parametrize("label", sorted(SAME))
def test_documents_are_built_as_pyyaml_builds_them(label):
    fast, slow = _both(SAME[label])
    assert fast == slow
    assert fast[0] == "ok"


def test_aliases_stay_shared_objects():
    doc = read_yaml(SAME["aliases"])
    assert doc["use"] is doc["base"] and doc["again"] is doc["base"]["list"] and doc["nested"][0] is doc["base"]


def test_a_recursive_alias_is_built_by_pyyaml():
    doc = read_yaml("a: &a [1, *a]\n")
    assert doc["a"][1] is doc["a"]


@pytest.mark.parametrize("label", sorted(FAIL))
def test_errors_are_pyyamls_in_pyyamls_order(label):
    fast, slow = _both(FAIL[label])
    assert fast == slow
    assert fast[0] == "error"


def test_plain_documents_do_not_go_through_pyyamls_constructor(monkeypatch):
    """The fast path is taken (and the comparison above compares two different readers)."""
    calls = []
    real = yaml.constructor.BaseConstructor.construct_document
    monkeypatch.setattr(yaml.SafeLoader, "construct_document",
                        lambda self, node: calls.append(1) or real(self, node), raising=False)
    read_yaml(SAME["plain"] + SAME["aliases"].replace("base:", "b2:").replace("&b", "&c").replace("*b", "*c")
              .replace("&l", "&m").replace("*l", "*m").replace("use:", "u2:").replace("again:", "a2:")
              .replace("nested:", "n2:"))
    assert calls == []
    read_yaml(SAME["merge key"])
    assert calls == [1]
    assert loader._Loader.construct_document is loader._construct_document

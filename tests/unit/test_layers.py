"""The layers of natns, in code: a module imports only from its own layer or the layers below.

    errors, privileges, locks       everyone may use them
    state, marks, addresses         the vocabulary: the types desired and observed state
                                    share, the ownership marks, IPv4 checking (pure)
    kernel                          (the only one that talks to the kernel)
    firewall   <- kernel
    topology                        (pure: errors and its own modules only)
    core       <- kernel, firewall, topology   (state, marks, desired, observe, steps,
                                                plan, apply, lab)
    verify     <- topology, kernel, firewall, core but lab.py
    explain    <- kernel                       (needs no topology: any namespaces)
    engines    <- kernel, topology, core   (OVN: NB rows via ovsdbapp, the sandbox's daemons)
    testing.fakes <- explain        (the fake kernel of doctor's unit tests)
    cli, demo  on top; natns/__init__.py is the lazy facade of the API

Imports are read with `ast`, also those inside functions and under
TYPE_CHECKING (a lazy import is still a dependency). Next to the "no shell"
tests in test_hostile.py: both are rules of the source, checked on every run.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

SOURCE = pathlib.Path(__file__).resolve().parents[2] / "natns"

CORE = {"desired", "observe", "steps", "plan", "apply", "lab"}
VOCABULARY = {"state", "marks", "addresses"}

#: layer -> the layers its modules may import (besides their own).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "privileges": {"errors"},
    "locks": set(),
    "vocabulary": {"errors"},
    "testing": {"errors"},
    "kernel": {"errors", "privileges", "locks", "testing", "vocabulary"},
    "firewall": {"errors", "privileges", "locks", "testing", "vocabulary", "kernel"},
    "topology": {"errors", "vocabulary"},
    "core": {"errors", "privileges", "locks", "testing", "vocabulary", "kernel", "firewall", "topology"},
    "verify": {"errors", "privileges", "locks", "testing", "vocabulary", "kernel", "firewall", "topology", "core"},
    "explain": {"errors", "privileges", "locks", "testing", "vocabulary", "kernel"},
    # a second engine (OVN): the topology in, rows and daemons out, beside the kernel engine's core
    "engines": {"errors", "privileges", "locks", "testing", "vocabulary", "kernel", "topology", "core"},
    # the in-memory kernel doctor's unit tests run on (testing/fakes.py): above explain
    "fakes": {"errors", "privileges", "locks", "testing", "vocabulary", "kernel", "explain"},
    "app": {"errors", "privileges", "locks", "testing", "vocabulary", "kernel", "firewall", "topology", "core",
            "verify", "explain", "engines", "app"},
    "api": {"errors", "privileges", "locks", "testing", "vocabulary", "kernel", "firewall", "topology", "core",
            "verify", "explain", "app"},
}

#: Imports that break a rule today, each in a file another part of the redesign is
#: rewriting; the lead removes them at merge (and then from here: a pair listed
#: here that no longer occurs fails the test, so this list only shrinks).
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}


def layer_of(module: str) -> str:
    """The layer of module `module` (``natns.kernel.rtnl`` -> ``kernel``)."""
    parts = module.split(".")
    if parts == ["natns"]:
        return "api"
    top = parts[1]
    if top in ("errors", "privileges", "locks"):
        return top
    if top in VOCABULARY:
        return "vocabulary"
    if parts[1:3] == ["testing", "fakes"]:
        return "fakes"
    if top in ("kernel", "firewall", "topology", "verify", "explain", "testing", "engines"):
        return top
    if top in CORE:
        return "core"
    if top in ("cli", "_console", "demo"):
        return "app"
    raise AssertionError(f"{module} is in no layer: add it to test_layers.layer_of")


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    rel = pathlib.Path(*name.split("."))
    return (SOURCE.parent / rel).with_suffix(".py").is_file() or (SOURCE.parent / rel / "__init__.py").is_file()


def imports_of(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, natns module) for every import in `source`, at any depth (functions too)."""
    package = module if is_package else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "natns"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "natns":
                continue
            for a in node.names:  # `from natns import lab`: the module natns.lab
                if a.name == "__version__":
                    continue  # a constant of the package, not its API
                out.append((node.lineno, f"{target}.{a.name}" if _is_module(f"{target}.{a.name}") else target))
    return out


def violations() -> list[tuple[str, str, str]]:
    """(importer, imported, why) for every import that breaks a rule."""
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        module = _module_name(path)
        mine = layer_of(module)
        for line, target in imports_of(path.read_text(), module, path.name == "__init__.py"):
            theirs = layer_of(target)
            where = f"{path.relative_to(SOURCE.parent)}:{line}"
            if mine in ("verify", "explain") and target == "natns.lab":
                found.append((module, target, f"{where}: nothing under {mine}/ imports lab.py"))
            elif theirs != mine and theirs not in ALLOWED[mine]:
                found.append((module, target, f"{where}: {mine} imports {theirs} ({target})"))
    return found


def test_no_module_imports_from_a_layer_above_it():
    bad = [why for a, b, why in violations() if (a, b) not in KNOWN_VIOLATIONS]
    assert bad == []


def test_the_known_violations_are_still_there_or_are_taken_off_the_list():
    seen = {(a, b) for a, b, _ in violations()}
    assert [pair for pair in KNOWN_VIOLATIONS if pair not in seen] == []


def test_the_topology_imports_nothing_of_natns_but_errors_and_the_address_checks():
    for path in sorted((SOURCE / "topology").glob("*.py")):
        module = _module_name(path)
        targets = {t for _, t in imports_of(path.read_text(), module, path.name == "__init__.py")}
        assert {t for t in targets if not t.startswith("natns.topology")} <= {"natns.errors", "natns.addresses"}, \
            path.name


@pytest.mark.parametrize("module,source,why", [
    ("natns.kernel.rtnl", "def f():\n    from ..plan import Plan\n", "kernel imports core"),
    ("natns.firewall.nftables", "from natns.lab import Lab\n", "firewall imports core"),
    ("natns.topology.schema", "from ..kernel import netns\n", "topology imports kernel"),
    ("natns.verify.probe", "import natns.lab\n", "lab.py"),
    ("natns.explain.path", "from .. import topology\n", "explain imports topology"),
    ("natns.plan", "from .verify import probe\n", "core imports verify"),
    ("natns.plan", "from .cli.main import out\n", "core imports app"),
])
def test_the_checker_sees_an_import_from_above(module, source, why):
    """The rule itself: a made-up module importing from above is caught (also lazily, in a function)."""
    imported = [t for _, t in imports_of(source, module)]
    assert imported
    mine = layer_of(module)
    caught = [t for t in imported if (mine in ("verify", "explain") and t == "natns.lab")
              or layer_of(t) != mine and layer_of(t) not in ALLOWED[mine]]
    assert caught == imported, why


def test_every_module_is_in_a_layer():
    for path in SOURCE.rglob("*.py"):
        layer_of(_module_name(path))

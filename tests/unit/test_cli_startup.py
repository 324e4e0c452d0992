"""What `natns --help` imports: not the model, not the kernel layer (a behaviour test, no timing).

The CLI's command modules are imported when one of their commands runs
(natns.cli.main.COMMANDS); these tests run the CLI in a fresh interpreter and
look at sys.modules afterwards, and check the table against the commands the
modules really register, so that --help lists the same text either way.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import click
import pytest

HEAVY = ("pydantic", "pyroute2", "rich", "yaml", "natns.topology", "natns.kernel", "natns.lab", "natns.observe",
         "natns.firewall")

PROBE = """
import json, sys
from natns.cli import main
try:
    main(sys.argv[1:], prog_name="natns")
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def imported_by(*args: str) -> tuple[int, set[str], str]:
    env = {**os.environ, "COLUMNS": "80"}
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60, env=env)
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return data["code"], set(data["modules"]), proc.stdout


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize("args", [["--help"], ["status", "--help"], ["up", "--help"], ["--version"]])
def test_help_imports_neither_the_model_nor_the_kernel_layer(args):
    code, modules, out = imported_by(*args)
    assert code in (0, None), out
    assert "natns.cli.main" in modules  # the probe did run the CLI
    assert heavy_in(modules) == []


def test_a_command_still_imports_what_it_needs():
    """The probe can see an import: `natns plan` of a bad file loads the topology model."""
    code, modules, _ = imported_by("plan", "/nonexistent/natns-startup-test.yaml")
    assert code == 2
    assert "natns.topology" in modules and "pydantic" in modules


def _registered():
    from natns.cli.main import COMMANDS, main

    for module in sorted({m for m, _ in COMMANDS.values()}):
        importlib.import_module(f"natns.cli.{module}")
    return COMMANDS, main


def test_the_command_table_names_every_command_and_its_module():
    COMMANDS, main = _registered()
    assert set(main.commands) == set(COMMANDS)
    for name, cmd in main.commands.items():
        assert sys.modules[cmd.callback.__module__].__name__ == f"natns.cli.{COMMANDS[name][0]}", name


@pytest.mark.parametrize("limit", [20, 45, 60, 74, 200])
def test_the_command_table_gives_the_commands_own_short_help(limit):
    COMMANDS, main = _registered()
    for name, cmd in main.commands.items():
        lazy = click.Command(name, help=COMMANDS[name][1]).get_short_help_str(limit)
        assert lazy == cmd.get_short_help_str(limit), name


def test_help_lists_the_same_text_before_and_after_the_commands_are_loaded():
    code, _, lazy = imported_by("--help")
    from click.testing import CliRunner

    _, main = _registered()
    loaded = CliRunner().invoke(main, ["--help"], prog_name="natns", terminal_width=78)  # what COLUMNS=80 gives
    assert loaded.exit_code == 0
    assert lazy.rsplit("\n{", 1)[0].strip() == loaded.output.strip()


@pytest.mark.root
def test_status_with_no_namespaces_imports_neither_the_model_nor_the_kernel_layer():
    """`natns status` in a mount namespace whose /run/netns is empty (nothing of the machine's is touched)."""
    script = 'mount -t tmpfs natns-test /run/netns && exec "$@"'
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                           sys.executable, "-c", PROBE, "status"], capture_output=True, text=True, timeout=60)
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "no natns labs in this kernel", proc.stdout + proc.stderr
    data = json.loads(lines[-1])
    assert data["code"] in (0, None)
    assert heavy_in(set(data["modules"])) == []


LAZY_PYROUTE2 = """
import json, sys
import natns.kernel.rtnl, natns.kernel.netns, natns.kernel.conntrack  # what `up` imports
before = sorted(m for m in sys.modules if m.startswith("pyroute2"))
import pyroute2
from pyroute2 import netns  # a submodule: still without the package's __init__
still = sorted(m for m in sys.modules if m.startswith("pyroute2"))
from pyroute2 import IPRoute  # a name of the package's own: its __init__ runs now
print(json.dumps({"before": before, "still": still, "after": sorted(m for m in sys.modules if m.startswith("pyroute2")),
                  "iproute": IPRoute.__module__, "version": pyroute2.__version__, "ndb": pyroute2.NDB.__name__}))
"""


def test_the_kernel_layer_imports_pyroute2_without_its_package_init():
    """natns.kernel registers pyroute2 lazily: the submodules natns uses import without the
    package's __init__ (NDB, IPDB and every other socket: ~0.2 s), and a name asked of the
    package itself still comes, by running that __init__ then."""
    proc = subprocess.run([sys.executable, "-c", LAZY_PYROUTE2], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "pyroute2.netlink.rtnl.ifinfmsg" in data["before"]
    for heavy in ("pyroute2.ndb", "pyroute2.ipdb", "pyroute2.iwutil", "pyroute2.plan9"):
        assert not any(m == heavy or m.startswith(heavy + ".") for m in data["still"]), heavy
    assert "pyroute2.ndb" in data["after"] and "pyroute2.ipdb" in data["after"]
    assert data["iproute"].startswith("pyroute2.iproute") and data["ndb"] == "NDB"
    assert data["version"] not in ("", "unknown")

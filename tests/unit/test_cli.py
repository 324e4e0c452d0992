"""The CLI's shared layer, without root: exit statuses, error lines, privilege checks at the
library's doors, the shared options, and output wording (plurals, natural order, pipe width)."""

from __future__ import annotations

import os
import pathlib

import pytest
from click.testing import CliRunner

from natns import topology
from natns.cli import main as cli
from natns.errors import ExitStatus, PrivilegeError, TopologyError, UserError

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
SEED_FILE = str(EXAMPLES / "seed.yaml")
SEED = topology.load(SEED_FILE)


def invoke(*args):
    return CliRunner().invoke(cli, list(args))


# --------------------------------------------------------------------------- exit statuses and error lines


def test_exit_statuses_are_the_documented_numbers():
    import natns

    assert natns.ExitStatus is ExitStatus and natns.PrivilegeError is PrivilegeError
    assert [int(s) for s in ExitStatus] == [0, 1, 2, 130]
    assert (ExitStatus.OK, ExitStatus.FAILED, ExitStatus.USAGE, ExitStatus.INTERRUPTED) == (0, 1, 2, 130)
    help_text = invoke("--help").output
    assert "2 bad input or missing privileges" in help_text and "130 interrupted" in help_text


def test_every_user_error_line_starts_with_natns_but_a_topology_error_names_its_file():
    from natns.cli.main import error_line

    # The refusal to run under `ip netns exec` has ": " in it, and used to lose the prefix.
    refusal = UserError("this process has a mount namespace of its own (as under `ip netns exec`) whose "
                        "mounts don't reach the rest of the system: namespaces made here would vanish")
    assert error_line(refusal).startswith("natns: this process has a mount namespace")
    assert error_line(UserError("--from 'x': no network namespace")) == "natns: --from 'x': no network namespace"
    assert error_line(UserError("natns up needs root")) == "natns up needs root"
    assert error_line(TopologyError("lab.yaml", "name", "bad")) == "lab.yaml: name: bad"


def test_a_bad_topology_file_is_one_line_and_status_2(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text("name: x\nname: y\n")
    res = invoke("show", str(path))
    assert res.exit_code == ExitStatus.USAGE
    assert res.output == f"{path}: line 2: not valid YAML: key 'name' appears twice in one mapping (lines 1 and 2)\n"


# --------------------------------------------------------------------------- privileges


@pytest.fixture
def not_root(monkeypatch):
    """As a user without root (whoever runs the tests)."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)


def _entry_points():
    from natns.explain.doctor import diagnose
    from natns.explain.trace import trace
    from natns.lab import Lab, down_lab, labs
    from natns.verify import conntrack
    from natns.verify.capture import capture
    from natns.verify.checks import run_checks
    from natns.verify.probe import probe

    lab = Lab(SEED, SEED_FILE)
    return {
        "Lab.up": lab.up, "Lab.down": lab.down, "Lab.status": lab.status, "Lab.plan": lab.plan,
        "down_lab": lambda: down_lab("seed"), "labs": labs,
        "run_checks": lambda: run_checks(SEED), "probe": lambda: probe(SEED, "tenant1", "203.0.113.114"),
        "capture": lambda: capture(SEED, "tenant1", to="203.0.113.114"),
        "conntrack.tables": lambda: conntrack.tables(SEED), "conntrack.Watch": lambda: conntrack.Watch("vm").__enter__(),
        "diagnose": lambda: diagnose("tenant1", "203.0.113.114"), "trace": lambda: trace("tenant1", "203.0.113.114"),
    }


@pytest.mark.parametrize("name", sorted(_entry_points()))
def test_library_entry_points_refuse_a_non_root_caller_with_one_line(name, not_root):
    with pytest.raises(PrivilegeError) as info:
        _entry_points()[name]()
    msg = str(info.value)
    assert "\n" not in msg and "needs root" in msg and msg.startswith("natns ")


def test_root_without_the_capabilities_is_told_which_are_missing(monkeypatch):
    from natns import privileges

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(privileges, "effective_caps", lambda: 1 << privileges.CAP_NET_ADMIN)
    with pytest.raises(PrivilegeError, match="natns up needs CAP_SYS_ADMIN, which this root process lacks"):
        privileges.require_root("up")
    monkeypatch.setattr(privileges, "effective_caps", lambda: (1 << 41) - 1)
    privileges.require_root("up")


def test_the_capabilities_are_read_from_proc():
    from natns import privileges

    caps = privileges.effective_caps()
    assert caps is not None
    if os.geteuid() != 0:
        assert caps >> privileges.CAP_SYS_ADMIN & 1 == 0
        with pytest.raises(PrivilegeError):
            privileges.require_root("up")  # for real, not patched


@pytest.mark.parametrize("args", [
    ["up", SEED_FILE], ["down", SEED_FILE], ["status", SEED_FILE], ["status"], ["plan", SEED_FILE],
    ["check", SEED_FILE], ["probe", SEED_FILE, "--from", "tenant1", "--to", "203.0.113.114"],
    ["conntrack", SEED_FILE], ["exec", "tenant1", "--", "true"],
])
def test_cli_commands_refuse_a_non_root_caller_with_one_line_and_status_2(args, not_root):
    res = invoke(*args)
    assert res.exit_code == ExitStatus.USAGE and res.output.count("\n") == 1 and "needs root" in res.output, res.output


def test_lab_require_root_is_still_importable():
    from natns import lab, privileges

    assert lab.require_root is privileges.require_root


# --------------------------------------------------------------------------- shared options and wording


def test_a_namespace_that_does_not_exist_is_worded_the_same_by_every_command():
    lines = {}
    for cmd in ("doctor", "trace"):
        res = invoke(cmd, "--from", "no-such-ns-x", "--to", "203.0.113.114")
        assert res.exit_code == ExitStatus.USAGE, res.output
        lines[cmd] = res.output
    want = "natns: --from 'no-such-ns-x': no network namespace of that name under /run/netns (see `ip netns list`)\n"
    assert lines == {"doctor": want, "trace": want}
    res = invoke("trace", "--from", "no/such", "--to", "203.0.113.114")
    assert res.output.startswith("natns: --from 'no/such': no network namespace of that name")


@pytest.mark.parametrize("cmd", [["doctor"], ["trace"], ["probe", SEED_FILE], ["capture", SEED_FILE]])
def test_two_protocols_are_one_user_error_line_in_every_command(cmd, not_root):
    res = invoke(*cmd, "--from", "tenant1", "--to", "203.0.113.114", "--tcp", "80", "--udp", "53")
    assert res.exit_code == ExitStatus.USAGE
    # doctor and trace check the namespace first; the lab commands their privileges
    assert res.output.count("\n") == 1, res.output


def test_protocol_reads_the_three_flags():
    from natns.cli.options import protocol

    assert protocol(False, None, None) == ("icmp", None)
    assert protocol(True, None, None) == ("icmp", None)
    assert protocol(False, 80, None) == ("tcp", 80)
    assert protocol(False, None, 53) == ("udp", 53)
    with pytest.raises(UserError, match="choose one of --icmp, --tcp PORT, --udp PORT"):
        protocol(True, 80, None)


def test_until_counts_events_in_good_english():
    from natns.cli.verify import _until

    assert _until(1, None) == "1 event"
    assert _until(5, 2.5) == "5 events or 2.5 s"
    assert _until(None, 1.0) == "1 s"
    assert _until(None, None) == "Ctrl-C"


def test_names_are_sorted_as_people_count():
    from natns.cli.main import natsorted

    assert natsorted(["h10", "h2", "h1", "h11", "inet", "vm"]) == ["h1", "h2", "h10", "h11", "inet", "vm"]
    assert natsorted(["t1a2-h10", "t1a2-h9", "t1a10-h1"]) == ["t1a2-h9", "t1a2-h10", "t1a10-h1"]


def test_the_labs_table_lists_namespaces_in_natural_order(monkeypatch):
    from natns.cli import lifecycle

    monkeypatch.setattr(lifecycle, "labs", lambda: {"lab10": [("h10", "host"), ("h2", "host")],
                                                    "lab2": [("h1", "host")]})
    res = invoke("status")
    assert res.exit_code == 0, res.output
    assert res.output.index("lab2") < res.output.index("lab10")
    assert "h2 (host), h10 (host)" in res.output


def test_tables_into_a_pipe_fit_in_100_columns(monkeypatch, capsys):
    import importlib

    from natns.cli.verify import _print, _probe_table

    cli_main = importlib.import_module("natns.cli.main")  # the module (natns.cli.main is the group)
    from natns.verify.probe import ProbeResult

    monkeypatch.setenv("COLUMNS", "80")  # as pytest sets it for its children
    console = cli_main._console()
    assert not console.is_terminal and console.width == cli_main.PIPE_WIDTH == 100
    monkeypatch.setattr(cli_main, "out", console)
    import natns.cli.verify as v

    monkeypatch.setattr(v, "out", console)
    long = " ".join(["connection refused by the far end"] * 6)  # 203 columns
    r = ProbeResult("tenant1", "203.0.113.114", "tcp", 80, "error", None, error=long, responder=long)
    _print(_probe_table(r))
    lines = capsys.readouterr().out.splitlines()
    assert lines and max(len(ln) for ln in lines) <= 100
    assert sum(ln.count("refused") for ln in lines) == 12  # wrapped, nothing cut


def test_capture_exits_1_when_its_probe_did_not_get_through(monkeypatch):
    import natns.cli.verify as v
    from natns.verify import capture as capture_mod
    from natns.verify.probe import ProbeResult

    class Run:
        points, bpf, command, rows, pcaps = [], "icmp", None, [], {}

        def __init__(self, ok):
            self.probe = ProbeResult("tenant1", "203.0.113.114", "icmp", None, "reply" if ok else "timeout",
                                     1.0 if ok else None)

        def to_json(self):
            return {"probe": self.probe.to_json()}

    monkeypatch.setattr(v, "require_root", lambda what: None)
    for ok, status in ((True, ExitStatus.OK), (False, ExitStatus.FAILED)):
        monkeypatch.setattr(capture_mod, "capture", lambda *a, ok=ok, **kw: Run(ok))
        for extra in ([], ["--json"]):
            res = invoke("capture", SEED_FILE, "--from", "tenant1", "--to", "203.0.113.114", *extra)
            assert res.exit_code == status, (ok, extra, res.output)


@pytest.mark.skipif(os.geteuid() != 0, reason="enters a namespace (its own) for real")
def test_exec_of_a_missing_command_names_natns_and_the_command_not_nsenter(monkeypatch):
    import natns.kernel.nsexec as nsexec
    import natns.marks
    import natns.observe

    monkeypatch.setattr(natns.observe, "read_mark", lambda ns: "mark")
    monkeypatch.setattr(natns.marks, "parse_ns_mark", lambda mark: ("lab", "host", "tenant1"))
    monkeypatch.setattr(nsexec, "ns_path", lambda ns: "/proc/self/ns/net")  # the namespace it is in
    res = invoke("exec", "tenant1", "--", "no-such-command-natns")
    assert res.exit_code == ExitStatus.USAGE
    assert res.output == ("natns: cannot run 'no-such-command-natns' in namespace 'tenant1': "
                          "No such file or directory\n")
    assert "nsenter" not in res.output


@pytest.mark.parametrize("to,message", [
    ("1.2.3", "probe destination '1.2.3' is not an IP address"),
    # IPv6 is a destination like any (issue 13): it passes the check, to the lab not being up
    ("2001:db8::1", "namespace 'tenant1' of lab seed is not up (run `natns up` on the topology first)"),
])
def test_probe_checks_its_destination_with_the_topologys_address_check(to, message, monkeypatch):
    import natns.verify.probe as probe_mod

    monkeypatch.setattr(probe_mod, "require_root", lambda what: None)
    with pytest.raises(UserError) as info:
        probe_mod.probe(SEED, "tenant1", to)
    assert str(info.value) == message

"""The CLI's top: the command group, error handling, exit statuses and output consoles.

The CLI is thin: it parses arguments (the options several commands share are
in natns.cli.options), calls the library and renders results. Each group of
commands lives in its own module and registers on `main`. Every exit goes
through `ExitStatus` (natns.errors): 0 ok, 1 failed, 2 bad input or missing
privileges, 130 interrupted.

(`natns.cli.main` names this group once natns.cli is imported; the module is
``sys.modules["natns.cli.main"]``. natns.cli.common is its old name, kept.)
"""

from __future__ import annotations

import importlib
import os
import sys
from functools import wraps

import click

from .. import __version__
from ..errors import ExitStatus, NatnsError, TopologyError, UserError

#: Columns of output into a pipe or a file, whatever $COLUMNS says (rich's
#: default there, 80 or $COLUMNS, breaks addresses and tuples in tables apart;
#: wider than this is hard to read in a pager or a log).
PIPE_WIDTH = 100


def _console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    return console


class _Console:
    """A rich Console made on first use (`natns --help` and `status` with no labs never import rich)."""

    def __init__(self, stderr: bool):
        self._stderr = stderr
        self._real = None

    def __getattr__(self, name: str):
        if self._real is None:
            self._real = _console(stderr=self._stderr)
        return getattr(self._real, name)


def real_console(c):
    """`c` as a rich Console (made now if it was not yet)."""
    if isinstance(c, _Console):
        if c._real is None:
            c._real = _console(stderr=c._stderr)
        return c._real
    return c


out = _Console(stderr=False)
err = _Console(stderr=True)


def fail(message: str, code: ExitStatus) -> None:
    """Print `message` (one line) on stderr and exit with `code`."""
    click.echo(message, err=True)
    sys.exit(code)


_fail = fail  # the old name


def error_line(exc: UserError) -> str:
    """A user error as the one line natns prints: ``natns: ...``; a topology error names its file first."""
    text = str(exc)
    if isinstance(exc, TopologyError) or text.startswith("natns"):
        return text
    return f"natns: {text}"


def handle_errors(fn):
    """Turn natns errors into one line on stderr and the documented exit status.

    User errors (bad topology, missing privileges, foreign objects): exit 2.
    Internal failures (the kernel or a tool refused): exit 1 with the cause.
    """

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            fail(error_line(exc), ExitStatus.USAGE)
        except NatnsError as exc:
            fail(f"natns: error: {exc}", ExitStatus.FAILED)
        except KeyboardInterrupt:
            fail("natns: interrupted; run the same command again to converge, or `natns down` to remove",
                 ExitStatus.INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # an internal failure: say what, keep the trace on request
            if os.environ.get("NATNS_DEBUG"):
                raise
            fail(f"natns: internal error: {type(exc).__name__}: {exc} (set NATNS_DEBUG=1 for the traceback)",
                 ExitStatus.FAILED)

    return wrapper


def natural_key(name: str) -> tuple:
    """Sort key that orders names as people count: h1, h2, h10 (not h1, h10, h2)."""
    import re

    parts = tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                  for part in re.split(r"(\d+)", name) if part)
    return (parts, name)  # h1 before h01: the same numbers, then the text


def natsorted(names) -> list:
    """`names` sorted naturally (`natural_key`)."""
    return sorted(names, key=natural_key)


def exit_with(ok: bool) -> None:
    """Exit 0 if `ok` (the check, probe or status holds), else 1."""
    sys.exit(ExitStatus.OK if ok else ExitStatus.FAILED)


def progress_printer(json_out: bool):
    """A progress bar for long plans (stderr, only on a terminal), or None."""
    if json_out or not err.is_terminal:
        return None
    from rich.progress import Progress

    bar = Progress(console=real_console(err), transient=True)
    task = {"id": None}

    def tick(i, total, step):
        if task["id"] is None:
            bar.start()
            task["id"] = bar.add_task("applying", total=total)
        bar.update(task["id"], completed=i, description=f"{step.ns or ''} {step.action}".strip())
        if i == total:
            bar.stop()

    return tick


#: Every command: its name -> (the module under natns.cli that registers it, the
#: first sentence of its help). A command's module is imported when the command
#: runs, so `natns --help` and `natns CMD` import only what CMD needs (the model,
#: pyroute2, rich: most of the start-up). tests/unit/test_cli_startup.py checks
#: this table against the commands the modules register.
COMMANDS: dict[str, tuple[str, str]] = {
    "attach": ("lifecycle", "Plug this machine's lab hosts into its local OVN integration bridge (engine: ovn)."),
    "capture": ("verify", 'Capture at several points at once while a probe or a command runs.'),
    "check": ("verify", 'Run the `checks:` of FILE against the running lab.'),
    "conntrack": ("verify", "Show a router's NAT table (conntrack), read over netlink."),
    "demo": ("demo_cmd", "Replay the seed's walk-through for real, failures included."),
    "doctor": ("explain", 'Say why namespace NS cannot reach ADDR, and the commands that fix it.'),
    "down": ("lifecycle", 'Remove exactly what natns made for a lab, nothing else.'),
    "exec": ("lifecycle", 'Run COMMAND inside the lab namespace NAMESPACE.'),
    "plan": ("lifecycle", 'Show the steps `natns up FILE` would run, without running them.'),
    "probe": ("verify", 'Send one probe from a lab namespace and say what happened.'),
    "show": ("verify", 'Draw the topology: routers, networks, hosts, the internet, addresses, SNAT.'),
    "status": ("lifecycle", 'Compare the kernel with FILE: what exists, what is missing, what drifted.'),
    "trace": ("explain", 'Follow one probe packet from namespace NS to ADDR, hook by hook, and its reply back.'),
    "up": ("lifecycle", 'Create the lab in FILE, or converge it to FILE. Idempotent.'),
}


def load_command(name: str | None) -> None:
    """Import the module that registers command `name` (nothing for an unknown name):
    what LazyGroup does when click looks a command up, and natns/_console.py before
    click runs (with SIGINT held)."""
    if name in COMMANDS:
        importlib.import_module(f"{__package__}.{COMMANDS[name][0]}")


class LazyGroup(click.Group):
    """A click group whose commands' modules are imported when a command is looked up.

    `--help` lists the commands from `COMMANDS` without importing any of them.
    """

    def list_commands(self, ctx) -> list[str]:
        return sorted(set(self.commands) | set(COMMANDS))

    def get_command(self, ctx, name: str):
        if name not in self.commands:
            load_command(name)
        return self.commands.get(name)

    def format_commands(self, ctx, formatter) -> None:
        names = [n for n in self.list_commands(ctx) if n in self.commands or n in COMMANDS]
        names = [n for n in names if n not in self.commands or not self.commands[n].hidden]
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for n in names:
            if n in self.commands:
                rows.append((n, self.commands[n].get_short_help_str(limit)))
            else:
                rows.append((n, click.Command(n, help=COMMANDS[n][1]).get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="natns")
def main():
    """Private networks in Linux network namespaces, online through a NAT gateway.

    \b
    A topology file (YAML, see docs/topology.md) names routers (gateway
    namespaces with an external interface and SNAT), networks behind them and
    hosts on those networks. natns builds it with netlink and nftables or
    iptables, and reads its own marks back from the kernel: no state file.

    \b
    Start here:
      natns demo                      the seed walk-through, failures included
      natns plan examples/seed.yaml   what `up` would change
      natns up examples/seed.yaml     create or converge (idempotent)
      natns status examples/seed.yaml what exists, what is missing or drifted
      natns exec tenant1 -- ping -c1 203.0.113.114
      natns down examples/seed.yaml   remove exactly what natns made

    \b
    Exit status: 0 success, 1 failure (or a check/status that does not hold),
    2 bad input or missing privileges (one line naming the problem),
    130 interrupted.
    """

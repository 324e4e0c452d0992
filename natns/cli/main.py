"""Shared pieces of the CLI: the command group, error handling, output helpers.

The CLI is thin: it parses arguments, calls the library and renders results.
Each group of commands lives in its own module and registers on `main`.
"""

from __future__ import annotations

import os
import sys
from functools import wraps

import click
from rich.console import Console

from .. import __version__
from ..errors import NatnsError, UserError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def _fail(message: str, code: int) -> None:
    click.echo(message, err=True)
    sys.exit(code)


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
            text = str(exc)
            _fail(text if ": " in text and not text.startswith("natns") else f"natns: {text}", 2)
        except NatnsError as exc:
            _fail(f"natns: error: {exc}", 1)
        except KeyboardInterrupt:
            _fail("natns: interrupted; run the same command again to converge, or `natns down` to remove", 130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # an internal failure: say what, keep the trace on request
            if os.environ.get("NATNS_DEBUG"):
                raise
            _fail(f"natns: internal error: {type(exc).__name__}: {exc} (set NATNS_DEBUG=1 for the traceback)", 1)

    return wrapper


def progress_printer(json_out: bool):
    """A progress bar for long plans (stderr, only on a terminal), or None."""
    if json_out or not err.is_terminal:
        return None
    from rich.progress import Progress

    bar = Progress(console=err, transient=True)
    task = {"id": None}

    def tick(i, total, step):
        if task["id"] is None:
            bar.start()
            task["id"] = bar.add_task("applying", total=total)
        bar.update(task["id"], completed=i, description=f"{step.ns or ''} {step.action}".strip())
        if i == total:
            bar.stop()

    return tick


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    2 bad input or missing privileges (one line naming the problem).
    """

"""`natns demo`."""

from __future__ import annotations

import sys

import click

from ..errors import ExitStatus
from .main import handle_errors, main, out, real_console
from .options import backend_option


@main.command()
@backend_option("Firewall backend for the SNAT rule.")
@click.option("--keep", is_flag=True, help="Leave the lab up for exploring when the demo succeeds; prints how to enter and remove it.")
@handle_errors
def demo(backend, keep):
    """Replay the seed's walk-through for real, failures included.

    \b
    Builds tenant1 -- vm (NAT gateway) -- inet in throwaway namespaces and
    walks the seed's four steps:
      1. no default route in the tenant  -> "Network is unreachable"
      2. default route added             -> 100% loss
      3. SNAT rule added                 -> still 100% loss
      4. ip_forward=1 in the router      -> replies come back
    Each step shows the seed's command, natns's equivalent, a real ping and
    how far the packet got. Then captures at three points side by side, the
    SNAT rule's counter and the conntrack entry. Everything is removed at the
    end, also on Ctrl-C or an error, unless --keep and the demo succeeded.
    """
    from ..demo import Interrupted, run_demo

    try:
        code = run_demo(backend=backend, keep=keep, console=real_console(out))
    except Interrupted as exc:  # not "run the same command again to converge": the demo cleaned up
        click.echo(f"natns: interrupted; {exc}", err=True)
        sys.exit(ExitStatus.INTERRUPTED)
    sys.exit(ExitStatus.OK if code == ExitStatus.OK else ExitStatus.FAILED)



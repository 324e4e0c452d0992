"""The `natns` command's entry point: Ctrl-C while the CLI is still being imported
(pydantic, pyroute2, rich, click: about half a second) ends quietly with status 130,
like Ctrl-C later on, instead of a traceback. Nothing has been done by then."""

from __future__ import annotations

import sys

from .errors import ExitStatus  # cheap: nothing but an enum


def main() -> None:
    try:
        from .cli import main as cli
    except KeyboardInterrupt:
        sys.stderr.write("natns: interrupted before it started; nothing was done\n")
        sys.exit(ExitStatus.INTERRUPTED)
    cli()

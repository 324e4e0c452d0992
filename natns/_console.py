"""The `natns` command's entry point: Ctrl-C while the CLI is still being imported
(click, and for most commands pydantic, pyroute2 and rich) ends quietly with status 130,
like Ctrl-C later on, instead of a traceback. Nothing has been done by then.

SIGINT is held (blocked) while the CLI imports and looked for afterwards, rather than
caught as KeyboardInterrupt: raised in the middle of an import, the KeyboardInterrupt
can come out as another exception (a RuntimeError from a class's ``__set_name__`` in
the standard library, seen on a cold start), which no ``except`` of ours would know.
"""

from __future__ import annotations

import signal
import sys

from .errors import ExitStatus  # cheap: nothing but an enum


def _interrupted() -> None:
    sys.stderr.write("natns: interrupted before it started; nothing was done\n")
    sys.exit(ExitStatus.INTERRUPTED)


def main() -> None:
    try:
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        from .cli import main as cli
    except KeyboardInterrupt:  # came before the signal was held
        _interrupted()
    if signal.SIGINT in signal.sigpending():
        _interrupted()
    signal.pthread_sigmask(signal.SIG_SETMASK, held)
    cli()

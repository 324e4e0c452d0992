"""The `natns` command's entry point: Ctrl-C while the CLI is still being imported
(click, and for most commands pydantic, pyroute2 and rich) ends quietly with status 130,
like Ctrl-C later on, instead of a traceback. Nothing has been done by then.

SIGINT is held (blocked) while the CLI imports and looked for afterwards, rather than
caught as KeyboardInterrupt: raised in the middle of an import, the KeyboardInterrupt
can come out as another exception (a RuntimeError from a class's ``__set_name__`` in
the standard library, seen on a cold start), which no ``except`` of ours would know.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from .errors import ExitStatus  # cheap: nothing but an enum


def _interrupted() -> None:
    sys.stderr.write("natns: interrupted before it started; nothing was done\n")
    sys.exit(ExitStatus.INTERRUPTED)


def main() -> None:
    try:
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        from .cli import main as cli
        from .cli.main import load_command

        # the command's module too (the CLI imports it lazily, inside click, which would
        # turn a Ctrl-C there into "Aborted!" and status 1)
        load_command(next((a for a in sys.argv[1:] if not a.startswith("-")), None))
        if "NATNS_TEST_STARTUP_DELAY" in os.environ:  # test hook: a start-up as slow as a cold one
            time.sleep(float(os.environ["NATNS_TEST_STARTUP_DELAY"]))
    except KeyboardInterrupt:  # came before the signal was held
        _interrupted()
    if signal.SIGINT in signal.sigpending():
        _interrupted()
    signal.pthread_sigmask(signal.SIG_SETMASK, held)
    cli()

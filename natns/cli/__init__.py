"""The `natns` command line. Each module registers its commands on `main`.

The modules are imported when one of their commands runs (natns.cli.main.COMMANDS
says which module holds which command), so that `natns --help` starts fast.
"""

from .main import main

__all__ = ["main"]

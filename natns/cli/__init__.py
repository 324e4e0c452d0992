"""The `natns` command line. Each module registers its commands on `main`."""

from .main import main
from . import demo_cmd, explain, lifecycle, verify  # noqa: E402,F401  (register commands)

__all__ = ["main"]

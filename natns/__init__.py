"""natns: private networks in Linux network namespaces behind a NAT gateway.

The Python API mirrors the CLI; see natns.lab for the details::

    from natns import Lab
    lab = Lab.from_file("examples/seed.yaml")
    lab.up()

The names below are imported on first use, so that `import natns` (and the
`natns` command's first instant, see natns/_console.py) costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["Lab", "down_lab", "labs", "load", "loads", "Topology", "NatnsError", "TopologyError", "UserError",
           "PrivilegeError", "ExitStatus"]

_WHERE = {"Lab": "lab", "down_lab": "lab", "labs": "lab", "load": "topology", "loads": "topology", "Topology": "topology",
          "NatnsError": "errors", "TopologyError": "errors", "UserError": "errors", "PrivilegeError": "errors",
          "ExitStatus": "errors"}

if TYPE_CHECKING:  # pragma: no cover
    from .errors import ExitStatus, NatnsError, PrivilegeError, TopologyError, UserError
    from .lab import Lab, down_lab, labs
    from .topology import Topology, load, loads


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'natns' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)

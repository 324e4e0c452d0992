"""natns: private networks in Linux network namespaces behind a NAT gateway.

The Python API mirrors the CLI; see natns.lab for the details::

    from natns import Lab
    lab = Lab.from_file("examples/seed.yaml")
    lab.up()
"""

from .errors import NatnsError, TopologyError, UserError
from .lab import Lab, down_lab, labs
from .model import Topology, load, loads

__version__ = "0.1.0"
__all__ = ["Lab", "down_lab", "labs", "load", "loads", "Topology", "NatnsError", "TopologyError", "UserError"]

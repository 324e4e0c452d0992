"""The topology file: its schema and cross-checks (pure), and its drawing.

`parse`, `load` and `loads` turn a file into a validated `Topology` or raise
`natns.TopologyError` naming the file, the field and the problem. The drawing
(`natns.topology.drawing`) is imported on its own: it needs the derived names.
"""

from __future__ import annotations

from .schema import (  # noqa: F401  (the package's public face)
    IFNAMSIZ,
    MAX_PORT_RANGE,
    RESERVED_IFNAMES,
    _NAME_RE,
    Check,
    External,
    FloatingIpSpec,
    Host,
    Internet,
    Network,
    PortForwardSpec,
    Router,
    Topology,
    check_ifname,
    check_nsname,
    load,
    loads,
    parse,
    short_ifname,
)

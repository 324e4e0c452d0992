"""The topology file: its schema, cross-checks and derived names (pure), and its drawing.

`parse`, `load` and `loads` turn a file into a validated `Topology` or raise
`natns.TopologyError` naming the file, the field and the problem. The
modules: `schema` (the models, one annotated type per kind of field),
`checks` (what spans fields, section by section), `names` (every interface
name natns derives), `natns.addresses` (IPv4 and IPv6 checking, for the whole code base),
`loader` (YAML to a Topology) and `drawing` (imported on its own).
"""

from __future__ import annotations

from .loader import load, loads, parse  # noqa: F401  (the package's public face)
from .names import IFNAMSIZ, host_port_name, router_port_name, short_ifname, uplink_name  # noqa: F401
from .schema import (  # noqa: F401
    MAX_PORT_RANGE,
    RESERVED_IFNAMES,
    _NAME_RE,
    Check,
    External,
    FloatingIpSpec,
    Host,
    Ingress,
    Internet,
    Network,
    PortForwardSpec,
    Router,
    Topology,
    check_ifname,
    check_nsname,
)

"""The options and arguments several commands share, written once.

`file_argument`, `json_option`, `backend_option`, `from_option`,
`to_option`, `protocol_options` (``--icmp/--tcp PORT/--udp PORT``) and
`timeout_option` are decorators; `protocol` turns the three protocol flags
into ``(proto, port)``, `existing_namespace` checks a namespace argument of
the commands that take any namespace (doctor, trace) with one wording.
"""

from __future__ import annotations

import click

from ..errors import UserError

BACKENDS = ("nftables", "iptables")
PORT = click.IntRange(1, 65535)
NETNS_DIR = "/run/netns"


def file_argument(required: bool = True):
    """The topology FILE."""
    return click.argument("file", type=click.Path(dir_okay=False), required=required)


def json_option(help: str = "Print the result as JSON."):
    """``--json`` (the parameter is `json_out`)."""
    return click.option("--json", "json_out", is_flag=True, help=help)


def backend_option(help: str = "Firewall backend.", default: str | None = "nftables"):
    """``--backend nftables|iptables``."""
    return click.option("--backend", type=click.Choice(BACKENDS), default=default,
                        show_default=default is not None, help=help)


def from_option(help: str, required: bool = True):
    """``--from NS`` (the parameter is `from_ns`)."""
    return click.option("--from", "from_ns", required=required, metavar="NS", help=help)


def to_option(help: str, required: bool = True):
    """``--to ADDR`` (the parameter is `to`)."""
    return click.option("--to", "to", required=required, metavar="ADDR", help=help)


def timeout_option(default: float | None, help: str, low: float = 0.05, high: float | None = 60):
    """``--timeout S`` in seconds."""
    return click.option("--timeout", type=click.FloatRange(low, high), default=default,
                        show_default=default is not None, metavar=None if default is not None else "S",
                        help=help)


def protocol_options(icmp: str = "Send an ICMP echo request (the default).",
                     tcp: str = "Open a TCP connection to PORT.",
                     udp: str = "Send a UDP datagram to PORT; it must be answered.",
                     port_type=PORT):
    """``--icmp``, ``--tcp PORT``, ``--udp PORT`` (choose one; `protocol` reads them)."""

    def decorate(fn):
        fn = click.option("--udp", type=port_type, metavar="PORT", help=udp)(fn)
        fn = click.option("--tcp", type=port_type, metavar="PORT", help=tcp)(fn)
        fn = click.option("--icmp", is_flag=True, help=icmp)(fn)
        return fn

    return decorate


def protocol(icmp: bool, tcp: int | None, udp: int | None) -> tuple[str, int | None]:
    """``("tcp", 80)``, ``("udp", 53)`` or ``("icmp", None)``; more than one given is a user error."""
    if (tcp is not None) + (udp is not None) + bool(icmp) > 1:
        raise UserError("choose one of --icmp, --tcp PORT, --udp PORT")
    if tcp is not None:
        return "tcp", tcp
    if udp is not None:
        return "udp", udp
    return "icmp", None


def existing_namespace(name: str, option: str) -> str:
    """`name` if a network namespace of that name exists under /run/netns, else a UserError."""
    from ..kernel import netns

    if not name or "/" in name or name in (".", "..") or not netns.exists(name):
        raise UserError(f"{option} {name!r}: no network namespace of that name under {NETNS_DIR} "
                        "(see `ip netns list`)")
    return name

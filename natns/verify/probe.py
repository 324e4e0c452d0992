"""`natns probe`: one probe from a lab namespace, with the far end found in the topology.

The sender itself (one for probe, check, capture, the demo, trace and doctor;
one result type, one definition of success) is natns.kernel.probe, re-exported
here: it needs no topology, so the explain tools use it too.
"""

from __future__ import annotations

from ..errors import UserError
from ..kernel.probe import *  # noqa: F401,F403  (the sender's public names, as before the move)
from ..kernel.probe import PROTOCOLS, Responder, Sender, ProbeResult, PingResult, hostport, ping, send, tcp_connect  # noqa: F401
from ..privileges import require_root


# --------------------------------------------------------------------------- `natns probe`


def probe(t, from_ns: str, to: str, proto: str = "icmp", port: int | None = None,
          timeout: float = 2.0, **options) -> ProbeResult:
    """Send one probe from lab namespace `from_ns` to `to` and report what happened.

    `proto` is ``icmp`` (an echo request), ``tcp`` (a connection to `port`) or
    ``udp`` (a datagram to `port` that must be answered). When `to` belongs
    to a namespace of the lab, natns listens there for the probe's duration
    (a `Responder`: a raw ICMP socket, or a TCP/UDP responder on the far
    end's address and port that answers with the address it saw) and closes
    it before returning. Sockets are made in the namespaces by threads that
    entered them; no process is started. `options` are Sender's. Never
    raises for an unreachable destination; raises UserError for bad
    arguments or a lab that is not up.
    """
    require_root("probe")
    from ..addresses import ip_address
    from .endpoints import hidden_host, locate, require_up, role_of

    try:
        addr = ip_address(str(to))
    except ValueError as exc:  # "'x' is not an IP address"
        raise UserError(f"probe destination {exc}") from None
    if proto not in PROTOCOLS:
        raise UserError(f"probe protocol {proto!r} is not one of {', '.join(PROTOCOLS)}")
    if proto != "icmp" and (not isinstance(port, int) or not 1 <= port <= 65535):
        raise UserError(f"a {proto} probe needs a port 1-65535")
    role_of(t, from_ns)
    require_up(t, from_ns)
    to = str(addr)
    if proto == "icmp":
        port = None
    dest = locate(t, from_ns, to, proto, port)
    far = None
    if dest is not None:
        try:
            require_up(t, dest.ns)
            far = dest.ns
        except UserError:
            far = None
    sender = Sender(from_ns, to, proto, port, **options)
    res = sender.result(far_end=far)
    if dest is None:
        res.far_end_note = hidden_host(t, from_ns, to)
    responder = None
    try:
        if far is not None:
            assert dest is not None
            bind = dest.addr or to
            bind_port = dest.port if dest.port is not None else port
            res.far_end_address = hostport(bind, bind_port)
            responder = Responder(far, proto, bind, bind_port)
        return sender.send(timeout, responder, res)
    finally:
        sender.close()
        if responder is not None:
            responder.close()

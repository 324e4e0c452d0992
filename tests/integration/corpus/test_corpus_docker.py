"""Corpus: Docker's bridge driver (iptables), as dockerd writes it.

The rules are those of a daemon with the default bridge `docker0` (here 192.0.2.0/24,
gateway 192.0.2.1, the addresses moby's own docs use) and one container published with
``docker run -p 8080:80``, from moby's source:

* moby/moby libnetwork/drivers/bridge/setup_ip_tables_linux.go (the DOCKER,
  DOCKER-ISOLATION-STAGE-1/2 chains, ``-o docker0 -m conntrack --ctstate RELATED,ESTABLISHED
  -j ACCEPT``, ``-i docker0 ! -o docker0 -j ACCEPT``, ``-s SUBNET ! -o docker0 -j MASQUERADE``,
  ``-m addrtype --dst-type LOCAL -j DOCKER`` in PREROUTING and OUTPUT);
* libnetwork/drivers/bridge/port_mapping_linux.go (setPerPortForwarding: ``-A DOCKER ! -i
  docker0 -p tcp --dport 8080 -j DNAT --to-destination C:80`` and ``-A DOCKER -d C/32 ! -i
  docker0 -o docker0 -p tcp --dport 80 -j ACCEPT``);
* libnetwork/firewall_linux.go (DOCKER-USER, jumped to first from FORWARD);
* as listed in moby/moby integration/network/bridge/iptablesdoc/generated/new-daemon.md and
  usernet-portmap.md (the Docker 27 layout, before the docker-ext-bridges ipset of 28).

dockerd also sets the FORWARD policy to DROP when it turns ip_forward on. The router of
builder.py plays the Docker host: docker0 is a bridge with the container's veth as its port,
wan0 its uplink; far is a client on the outside (198.51.100.9) and the internet (203.0.113.9).
"""

from __future__ import annotations

import pytest

from . import builder as B
from .builder import FAR, LAN, WAN

pytestmark = pytest.mark.root

DOCKER_RULES = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 192.0.2.0/24 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.0.2.2:80
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER -d 192.0.2.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
"""


shared, net = B.fixtures(lambda n: n.ipt(DOCKER_RULES), bridge="docker0", port_name="veth3f2a9c1")


def ipt(net: B.Net, *argv: str) -> None:
    net.x(net.router, "iptables", *argv)


def test_container_reaches_out_and_its_published_port_is_reached(net):
    B.assert_working(net, net.lan, FAR)
    r = B.assert_working(net, net.far, WAN, "tcp", 8080, to=net.lan)
    assert [(n.kind, n.before, n.after, n.port_after) for n in r.nat] == [("dnat", WAN, LAN, 80)]
    assert "--dst-type LOCAL" in net.x(net.router, "iptables-save", "-t", "nat").stdout


def test_per_port_accept_lost_is_the_forward_drop_of_the_dnated_packet(net):
    """The container's ACCEPT in DOCKER is gone (e.g. the daemon restarted and a rule failed):
    the DNAT still happens, the FORWARD policy drops it."""
    ipt(net, "-D", "DOCKER", "-d", "192.0.2.2/32", "!", "-i", "docker0", "-o", "docker0", "-p", "tcp", "-m",
        "tcp", "--dport", "80", "-j", "ACCEPT")
    t = net.trace(net.far, WAN, "tcp", 8080)
    assert t.request.outcome == "dropped" and t.request.stop.hook == "forward"
    assert [w.after for w in t.request.hop(net.router).rewrites if w.field == "daddr"] == [LAN]
    f = B.assert_first_error_then_fix(net, net.far, WAN, "forward-drop", proto="tcp", port=8080,
                                      says="the DROP policy of iptables-nft chain FORWARD")
    assert f.fix == [f"ip netns exec {net.router} iptables -t filter -I FORWARD -m conntrack --ctstate DNAT "
                     f"-j ACCEPT"]


def test_docker_user_drop_is_named_and_removed(net):
    """DOCKER-USER, where Docker tells users to restrict access: `-i wan0 -j DROP` shuts the port."""
    ipt(net, "-I", "DOCKER-USER", "-i", "wan0", "-j", "DROP")
    f = B.assert_first_error_then_fix(net, net.far, WAN, "forward-drop", proto="tcp", port=8080,
                                      says="-A DOCKER-USER -i wan0 -j DROP")
    assert f.fix == [f"ip netns exec {net.router} iptables -t filter -D DOCKER-USER -i wan0 -j DROP"]
    assert net.ping(net.lan, FAR)  # going out was never blocked: DOCKER-USER saw -i docker0


def test_masquerade_lost_is_no_snat(net):
    ipt(net, "-t", "nat", "-D", "POSTROUTING", "-s", "192.0.2.0/24", "!", "-o", "docker0", "-j", "MASQUERADE")
    f = B.assert_first_error_then_fix(net, net.lan, FAR, "no-snat", says="no source NAT")
    assert f.fix == [f"ip netns exec {net.router} iptables -t nat -A POSTROUTING -s 192.0.2.0/24 -o wan0 "
                     f"-j MASQUERADE"]

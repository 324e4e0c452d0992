"""How tests/unit/data/capture_dual.pcap was captured (as root): `python tests/unit/data/capture_pcap.py`.

The hand-made routed path of tests/integration/v6_tools.py (host - router - inet), given
IPv4 addresses beside its IPv6 ones, with tcpdump on the router's host-side interface
(Ethernet, nanosecond pcap) while real traffic passes both ways, each kind for both
families: echo requests and replies, a too-big answer (ICMP fragmentation needed with a
1280-byte link; ICMPv6 packet too big), a TCP connection with data, an answered UDP
datagram, a refused UDP datagram (port unreachable), neighbour discovery / ARP, and one
v6 datagram sent fragmented at the source (a fragment extension header). The unit tests
decode it (no root needed); benchmarks/pcapdecode.py times the decoders on it.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))

from natns.kernel.probe import send  # noqa: E402
from natns.verify.capture import Capture  # noqa: E402
from tests.integration.v6_tools import FAR6, chain6, ip  # noqa: E402

FAR4 = "203.0.113.114"
OUT = os.path.join(os.path.dirname(__file__), "capture_dual.pcap")

with chain6("cap01") as c:
    ip(c.host, "addr", "add", "192.0.2.2/24", "dev", "eth0")
    ip(c.router, "addr", "add", "192.0.2.1/24", "dev", "eth1")
    ip(c.router, "addr", "add", "198.51.100.116/24", "dev", "eth0")
    ip(c.inet, "addr", "add", "198.51.100.1/24", "dev", "eth0")
    ip(c.inet, "addr", "add", f"{FAR4}/32", "dev", "lo")
    ip(c.host, "route", "add", "default", "via", "192.0.2.1")
    ip(c.router, "route", "add", "default", "via", "198.51.100.1")
    ip(c.inet, "route", "add", "192.0.2.0/24", "via", "198.51.100.116")
    subprocess = __import__("subprocess")
    subprocess.run(["ip", "netns", "exec", c.router, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
    ip(c.router, "link", "set", "eth0", "mtu", "1280")
    ip(c.inet, "link", "set", "eth0", "mtu", "1280")
    with Capture([(c.router, "eth1")], bpf="", pcap_dir="/tmp/natns-capture-pcap") as cap:
        for ns, dev in ((c.host, "eth0"), (c.router, "eth1")):  # ARP and neighbour discovery anew
            ip(ns, "neigh", "flush", "dev", dev)
        for far in (FAR4, FAR6):
            send(c.host, far, "icmp", count=3, interval=0.05, respond_in=c.inet)
            send(c.host, far, "icmp", size=1400, df=True)
            send(c.host, far, "tcp", 8080, respond_in=c.inet, size=600)
            send(c.host, far, "udp", 6363, respond_in=c.inet)
            send(c.host, far, "udp", 6364)
        send(c.host, FAR6, "udp", 6365, size=2000)  # fragmented at the source (path MTU now 1280)
        time.sleep(0.2)
    os.replace(cap.pcaps[f"{c.router}:eth1"], OUT)
    os.rmdir("/tmp/natns-capture-pcap")
print(OUT, os.path.getsize(OUT), "bytes")

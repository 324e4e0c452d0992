"""natns's engines: what turns a validated topology into running networks.

The kernel engine (namespaces, veths, bridges, nftables/iptables) is natns's
original one and still lives in natns.desired/plan/apply; `natns.engines.ovn`
is the OVN engine of issue 12 (its sandbox and its northbound mapping).
"""

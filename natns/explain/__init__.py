"""Understand it, from the kernel alone (also on namespaces natns didn't build):
the path a packet takes through namespaces (path), what each firewall hook does
to it (rules), destination NAT (dnat), the host's forward hook (uplink), and on
top `trace` (real packets, netfilter tracing) and `doctor` (causes and fixes)."""

#!/bin/sh
# How tests/unit/data/netfilter_* were captured (as root, in a throw-away namespace):
#   sh tests/unit/data/capture_netfilter.sh NAME
# iptables-nft rules (a natns-style owned chain, a user chain in capitals, a quoted
# comment, a DNAT with a port), a native nft table with a set and a map, and
# iptables-legacy rules beside them; then what each tool prints.
set -eu
ns=$1
out=$(dirname "$0")
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
x() { ip netns exec "$ns" "$@"; }
x iptables-nft -N natns-POSTROUTING -t nat
x iptables-nft -t nat -A POSTROUTING -m comment --comment natns -j natns-POSTROUTING
x iptables-nft -t nat -A natns-POSTROUTING -s 192.0.2.0/24 -o eth0 -m comment --comment "natns snat tenant" -j MASQUERADE
x iptables-nft -t nat -A PREROUTING -d 198.51.100.10/32 -p tcp --dport 8080 -j DNAT --to-destination 192.0.2.11:80
x iptables-nft -N DOCKER-USER
x iptables-nft -A FORWARD -j DOCKER-USER
x iptables-nft -A DOCKER-USER -s 203.0.113.0/24 -m comment --comment 'say "no"' -j DROP
x iptables-nft -A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
x iptables-nft -P FORWARD DROP
x nft -f - <<'NFT'
table inet mine {
	set blocked { type ipv4_addr; elements = { 203.0.113.7, 203.0.113.8 } }
	map portmap { type ipv4_addr : ipv4_addr; elements = { 198.51.100.20 : 192.0.2.20 } }
	chain input { type filter hook input priority filter + 5; policy accept;
		ip saddr @blocked counter drop
		ct state { established, related } accept
	}
	chain pre { type nat hook prerouting priority dstnat; dnat ip to ip daddr map @portmap; }
}
NFT
x iptables-legacy -A INPUT -s 203.0.113.9/32 -j DROP
x iptables-legacy -P OUTPUT DROP
x ping -c1 -W1 127.0.0.1 >/dev/null 2>&1 || true  # nothing to reach: counters stay honest zeros
x iptables-nft-save | grep -v '^#' > "$out/netfilter_iptables_nft_save.txt"
x iptables-nft-save -c | grep -v '^#' > "$out/netfilter_iptables_nft_save_counters.txt"
x nft -j list ruleset > "$out/netfilter_nft_ruleset.json"
x nft -a list ruleset > "$out/netfilter_nft_ruleset.txt"
x iptables-legacy-save | grep -v '^#' > "$out/netfilter_iptables_legacy_save.txt"

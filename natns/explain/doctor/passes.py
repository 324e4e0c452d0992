"""The forward and reply passes: walk the packet's way and call the checks in the kernel's order.

In each namespace: conntrack, prerouting (and destination NAT), routing,
forwarding, rp_filter, the filter hook, postrouting (and source NAT), links
and MTU, the neighbour, duplicate addresses. The reply is walked back through
the NAT points the forward pass found.
"""

from __future__ import annotations

from .. import dnat
from .. import path as pathmod
from ..path import HOST, Hop, Path
from . import checks as ck
from .context import Findings, Flow
from .findings import ST_END, ST_FILTER, ST_POSTROUTING, ST_PREROUTING, ST_ROUTE, NatPoint, finding


def forward(fl: Flow, p: Path, out: Findings) -> tuple[str, list[NatPoint]]:
    """Check every hop of the forward path; returns the source as it arrives and the NAT points.

    A destination NAT on the way (a floating IP, a port forward) changes where the packet
    goes: the rest of `p` is walked again from that namespace towards the new destination.
    """
    snap = fl.snap
    hops = p.hops
    cur_src = hops[0].src if hops and hops[0].src else None
    nat: list[NatPoint] = []
    if cur_src is None:
        cur_src = "::" if fl.v6 else "0.0.0.0"
    i = -1
    while i + 1 < len(hops):
        i += 1
        hop = hops[i]
        if hop.ns == HOST:
            continue
        last = i == len(hops) - 1
        nh = hop.gateway or fl.fdst
        if hop.bridge:
            out.add(ck.check_links(fl, hops, i, "forward", ck.path_mtu(fl, hops)))
            out.add(ck.check_duplicates(fl, hops, i, {nh: "next hop", fl.fdst: "destination", cur_src: "source"},
                                        "forward"))
            continue
        out.add(ck.check_tools(fl, hop.ns, i, "forward"))
        out.add(ck.check_conntrack(fl, hop.ns, i, "forward"))
        ct: frozenset = frozenset()
        if i > 0:
            out.add(ck.check_ingress(fl, hop.ns, fl.packet(cur_src, fl.fdst, hop.in_iface, None, False), hop, i,
                                     "forward"))
            out.add(ck.check_hook(fl, hop.ns, "prerouting", fl.packet(cur_src, fl.fdst, hop.in_iface, None, False),
                                  i, "forward", ST_PREROUTING))
        rw = dnat.rewrite(snap.firewall(hop.ns), i == 0, cur_src, fl.fdst, fl.proto, fl.fport, hop.in_iface)
        # the flow's conntrack entry here has the packet as it arrives for its original tuple
        want = ck.NatWant(cur_src, fl.fdst, fl.fport if fl.proto != "icmp" else None)
        if i > 0:
            want.dnat_unsure = ck.dnat_unsure(snap.firewall(hop.ns), cur_src, fl.fdst, fl.proto, fl.fport,
                                              hop.in_iface)
            want.dnat_known = not want.dnat_unsure
            if rw is not None:
                want.dnat = (rw.addr, rw.port if fl.proto != "icmp" else None)
                want.dnat_rule = _rule_of(snap.firewall(hop.ns), rw.rule)
        if rw is not None:
            nat.append(NatPoint(hop.ns, i, "dnat", fl.fdst, rw.addr, rw.rule, fl.fport, rw.port))
            fl.fdst, fl.fport = rw.addr, rw.port
            ct = frozenset({"dnat"})
            dnat.splice(p, i, rw.addr, cur_src, snapshot=snap)
            hops = p.hops
            hop = hops[i]
            last = i == len(hops) - 1
            nh = hop.gateway or fl.fdst
            out.add(ck.check_bridge_hairpin(fl, hop, i, "forward"))
        role = "source" if i == 0 else ("dest" if hop.local else "forward")
        if last and not p.complete and p.stop_code in ("no-route", "unreachable-route"):
            prev = fl.prev_hop_address(hops, i) if i > 0 else None
            out.add(ck.check_no_route(fl, hop, i, fl.fdst, "forward", p.stop_code, prev, p))
            if role == "forward":
                out.add(ck.check_forwarding(fl, hop.ns, hop.in_iface, i, "forward"))
            break
        if role == "forward":
            out.add(ck.check_forwarding(fl, hop.ns, hop.in_iface, i, "forward"))
        if role != "source":
            out.add(ck.check_rp_filter(fl, hop.ns, hop.in_iface, cur_src, i, "forward"))
        pkt = fl.packet(cur_src, fl.fdst, hop.in_iface, hop.out_iface, False, ct_status=ct)
        if role == "dest":
            out.add(ck.check_hook(fl, hop.ns, "input", pkt, i, "forward", ST_FILTER))
            if i > 0:  # delivered here: only its destination NAT is judged
                want.snat_known = False
                out.add(ck.check_stale_conntrack(fl, hop.ns, i, want, ST_PREROUTING))
            continue
        out.add(ck.check_hook(fl, hop.ns, "forward" if role == "forward" else "output", pkt, i, "forward", ST_FILTER))
        out.add(ck.check_hook(fl, hop.ns, "postrouting", pkt, i, "forward", ST_POSTROUTING))
        sn = snap.firewall(hop.ns).snat(pkt)
        if role == "forward":
            want.snat, want.snat_known = ck.snat_want(fl, hop.ns, pkt, sn, hop.out_iface, hop.gateway or fl.fdst)
            want.snat_kind = sn.verdict if sn.verdict in ("masquerade", "snat") else None
            want.snat_rule = sn.rule if want.snat_kind else None
            want.snat_unsure = list(sn.maybe)
            out.add(ck.check_stale_conntrack(fl, hop.ns, i, want, ST_POSTROUTING))
        if sn.verdict in ("masquerade", "snat"):
            after = (sn.rule.nat_target(pkt) if sn.verdict == "snat"
                     else fl.address_towards(hop.ns, hop.out_iface, hop.gateway or fl.fdst))
            if after and after != cur_src:
                nat.append(NatPoint(hop.ns, i, sn.verdict, cur_src, after, sn.rule.text))
                cur_src = after
        out.add(ck.check_links(fl, hops, i, "forward", ck.path_mtu(fl, hops)))
        out.add(ck.check_neighbour(fl, hops, i, nh, "forward", p if last and not p.complete else None,
                                   fl.packet(cur_src, fl.fdst, None, None, False)))
        out.add(ck.check_duplicates(fl, hops, i, {nh: "next hop", fl.fdst: "destination", cur_src: "source"},
                                    "forward"))
        if fl.v6:
            out.add(ck.check_dad(fl, hops, i, {nh: "next hop", fl.fdst: "destination", cur_src: "source"},
                                 "forward"))
            if role == "forward":
                out.add(ck.check_ptb(fl, hops, i, cur_src))
    if p.complete:
        out.add(ck.check_path_mtu(fl, hops, ck.path_mtu(fl, hops)))
    if p.stop_code == "host" and hops and hops[-1].ns == HOST:
        out.add(ck.check_host(fl, len(hops) - 1, hops[-1], cur_src))
    if not p.complete and p.stop_code not in ("no-route", "unreachable-route", "no-neighbour"):
        last_ns = next((h.ns for h in reversed(hops) if h.ns != HOST), fl.src_ns)
        out.add(finding("path-" + (p.stop_code or "unknown"), last_ns,
                        f"the path cannot be followed further: {p.stop}", {"stop": p.stop},
                        direction="forward", hop=len(hops) - 1, stage=ST_END))
    return cur_src, nat


def _rule_of(fw, text: str):
    """The rule of `fw` whose text is `text` (explain.dnat.Rewrite names its rule by text)."""
    return next((r for c in fw.chains.values() for r in c.rules if r.text == text), None)


def reply(fl: Flow, p: Path, arriving_src: str, nat: list[NatPoint], out: Findings
          ) -> tuple[list[Hop], bool, str | None]:
    """Follow and check the reply from the destination back to the source."""
    snap = fl.snap
    dest = p.hops[-1]
    hops: list[Hop] = []
    # source NAT changes where the reply goes (back to the address before it); destination
    # NAT changes only the reply's source (back to the address the packet was sent to)
    stack = [pt for pt in nat if pt.kind != "dnat"]
    start_ns, start_iif, target = dest.ns, None, arriving_src
    final: Path | None = None
    for _ in range(len(stack) + 1):
        rp = pathmod.walk(start_ns, target, in_iface=start_iif, src=fl.fdst if start_iif else None, snapshot=snap)
        k = None
        if stack:
            for j, h in enumerate(rp.hops):
                if h.ns == stack[-1].ns and h.in_iface is not None and not (j == 0 and start_iif):
                    k = j
                    break
        if k is not None:
            hops += rp.hops[:k]
            pt = stack.pop()
            start_ns, start_iif, target = pt.ns, rp.hops[k].in_iface, pt.before
            continue
        hops += rp.hops
        final = rp
        break
    if final is None:
        return hops, False, "reply path too long"
    # checks along the reply
    nat_before = {pt.ns: pt for pt in nat if pt.kind != "dnat"}
    dnat_at = {pt.ns: pt for pt in nat if pt.kind == "dnat"}
    cur_dst = arriving_src
    cur_src, cur_port = fl.fdst, fl.fport
    for i, hop in enumerate(hops):
        if hop.ns == HOST:
            continue
        if hop.ns in nat_before and i > 0 and not hop.bridge:
            cur_dst = nat_before[hop.ns].before
        last = i == len(hops) - 1
        nh = hop.gateway or cur_dst
        if hop.bridge:
            out.add(ck.check_links(fl, hops, i, "reply"))
            continue
        out.add(ck.check_tools(fl, hop.ns, i, "reply"))
        out.add(ck.check_conntrack(fl, hop.ns, i, "reply"))
        role = "source" if i == 0 else ("dest" if hop.local else "forward")
        if last and not final.complete and final.stop_code in ("no-route", "unreachable-route"):
            code = "no-return-route"
            if i == 0 and not nat and len(p.hops) > 1:
                out.add((ck.check_no_return_route6 if fl.v6 else ck.check_no_snat)(fl, p, hop, cur_dst))
            else:
                fwd_i = next((j for j, h in enumerate(p.hops) if h.ns == hop.ns and not h.bridge), None)
                prev = fl.prev_hop_address(p.hops, fwd_i) if fwd_i else None
                out.add(ck.check_no_route(fl, hop, i, cur_dst, "reply", code, prev, final))
            break
        if role == "forward":
            out.add(ck.check_forwarding(fl, hop.ns, hop.in_iface, i, "reply"))
        if role != "source":
            out.add(ck.check_rp_filter(fl, hop.ns, hop.in_iface, cur_src, i, "reply"))
        status = {"snat"} if hop.ns in nat_before else set()
        if hop.ns in dnat_at and not hop.bridge:
            status.add("dnat")
        pkt = fl.packet(cur_src, cur_dst, hop.in_iface, hop.out_iface, True, port=cur_port,
                        ct_status=frozenset(status))
        if i > 0:
            out.add(ck.check_ingress(fl, hop.ns, pkt, hop, i, "reply"))
        if hop.ns in dnat_at and not hop.bridge:
            # leaving the namespace that translated the destination, the reply's source is
            # the address (and port) the packet was sent to
            pt = dnat_at.pop(hop.ns)
            cur_src, cur_port = pt.before, pt.port_before
        if role == "dest":
            out.add(ck.check_hook(fl, hop.ns, "input", pkt, i, "reply", ST_FILTER))
            continue
        out.add(ck.check_hook(fl, hop.ns, "forward" if role == "forward" else "output", pkt, i, "reply", ST_FILTER))
        out.add(ck.check_links(fl, hops, i, "reply"))
        out.add(ck.check_neighbour(fl, hops, i, nh, "reply", final if last and not final.complete else None))
    complete = final.complete and bool(hops) and hops[-1].ns == fl.src_ns
    stop = final.stop
    if final.complete and hops and hops[-1].ns != fl.src_ns:
        stop = f"the reply is delivered to {hops[-1].ns}, not {fl.src_ns}"
        out.add(finding(
            "reply-misdelivered", hops[-1].ns,
            f"the reply to {cur_dst} goes to {hops[-1].ns}, which also holds {cur_dst}, instead of {fl.src_ns}",
            {"reply path": " > ".join(h.ns for h in hops)},
            direction="reply", hop=len(hops) - 1, stage=ST_ROUTE))
    return hops, complete, stop

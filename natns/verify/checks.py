"""Reachability checks: the `checks:` list of a topology, run as real probes.

Each check is one probe (`probe.probe`) from a lab namespace and what it must
show: reachable or blocked, and for a reachable check optionally the source
address the far end must see (proof that the router translated it). A check
*holds* when the probe's outcome is what it expects; `run_checks` runs them
all, in order, and never stops at the first failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..privileges import require_root
from ..topology import Check, Topology
from .endpoints import require_up
from .probe import ProbeResult, probe


@dataclass
class CheckResult:
    """One check, the probe it ran, and whether it held (and if not, why)."""

    index: int
    check: Check
    probe: ProbeResult
    holds: bool
    problem: str | None
    label: str = "checks"  # "default": one of `default_checks` (the file has no `checks:`)

    @property
    def name(self) -> str:
        """``checks[0] tenant1 -> 203.0.113.114 icmp reachable ...``: how failures are named."""
        return f"{self.label}[{self.index}] {self.check.describe()}"

    def to_json(self) -> dict:
        c = self.check
        return {
            "index": self.index, "name": self.name, "from": c.from_, "to": str(c.to),
            "protocol": c.protocol, "port": c.port, "expect": c.expect,
            "source": str(c.source) if c.source else None,
            "holds": self.holds, "problem": self.problem, "probe": self.probe.to_json(),
        }


@dataclass
class CheckReport:
    """All checks of a lab."""

    lab: str
    results: list[CheckResult]

    @property
    def ok(self) -> bool:
        return all(r.holds for r in self.results)

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if not r.holds]

    def to_json(self) -> dict:
        return {"lab": self.lab, "ok": self.ok, "total": len(self.results),
                "failed": [r.index for r in self.failed], "checks": [r.to_json() for r in self.results]}


def judge(check: Check, result: ProbeResult) -> str | None:
    """Why `result` does not satisfy `check`, or None when it holds."""
    if check.expect == "blocked":
        if result.ok:
            seen = f"; {result.far_end} saw source {result.source_seen}" if result.source_seen else ""
            return f"expected blocked, but it was reachable in {result.latency_ms} ms{seen}"
        return None
    if not result.ok:
        return f"expected reachable: {result.error or 'no answer'}"
    if check.source is not None:
        want = str(check.source)
        if result.source_seen is None:
            where = (f"{result.far_end} did not see the probe" if result.far_end
                     else result.far_end_note
                     or f"{result.to} is not a namespace of the lab, so natns cannot see the source there")
            return f"expected source {want}: {where}"
        if result.source_seen != want:
            return f"expected source {want}, but {result.far_end} saw {result.source_seen}"
    return None


def default_checks(t: Topology) -> list[Check]:
    """What `natns check` runs on a file without `checks:`: each lab host to each internet host
    of its families (ICMP echo, reachable).

    An IPv4 host checks the internet's IPv4 hosts, an IPv6 host (``address6``)
    its IPv6 hosts; a v6 check also names the source the far end must see: the
    host's own address when its router routes the prefix (``snat6: off``), the
    router's external IPv6 address with NAT66 (``snat6: masquerade``). Empty
    without an internet or its hosts.
    """
    if t.internet is None:
        return []
    out: list[Check] = []
    for n in t.networks:
        r = t.router(n.router)
        if r.external.uplink != "internet":
            continue
        for h in n.hosts:
            for far in t.internet.hosts:
                if far.version == 4 and h.address is not None:
                    out.append(Check.model_validate({"from": h.namespace, "to": str(far)}))
                elif far.version == 6 and h.address6 is not None and n.cidr6 is not None:
                    seen = h.address6 if r.snat6 == "off" else (
                        r.external.address6.ip if r.external.address6 is not None else None)
                    out.append(Check.model_validate({"from": h.namespace, "to": str(far),
                                                     **({"source": str(seen)} if seen else {})}))
    return out


def run_check(t: Topology, index: int, timeout: float = 1.0, check: Check | None = None) -> CheckResult:
    """Run check number `index` of topology `t` (or `check`, numbered `index`)."""
    c = check if check is not None else t.checks[index]
    result = probe(t, c.from_, str(c.to), proto=c.protocol, port=c.port, timeout=timeout)
    problem = judge(c, result)
    return CheckResult(index, c, result, problem is None, problem)


def run_checks(t: Topology, timeout: float = 1.0, checks: list[Check] | None = None) -> CheckReport:
    """Run every check of `t` (or `checks`, e.g. `default_checks`), in order; the lab must be
    up (UserError otherwise)."""
    require_root("check")
    todo = t.checks if checks is None else checks
    for c in todo:
        require_up(t, c.from_)
    results = [run_check(t, i, timeout, c) for i, c in enumerate(todo)]
    if checks is not None and checks is not t.checks:
        for r in results:
            r.label = "default"
    return CheckReport(t.name, results)

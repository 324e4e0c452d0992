"""The changes natns makes to the kernel, one small class each.

A step is a frozen dataclass: what to change (its fields), why (`reason`:
missing, drift, stale, adopt, mapping, restore, teardown), where it stands in
the order `up` runs things (`phase`, from the class: `PHASE_ORDER`), the
command a person would type for the same change (`command()`, what `natns
plan` prints) and how natns makes it (`run(handles)`, what `natns up` does).
`apply` is a loop over `run`; nothing matches action strings.

`action` is the step's kind as a word (``create_netns``, ``load_firewall``,
...): it names the step in `plan --json`, the progress bar and the test hook
(natns/testing/hooks.py), and is nothing the code dispatches on.

`ns` is the namespace the step runs in (None: the one natns runs in);
`target` the object it changes (a link, an address's link, a route's
destination, a sysctl, a backend's name).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from .errors import KernelError
from .kernel import link, netns, nsexec, procs, route, sysctl
from .state import RouteState

if TYPE_CHECKING:  # pragma: no cover
    from .apply import Handles
    from .firewall.base import FirewallBackend, Ruleset

#: A field left at this value is not changed by `ConfigureLink` (master=None means "nomaster").
KEEP: Any = False


def _q(text: str) -> str:
    return shlex.quote(text)


def _exec(ns: str | None) -> str:
    """``ip netns exec NS `` for a command that isn't ``ip`` (empty in the host)."""
    return f"ip netns exec {ns} " if ns else ""


def _n(ns: str | None) -> str:
    """``-n NS `` for an ``ip`` command (empty in the host)."""
    return f"-n {ns} " if ns else ""


@dataclass(frozen=True)
class Step:
    """One change to the kernel. Subclasses say what; see the module's doc."""

    action: ClassVar[str] = ""
    reason: str = field(default="missing", kw_only=True)

    @property
    def phase(self) -> int:
        """Where this kind of step runs in `up`: its place in PHASE_ORDER."""
        return _PHASE[type(self)]

    @property
    def ns(self) -> str | None:  # overridden by a field where the step runs in a namespace
        return None

    @property
    def target(self) -> str:
        raise NotImplementedError

    def command(self) -> str:
        """The equivalent command a person would type (for `plan` and learning)."""
        raise NotImplementedError

    def run(self, h: "Handles") -> None:
        """Carry the step out (netlink handles by namespace in `h`)."""
        raise NotImplementedError

    def to_json(self) -> dict:
        """A JSON-ready description of the step."""
        return {
            "action": self.action,
            "namespace": self.ns,
            "target": self.target,
            "reason": self.reason,
            "command": self.command(),
        }


# ----------------------------------------------------------------------------- namespaces


@dataclass(frozen=True)
class DeleteNetns(Step):
    """Delete namespace `name` (and with it everything in it)."""

    action: ClassVar[str] = "delete_netns"
    name: str

    @property
    def target(self) -> str:
        return self.name

    def command(self) -> str:
        return f"ip netns del {self.name}"

    def run(self, h: "Handles") -> None:
        procs.stop_in_netns(self.name)  # what runs inside would live on in an orphaned namespace
        h.drop(self.name)
        netns.remove(self.name)


@dataclass(frozen=True)
class CreateNetns(Step):
    """Create namespace `name`, marked with `mark` (the alias of its `lo`) before it appears."""

    action: ClassVar[str] = "create_netns"
    name: str
    mark: str
    #: Sysctls written before any link is made (IPv6 labs: no duplicate address detection
    #: on the links to come, so their addresses are usable when `up` returns).
    sysctls: tuple[tuple[str, str], ...] = ()

    @property
    def target(self) -> str:
        return self.name

    def command(self) -> str:
        first = "".join(f" && ip netns exec {self.name} sysctl -qw {k}={v}" for k, v in self.sysctls)
        return f"ip netns add {self.name}{first} && ip -n {self.name} link set lo alias {_q(self.mark)} up"

    def run(self, h: "Handles") -> None:
        handle = h.create_netns(self.name, self.mark)
        if self.sysctls:
            sysctl.write(self.name, dict(self.sysctls))
        link.configure(handle, "lo", alias=self.mark, up=True)


@dataclass(frozen=True)
class SetMark(Step):
    """Write namespace `ns`'s mark on its `lo` (and bring `lo` up)."""

    action: ClassVar[str] = "set_mark"
    namespace: str
    mark: str

    @property
    def ns(self) -> str | None:
        return self.namespace

    @property
    def target(self) -> str:
        return "lo"

    def command(self) -> str:
        return f"ip {_n(self.ns)}link set lo alias {_q(self.mark)} up"

    def run(self, h: "Handles") -> None:
        link.configure(h[self.ns], "lo", alias=self.mark, up=True)


# ----------------------------------------------------------------------------- links


@dataclass(frozen=True)
class _LinkStep(Step):
    namespace: str | None
    name: str

    @property
    def ns(self) -> str | None:
        return self.namespace

    @property
    def target(self) -> str:
        return self.name


@dataclass(frozen=True)
class DeleteLink(_LinkStep):
    """Delete link `name` in `ns` (a veth takes its other end along)."""

    action: ClassVar[str] = "delete_link"

    def command(self) -> str:
        return f"ip {_n(self.ns)}link del {self.name}"

    def run(self, h: "Handles") -> None:
        link.delete(h[self.ns], self.name)


@dataclass(frozen=True)
class CreateBridge(_LinkStep):
    """Create bridge `name` in `ns` (configured by a later `ConfigureLink`)."""

    action: ClassVar[str] = "create_bridge"

    def command(self) -> str:
        return f"ip {_n(self.ns)}link add {self.name} type bridge"

    def run(self, h: "Handles") -> None:
        link.create_bridge(h[self.ns], self.name)


@dataclass(frozen=True)
class CreateVeth(_LinkStep):
    """Create veth pair `name` in `ns` <-> `peer_name` in `peer_ns` (None: the host), one request."""

    action: ClassVar[str] = "create_veth"
    peer_ns: str | None
    peer_name: str

    def command(self) -> str:
        where = f" netns {self.peer_ns}" if self.peer_ns else ""
        return f"ip {_n(self.ns)}link add {self.name} type veth peer name {self.peer_name}{where}"

    def run(self, h: "Handles") -> None:
        link.create_veth(h[self.ns], self.name, self.peer_ns, self.peer_name)


@dataclass(frozen=True)
class ConfigureLink(_LinkStep):
    """Set what differs of link `name`: alias (the mark), bridge master, MTU, up/down.

    A field left at its default is left alone: `alias` None, `master` KEEP
    (None: take the link off its bridge), `mtu` None, `up` None.
    """

    action: ClassVar[str] = "configure_link"
    alias: str | None = None
    master: str | None = KEEP
    mtu: int | None = None
    up: bool | None = None

    def options(self) -> dict:
        """What this step changes: {"alias", "master", "mtu", "up"} (only those it sets)."""
        out: dict = {}
        if self.alias is not None:
            out["alias"] = self.alias
        if self.master is not KEEP:
            out["master"] = self.master
        if self.mtu is not None:
            out["mtu"] = self.mtu
        if self.up is not None:
            out["up"] = self.up
        return out

    def command(self) -> str:
        parts = []
        if self.alias is not None:
            parts.append(f"alias {_q(self.alias)}")
        if self.master is not KEEP:
            parts.append(f"master {self.master}" if self.master else "nomaster")
        if self.mtu is not None:
            parts.append(f"mtu {self.mtu}")
        if self.up is not None:
            parts.append("up" if self.up else "down")
        return f"ip {_n(self.ns)}link set {self.name} " + " ".join(parts)

    def run(self, h: "Handles") -> None:
        link.configure(h[self.ns], self.name, alias=self.alias, master=self.master, mtu=self.mtu, up=self.up)


# ----------------------------------------------------------------------------- addresses, routes, sysctls


@dataclass(frozen=True)
class _AddressStep(Step):
    namespace: str | None
    dev: str
    address: str  # "192.0.2.3/24"

    @property
    def ns(self) -> str | None:
        return self.namespace

    @property
    def target(self) -> str:
        return self.dev


@dataclass(frozen=True)
class DelAddress(_AddressStep):
    action: ClassVar[str] = "del_address"

    def command(self) -> str:
        return f"ip {_n(self.ns)}addr del {self.address} dev {self.dev}"

    def run(self, h: "Handles") -> None:
        link.del_address(h[self.ns], self.dev, self.address)


@dataclass(frozen=True)
class AddAddress(_AddressStep):
    action: ClassVar[str] = "add_address"

    def command(self) -> str:
        nodad = " nodad" if ":" in self.address else ""  # IPv6: usable at once (see rtnl.IFA_F_NODAD)
        return f"ip {_n(self.ns)}addr add {self.address} dev {self.dev}{nodad}"

    def run(self, h: "Handles") -> None:
        link.add_address(h[self.ns], self.dev, self.address)


@dataclass(frozen=True)
class _RouteStep(Step):
    namespace: str | None
    route: RouteState
    verb: ClassVar[str] = ""

    @property
    def ns(self) -> str | None:
        return self.namespace

    @property
    def target(self) -> str:
        return self.route.dst

    def command(self) -> str:
        r = self.route
        dst = "default" if r.dst in ("0.0.0.0/0", "::/0") else r.dst
        via = f" via {r.gateway}" if r.gateway else ""
        dev = f" dev {r.dev}" if r.dev else ""
        six = "-6 " if ":" in r.dst else ""
        return f"ip {six}{_n(self.ns)}route {self.verb} {dst}{via}{dev} proto 233"


@dataclass(frozen=True)
class DelRoute(_RouteStep):
    action: ClassVar[str] = "del_route"
    verb: ClassVar[str] = "del"

    def run(self, h: "Handles") -> None:
        route.delete(h[self.ns], self.route)


@dataclass(frozen=True)
class AddRoute(_RouteStep):
    action: ClassVar[str] = "add_route"
    verb: ClassVar[str] = "replace"

    def run(self, h: "Handles") -> None:
        route.add(h[self.ns], self.route)


@dataclass(frozen=True)
class SetSysctl(Step):
    """Write sysctl `key` = `value` in `ns`."""

    action: ClassVar[str] = "set_sysctl"
    namespace: str | None
    key: str
    value: str

    @property
    def ns(self) -> str | None:
        return self.namespace

    @property
    def target(self) -> str:
        return self.key

    def command(self) -> str:
        return f"{_exec(self.ns)}sysctl -w {self.key}={self.value}"

    def run(self, h: "Handles") -> None:
        sysctl.write(self.ns, {self.key: self.value})


# ----------------------------------------------------------------------------- firewall


@dataclass(frozen=True)
class _FirewallStep(Step):
    namespace: str | None
    backend: "FirewallBackend" = field(compare=False)

    @property
    def ns(self) -> str | None:
        return self.namespace

    @property
    def target(self) -> str:
        return self.backend.name


@dataclass(frozen=True)
class RemoveFirewall(_FirewallStep):
    """Remove natns's rules of `scope` (its table, its chains) in `ns`, nothing else."""

    action: ClassVar[str] = "remove_firewall"
    scope: str = "natns"

    def command(self) -> str:
        return _exec(self.ns) + (f"nft delete table ip {self.scope}" if self.backend.name == "nftables"
                                 else f"iptables-restore --noflush  # delete chains {self.scope}-*")

    def run(self, h: "Handles") -> None:
        self.backend.remove(self.ns, self.scope)


@dataclass(frozen=True)
class LoadFirewall(_FirewallStep):
    """Replace natns's rules in `ns` with `ruleset`, in one transaction."""

    action: ClassVar[str] = "load_firewall"
    ruleset: "Ruleset"

    def command(self) -> str:
        tool = "nft -f -" if self.backend.name == "nftables" else "iptables-restore --noflush"
        return f"{_exec(self.ns)}{tool}  # {self.target}"

    def run(self, h: "Handles") -> None:
        self.backend.load(self.ns, self.ruleset)


@dataclass(frozen=True)
class UpdateFirewall(_FirewallStep):
    """Add and delete map and set elements only (one transaction; rules and counters stay).

    `changes`: {map or set: (added (key, value) pairs, removed pairs)}.
    """

    action: ClassVar[str] = "update_firewall"
    scope: str = "natns"
    changes: Mapping[str, tuple[tuple, tuple]] = field(default_factory=dict)

    def command(self) -> str:
        what = ", ".join(f"{m} +{len(add)} -{len(rem)}" for m, (add, rem) in sorted(self.changes.items()))
        return f"{_exec(self.ns)}nft -f -  # add/delete elements: {what}"

    def run(self, h: "Handles") -> None:
        self.backend.update_elements(self.ns, self.scope, dict(self.changes))


@dataclass(frozen=True)
class FlushConntrack(Step):
    """Forget the conntrack entries of a removed mapping, so it stops working at once.

    `kind` "fip" (`outside` an address) or "tcp"/"udp" (`outside` "addr:port").
    """

    action: ClassVar[str] = "flush_conntrack"
    namespace: str | None
    kind: str
    outside: str

    @property
    def ns(self) -> str | None:
        return self.namespace

    @property
    def target(self) -> str:
        return self.outside

    def command(self) -> str:
        pre = _exec(self.ns)
        if self.kind == "fip":
            return f"{pre}conntrack -D --orig-dst {self.outside}; {pre}conntrack -D --reply-dst {self.outside}"
        addr, port = self.outside.split(":")
        return f"{pre}conntrack -D -p {self.kind} --orig-dst {addr} --dport {port}"

    def run(self, h: "Handles") -> None:
        conntrack_forget(self.ns, self.kind, self.outside)


@dataclass(frozen=True)
class ForgetConntrack(Step):
    """Delete the conntrack entries of router `namespace` that its rules (`nat`, a
    `firewall.ctselect.NatIntent`) translate otherwise than the entries do: flows that
    started before SNAT existed or moved, before a floating IP or port forward was given.
    Read and deleted over ctnetlink; noted in the rules until done (see ClearFlushNotes)."""

    action: ClassVar[str] = "forget_conntrack"
    namespace: str | None
    nat: Any  # firewall.ctselect.NatIntent

    @property
    def ns(self) -> str | None:
        return self.namespace

    @property
    def target(self) -> str:
        return self.nat.external_iface

    def command(self) -> str:
        from .firewall.ctselect import commands

        return "; ".join(commands(self.nat, self.ns))

    def run(self, h: "Handles") -> None:
        forget_stale(self.ns, self.nat)


@dataclass(frozen=True)
class ClearFlushNotes(Step):
    """A load or an element update (`inner`) after the conntrack flushes: it removes their notes."""

    action: ClassVar[str] = "clear_flush_notes"
    inner: LoadFirewall | UpdateFirewall

    @property
    def ns(self) -> str | None:
        return self.inner.ns

    @property
    def target(self) -> str:
        return self.inner.target

    def command(self) -> str:
        return f"{self.inner.command()} (the flushes are done: remove their notes)"

    def run(self, h: "Handles") -> None:
        self.inner.run(h)


#: The order `up` runs the kinds of steps in (stable inside a kind).
PHASE_ORDER: tuple[type[Step], ...] = (
    DeleteNetns, CreateNetns, SetMark, DeleteLink, CreateBridge, CreateVeth, ConfigureLink,
    DelAddress, AddAddress, DelRoute, AddRoute, SetSysctl,
    RemoveFirewall, LoadFirewall, UpdateFirewall, FlushConntrack, ForgetConntrack, ClearFlushNotes,
)
_PHASE = {cls: i for i, cls in enumerate(PHASE_ORDER)}
#: Step kind by its action word.
BY_ACTION: dict[str, type[Step]] = {cls.action: cls for cls in PHASE_ORDER}

#: Steps that change the firewall (for tallies: benchmarks, tests).
FIREWALL_STEPS = (RemoveFirewall, LoadFirewall, UpdateFirewall, ClearFlushNotes)


def conntrack_forget(ns: str | None, kind: str, outside: str) -> None:
    """Delete the conntrack entries that use a removed mapping, so it stops working at once.

    A floating IP: entries whose original destination (inbound) or reply
    destination (outbound, translated to it) is the floating address. A port
    forward: entries to that address and port.
    """
    if kind == "fip":
        filters = [["--orig-dst", outside], ["--reply-dst", outside]]
    else:
        addr, port = outside.split(":")
        filters = [["-p", kind, "--orig-dst", addr, "--dport", port]]
    for f in filters:
        proc = nsexec.run(ns, ["conntrack", "-D", *f], check=False)
        if proc.returncode not in (0, 1):  # 1: nothing matched
            raise KernelError(f"conntrack -D {' '.join(f)}: {proc.stderr.strip()}")


def forget_stale(ns: str | None, nat) -> int:
    """Delete the conntrack entries of `ns` that router rules `nat` (a ctselect.NatIntent)
    translate otherwise than the entries do, read and deleted over ctnetlink; how many."""
    from .firewall import ctselect
    from .kernel import conntrack

    return conntrack.delete(ns, ctselect.stale(nat, conntrack.entries(ns)))

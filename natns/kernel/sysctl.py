"""Per-namespace sysctls under /proc/sys/net.

The kernel resolves /proc/sys/net against the calling thread's network
namespace, so reads and writes run on a thread that entered the namespace.
Keys are written with dots, as `sysctl` takes them: ``net.ipv4.ip_forward``.
"""

from __future__ import annotations

from .nsexec import call_in

#: Sysctls a kernel module provides: absent until the module is loaded (natns loads none).
#: Absent means there is nothing to set: br_netfilter not loaded, the bridge calls no
#: iptables/nftables hook. Written with `sysctl -e` (unknown keys are no error).
MODULE_SYSCTLS = {"net.bridge.bridge-nf-call-iptables": "br_netfilter"}


def _path(key: str) -> str:
    if not key.startswith("net.") or ".." in key or "/" in key:
        raise ValueError(f"not a per-namespace sysctl: {key}")
    return "/proc/sys/" + key.replace(".", "/")


def read(ns: str | None, keys: list[str]) -> dict[str, str | None]:
    """Values of `keys` in namespace `ns` (None for keys the kernel lacks)."""

    def go() -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for k in keys:
            try:
                with open(_path(k)) as fh:
                    out[k] = fh.read().strip()
            except FileNotFoundError:
                out[k] = None
        return out

    return call_in(ns, go)


def write(ns: str | None, values: dict[str, str]) -> None:
    """Set sysctls in namespace `ns` (one of MODULE_SYSCTLS the kernel lacks is skipped)."""

    def go() -> None:
        for k, v in values.items():
            try:
                with open(_path(k), "w") as fh:
                    fh.write(str(v))
            except FileNotFoundError:
                if k not in MODULE_SYSCTLS:
                    raise

    call_in(ns, go)

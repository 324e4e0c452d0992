"""Helpers of the OVN engine's integration tests: the example renamed per run, the CLI,
the sandbox's PIDs, and a teardown that always leaves nothing."""

from __future__ import annotations

import os
import pathlib
import secrets
import subprocess
import sys

import yaml

from natns.engines.ovn import sandbox
from natns.kernel import netns

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "ovn.yaml"


def renamed(uid: str, data: dict | None = None) -> dict:
    """examples/ovn.yaml (or `data`) with the lab and every namespace unique to this run."""
    d = data or yaml.safe_load(EXAMPLE.read_text())
    p = f"o{uid}-"
    names = {d["internet"]["namespace"]: p + d["internet"]["namespace"]}
    d["name"] = f"ovn{uid}"
    d["internet"]["namespace"] = names[next(iter(names))]
    for c in d["ovn"]["sandbox"]["chassis"]:
        c["namespace"] = p + c["name"]
    for n in d["networks"]:
        for h in n["hosts"]:
            names[h["namespace"]] = p + h["namespace"]
            h["namespace"] = p + h["namespace"]
    for c in d.get("checks", []):
        c["from"] = names.get(c["from"], c["from"])
    return d


def uid() -> str:
    from tests.conftest import RUN

    return RUN + secrets.token_hex(1)


def natns(*args: str, ns: str | None = None, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The natns CLI as its own process (inside network namespace `ns` with nsenter)."""
    argv = [sys.executable, "-m", "natns.cli", *args]
    if ns:
        argv = ["nsenter", f"--net=/run/netns/{ns}", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=str(EXAMPLE.parents[1]))


def write(tmp: pathlib.Path, d: dict, name: str = "ovn.yaml") -> str:
    path = tmp / name
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return str(path)


def daemon_pids(lab: str) -> dict[str, int]:
    """'<part>/<daemon>' -> PID of every sandbox daemon running now."""
    out = {}
    root = sandbox.lab_dir(lab)
    for sub in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        d = os.path.join(root, sub)
        names = [f[:-4] for f in os.listdir(d) if f.endswith(".pid")] if os.path.isdir(d) else []
        for name, pid in sandbox.daemon_pids(d, names).items():
            if pid:
                out[f"{sub}/{name}"] = pid
    return out


def nothing_left(lab: str, names: list[str], pids: list[int]) -> list[str]:
    """What a lab left behind: namespaces, processes, its run directory."""
    left = [f"namespace {n}" for n in names if netns.exists(n)]
    left += [f"process {p}" for p in pids if sandbox._alive(p)]
    if os.path.exists(sandbox.lab_dir(lab)):
        left.append(f"run directory {sandbox.lab_dir(lab)}")
    return left


def all_namespaces(d: dict) -> list[str]:
    sb = d["ovn"].get("sandbox")
    out = [d["internet"]["namespace"]] if sb else []
    if sb:
        out += [sb.get("namespace") or f"{d['name']}-ovn"] + [c.get("namespace", c["name"]) for c in sb["chassis"]]
    return out + [h["namespace"] for n in d["networks"] for h in n["hosts"]]

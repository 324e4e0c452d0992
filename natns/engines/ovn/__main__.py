"""By hand (the groundwork's entry point; `natns up/down FILE` run the OVN engine too):

    python -m natns.engines.ovn up FILE      # sandbox, NB rows, hosts plugged and bound
    python -m natns.engines.ovn down LAB     # NB rows (if the NB answers), sandbox, namespaces
"""

from __future__ import annotations

import sys
import time

from ...errors import NatnsError
from ...topology import load
from . import nb, sandbox


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("up", "down"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        if argv[0] == "up":
            t = load(argv[1])
            if t.engine != "ovn" or t.ovn.sandbox is None:
                print(f"{argv[1]}: ovn.sandbox: this entry point runs the sandbox only", file=sys.stderr)
                return 2
            t0 = time.monotonic()
            lo = sandbox.up(t)
            t1 = time.monotonic()
            api = nb.connect(lo.nb_unix)
            try:
                changes = nb.converge(api, t)
            finally:
                nb.close(api)
            sandbox.attach_hosts(t, lo)
            sandbox.wait_bound(t, lo)
            t2 = time.monotonic()
            print(f"sandbox up in {t1 - t0:.2f} s; {len(changes)} NB changes; hosts bound {t2 - t0:.2f} s after start")
            print(f"NB: {lo.nb_unix} (and {lo.nb_tcp} on the underlay)")
        else:
            sandbox.down(argv[1])
    except NatnsError as exc:
        print(f"natns: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

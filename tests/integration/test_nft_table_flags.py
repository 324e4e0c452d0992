"""A table with flags (``flags dormant``) must not corrupt natns's memory.

libnftables 1.0.6 (Debian 12) frees the string of a table's single flag before its
JSON printer reads it, and releases it twice (table_flags_json()). Listed in process
while other threads allocate, that corrupts the heap and glibc aborts the process
("corrupted double-linked list"): it took `make test` down once (the explain tests
build namespaces with dormant tables); even the `nft` program prints a wrong flag
(``"flags": "filter"``) or broken JSON. natns makes such listings from listings
that print no flagged table (nftlib's note). The readers run in a child
interpreter, with a thread allocating beside them, so that a regression fails the
test instead of aborting the suite; without the guard the child aborts or reads
garbage within twenty rounds nearly every time.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from natns.kernel import nsexec

from .reliability_tools import ROOT

pytestmark = pytest.mark.root

DORMANT = """
table ip guard {
    flags dormant
    chain fwd_c { type filter hook forward priority filter; policy drop; }
}
table inet filter {
    chain forward {
        type filter hook forward priority filter; policy accept;
        ct state established,related accept
    }
}
"""

CHILD = textwrap.dedent("""
    import sys, threading
    from natns.firewall import nftables
    from natns.kernel import netfilter, nftlib, nsexec
    ns, rounds = sys.argv[1], int(sys.argv[2])
    assert nftlib.in_process(), "libnftables must be loadable for this test"
    stop = False
    def churn():
        while not stop:
            [bytes(24) for _ in range(100)]
    threading.Thread(target=churn, daemon=True).start()
    def go():
        for _ in range(rounds):
            for what in (("ruleset",), ("tables",), ("table", "ip", "guard"), ("table", "ip", "natns")):
                rs = netfilter.read_nft_list(ns, *what)
                assert rs.error is None, (what, rs.error)
                flags = {(t["family"], t["name"]): t.get("flags") for t in (o["table"] for o in rs.objs if "table" in o)}
                want = {("ip", "guard"): "dormant", ("inet", "filter"): None, ("ip", "natns"): "dormant"}
                assert flags == {k: v for k, v in want.items() if what[0] != "table" or k == ("ip", what[-1])}, (what, flags)
                if what == ("ruleset",):
                    chains = {(c["table"], c["name"]) for c in (o["chain"] for o in rs.objs if "chain" in o)}
                    assert chains == {("guard", "fwd_c"), ("filter", "forward")}, chains
            nftables._list_table(ns, present=nftlib.tables(ns))  # how `up` and `status` read natns's table
            rs = netfilter.read_nft(ns, texts=True)  # doctor's and trace's read
            assert "flags dormant" in rs.listing and ("ip", "guard") in rs.dormant_tables()
    nsexec.call_in(ns, go)
    stop = True
    print("ok")
""")


def test_tables_with_flags_are_listed_without_corrupting_natns(scratch_ns):
    ns = scratch_ns("flags")
    nsexec.run(ns, ["nft", "-f", "-"], input=DORMANT + "table ip natns { flags dormant; }\n")
    proc = subprocess.run([sys.executable, "-c", CHILD, ns, "25"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr[-2000:])


def test_a_listing_without_flags_still_runs_in_process(scratch_ns):
    """The guard costs one table dump, not a program: with no flagged table, nft JSON
    listings stay in natns's process (no `nft` child is started)."""
    ns = scratch_ns("noflags")
    nsexec.run(ns, ["nft", "-f", "-"], input=DORMANT.replace("flags dormant", ""))
    probe = textwrap.dedent("""
        import sys, subprocess
        from natns.kernel import netfilter, nftlib
        started = []
        real = subprocess.Popen.__init__
        def spy(self, args, *a, **kw):
            started.append(list(args))
            real(self, args, *a, **kw)
        subprocess.Popen.__init__ = spy
        assert nftlib.in_process()
        rs = netfilter.read_nft_list(sys.argv[1], "ruleset")
        assert rs.error is None and ("ip", "guard") in rs.tables(), rs.error
        print(sum(1 for a in started if "nft" in a))
    """)
    proc = subprocess.run([sys.executable, "-c", probe, ns], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "0"

"""The OVN engine (issue 12): natns as a client of OVN's northbound DB, as Neutron is.

* `nb`: the pure mapping from a `Topology` to the NB rows natns wants (every row
  marked ``external_ids:natns:lab``), and one-transaction converge/remove via ovsdbapp.
* `sandbox`: OVN run by natns on this machine, one namespace per chassis plus a
  central namespace (NB, SB, northd), the underlay, the internet's uplinks, and the
  lab hosts plugged into their chassis' br-int.

* `engine`: the OVN engine behind `natns plan/up/down/status` and `natns attach`
  (`OvnEngine`, natns.engines.base): the sandbox in parts, the NB diff as steps, status.

`python -m natns.engines.ovn up FILE | down LAB` (the groundwork's entry point) still
drives the sandbox by hand. See docs/ovn.md.

Verify and explain on a running OVN lab (docs/ovn.md, "Verify and explain on OVN"):

* `live`: the running sandbox found from a lab name (marks, run directory, SB/OVS reads);
* `conntrack`: OVS's userspace conntrack on a router's active gateway chassis;
* `trace`: the logical path from ovn-trace, with chassis, the Geneve hop, NAT, the reply;
* `doctor`: the OVN failures on a host's path, each with its fix;
* `capture`: capture points along the path, the underlay included.

natns's verify and explain commands dispatch to these from the CLI for OVN labs.
"""

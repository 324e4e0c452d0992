"""See it work, on a lab described by a topology: where a probe's packets go
(endpoints), probes with the source the far end saw, the checks written in the
file, captures at several points, the router's NAT table, rule counters."""

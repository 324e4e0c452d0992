"""Read-only tools that look at a running lab: probes and captures."""

"""Verify commands: capture, conntrack, probe, check, show (issue: Verify)."""

from __future__ import annotations

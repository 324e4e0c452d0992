"""Explain commands: trace, doctor (issue: Explain)."""

from __future__ import annotations

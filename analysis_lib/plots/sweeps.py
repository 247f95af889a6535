"""Figures of optimizer sweeps: results of the comparison protocol (``analysis_lib.sweep``) and
learning-rate sensitivity."""

from __future__ import annotations

__all__: list[str] = []

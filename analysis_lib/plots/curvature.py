"""Curvature and the edge of stability: spectral densities, top eigenvalues and traces with their
uncertainty, sharpness against the stability threshold."""

from __future__ import annotations

__all__: list[str] = []

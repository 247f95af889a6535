"""Figures of the flatness of the minima that each optimizer finds (``analysis_lib.sharpness``)."""

from __future__ import annotations

__all__: list[str] = []

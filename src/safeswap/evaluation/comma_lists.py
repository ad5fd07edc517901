"""Splitting an option's comma-separated values, as the eval and report commands take them."""

from __future__ import annotations


def split_commas(values: str | None) -> list[str]:
    """'ko, sw,,te' -> ['ko', 'sw', 'te']; None or blanks -> []."""
    return [v.strip() for v in (values or "").split(",") if v.strip()]

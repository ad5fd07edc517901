"""Merge methods by name. Adding a method is adding a class and one line here."""

from __future__ import annotations

from safeswap.errors import SafeswapError
from safeswap.methods.adaptive import Adaptive
from safeswap.methods.base import MergeMethod

METHODS: dict[str, type[MergeMethod]] = {
    Adaptive.name: Adaptive,
}


def get_method(name: str) -> MergeMethod:
    try:
        return METHODS[name]()
    except KeyError:
        raise SafeswapError(f"unknown merge method {name!r}; choose one of {', '.join(METHODS)}") from None

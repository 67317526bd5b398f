"""One name per method: the registry every layer looks methods up in.

Each method module registers itself with one explicit call at its bottom; `methods/__init__.py`
imports them all, so importing `tailorlm.methods` fills the registry.
"""

from __future__ import annotations

from tailorlm.errors import TailorError
from tailorlm.methods.contract import MethodSpec

METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    if spec.name in METHODS:
        raise ValueError(f"method {spec.name!r} registered twice")
    METHODS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise TailorError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]

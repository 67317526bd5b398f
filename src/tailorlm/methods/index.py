"""One name per method: the index every layer looks methods up in ("registry" is the adapter
registry, registry/).

Each method module registers itself with one explicit call at its bottom; `methods/__init__.py`
imports them all, so importing `tailorlm.methods` fills the index.

A hybrid is named by joining two registered names, the weight-side method first:
`get_method("lora+soft_prompt")` builds its spec from the two (methods/hybrid.py); it is not
registered, so `METHODS` lists only the single methods.
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
    if "+" in name:
        from tailorlm.methods.hybrid import hybrid_spec  # it builds on this module

        return hybrid_spec(name)
    if name not in METHODS:
        raise TailorError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}, "
                          f"or a hybrid WEIGHT+INPUT such as lora+soft_prompt")
    return METHODS[name]

"""The adapter registry: versions, aliases with history, rollback, lineage (see registry.py)."""

from tailorlm.registry.comparison import register_comparison
from tailorlm.registry.names import Ref, parse_ref
from tailorlm.registry.registry import Registry, Version

__all__ = ["Ref", "Registry", "Version", "parse_ref", "register_comparison"]

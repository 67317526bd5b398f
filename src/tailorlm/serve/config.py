"""The server's limits, one field per flag of `tailor serve` (defaults in docs/serving.md)."""

from __future__ import annotations

from dataclasses import dataclass

from tailorlm.errors import TailorError


@dataclass
class ServeConfig:
    """The server's limits; each flag of `tailor serve` is one field."""

    max_body_mb: float = 2.0
    max_tokens_limit: int = 1024
    max_n: int = 16
    max_queue: int = 64
    max_batch: int = 32
    request_timeout_s: float = 120.0
    max_resident_mb: float = 2048.0
    log_prompts: bool = False

    def __post_init__(self):
        for name in ("max_body_mb", "max_tokens_limit", "max_n", "max_queue", "max_batch",
                     "request_timeout_s", "max_resident_mb"):
            if not getattr(self, name) > 0:
                raise TailorError(f"--{name.replace('_', '-')} must be positive, not "
                                  f"{getattr(self, name)!r}")

"""The one place `serve` reaches the inference engine: the mixed-batch interface of SERVE.md.

    BatchEngine(base) .load(dir, name) -> Served   .unload(served)   .base_served
                      .classify([ClassifyRequest]) -> [ClassifyResult]
                      .generate([GenerateRequest]) -> [GenerateResult]

`tailorlm.engine.mixed` (issue 12, part 3) implements it; until that module exists, the
temporary one-row-at-a-time stand-in (serve/_standin.py) does. Nothing else in `serve` imports
from `tailorlm.engine`, so the switch is this file alone.
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("tailorlm.engine.mixed") is not None:
    from tailorlm.engine.mixed import (BatchEngine, ClassifyRequest, ClassifyResult,
                                       GenerateRequest, GenerateResult, Served)
else:  # TEMPORARY: deleted with serve/_standin.py when engine/mixed.py lands
    from tailorlm.serve._standin import (BatchEngine, ClassifyRequest, ClassifyResult,
                                         GenerateRequest, GenerateResult, Served)

__all__ = ["BatchEngine", "ClassifyRequest", "ClassifyResult", "GenerateRequest",
           "GenerateResult", "Served"]

"""The one place `serve` reaches the inference engine: the mixed-batch interface.

    BatchEngine(base) .load(dir, name) -> Served   .unload(served)   .base_served
                      .classify([ClassifyRequest]) -> [ClassifyResult]
                      .generate([GenerateRequest]) -> [GenerateResult]

`tailorlm.engine.mixed` implements it (issue 12, part 3): rows of any adapters in one forward
pass. Nothing else in `serve` imports from `tailorlm.engine`, so this file is the seam.
"""

from __future__ import annotations

from tailorlm.engine.mixed import (BatchEngine, ClassifyRequest, ClassifyResult, GenerateRequest,
                                   GenerateResult, Served)

__all__ = ["BatchEngine", "ClassifyRequest", "ClassifyResult", "GenerateRequest",
           "GenerateResult", "Served"]

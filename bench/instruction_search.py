"""instruction_search against prompt_template on shared datasets, local smollm2-135m.

    .venv/bin/python bench/instruction_search.py sst2 trec banking77 [--k 16] [--test 300]

Both methods choose on the same k-per-class training rows (no validation file, as `tailor compare`
runs them); instruction_search starts from prompt_template's chosen layout and cue and searches
the instruction above it with the built-in GrIPS-style proposer. Scored on the same stratified
test rows. Prints one markdown row per dataset and method, with the search's cost.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import backend, task  # noqa: E402

from tailorlm.compare.runner import evaluation_subset  # noqa: E402
from tailorlm.data.sample import k_per_class  # noqa: E402
from tailorlm.engine.evaluate import evaluate  # noqa: E402
from tailorlm.methods import get_method  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--test", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--edits", type=int, default=4)
    args = ap.parse_args()
    model = backend()
    print("| dataset | method | accuracy | 95% CI | fit s | instruction | candidates scored | "
          "best judged score |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.datasets:
        train, test = task(name, "test")
        shots = k_per_class(train, args.k, 0)
        rows = evaluation_subset(test, args.test, seed=0)
        for method, options in (("prompt_template", {}),
                                ("instruction_search", {"rounds": args.rounds,
                                                        "edits_per_round": args.edits})):
            spec = get_method(method)
            start = time.perf_counter()
            adapter = spec.fit(model, shots, None, spec.config.from_dict(options), seed=0)
            fit_s = time.perf_counter() - start
            print(f"{name} {method}: fitted in {fit_s:.0f} s", file=sys.stderr, flush=True)
            result = evaluate(model, adapter, rows)
            search = getattr(adapter, "search", None) or {}
            instr = adapter.template.instruction or "(none)"
            print(f"| {name} | {method} | {result.score:.3f} | [{result.score_ci[0]:.3f}, "
                  f"{result.score_ci[1]:.3f}] | {fit_s:.0f} | {instr} | "
                  f"{search.get('candidates_scored', '-')} | "
                  f"{search.get('trajectory', [{}])[-1].get('best_score', '-')} |", flush=True)


if __name__ == "__main__":
    main()

"""What `make demo`'s sizing buys at other machine speeds, without running the comparison.

The sizing (compare/budget.py size_plan) turns one probe (seconds per zero-shot query on the
demo task) into k, seeds and test rows. This probes once, then sizes the demo's plan as if the
probe had measured each of the given speeds (the tokens a query holds, and so tokens per second,
scaled with it), and prints what each would run.

    .venv/bin/python bench/demo_sizing.py [--probes 0.063,0.072,0.078,0.089,0.107] \
        [--budget-minutes 9]
"""

from __future__ import annotations

import argparse
import dataclasses

from tailorlm.compare.bakeoff import load_data, plan_costs
from tailorlm.compare.budget import probe, size_plan
from tailorlm.compare.plan import default_plan
from tailorlm.models import load_backend


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", default="0.063,0.072,0.078,0.089,0.107",
                    help="seconds per query to size at (comma-separated)")
    ap.add_argument("--budget-minutes", type=float, default=9.0)
    args = ap.parse_args()
    plan = default_plan(values={"task": "support_routing",
                                "budget_minutes": args.budget_minutes})
    train, test, _ = load_data(plan)
    measured = probe(load_backend(plan.tree["model"]), train, test)
    print(f"measured here: {measured.s_query:.3f} s/query")
    print("| probe s/query | k | seeds | test rows | protocol | whole plan est. s |")
    print("|---|---|---|---|---|---|")
    for s in (float(x) for x in args.probes.split(",")):
        p = dataclasses.replace(measured, s_query=s, tok_s=measured.tok_s * measured.s_query / s)
        z = size_plan(plan, train, test, p, plan_costs(plan))
        print(f"| {s:.3f} | {z['k']} | {z['seeds_fit']} | {z['max_test']} | {z['protocol']} | "
              f"{z['estimate_seconds']:.0f} |")


if __name__ == "__main__":
    main()

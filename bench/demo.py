"""Time `make demo`'s comparison and say how rich a picture it bought.

    .venv/bin/python bench/demo.py [--out runs/demo-bench] [--keep] [--budget-minutes 9]
    .venv/bin/python bench/demo.py --read runs/demo      # report on a finished OUT, run nothing

Runs the command `make demo` runs (read from the Makefile's `demo:` recipe, with OUT replaced),
from a fresh OUT, with `/usr/bin/time`-style wall clock around the whole process (model load and
process start included, install excluded), then reads OUT/plan.yaml and OUT/results.jsonl:

    wall time          seconds of the whole command
    k                  rows per class the plan was sized to
    test rows          rows each method was scored on (the stratified sample)
    seeds per method   finished runs at k, by method (the curve's other k not counted)
    skipped            runs the budget cut, and failures

and checks the issue's goal: within 10 minutes, every method of the plan at >= 2 seeds,
k >= 4 per class, >= 100 test rows. Exit status 0 when the goal is met, 1 when not.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
GOAL = {"minutes": 10.0, "seeds": 2, "k": 4, "test_rows": 100}


def demo_command(out: Path, budget: float | None) -> list[str]:
    """The `demo:` recipe of the Makefile, with --out (and --budget-minutes if given) replaced."""
    text = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n\t(.+)$", text, re.M).group(1)
    args = shlex.split(recipe.replace("$(BIN)/", ""))
    args[0] = str(Path(sys.executable).parent / args[0])  # tailor beside this python
    args[args.index("--out") + 1] = str(out)
    if budget is not None:
        args[args.index("--budget-minutes") + 1] = f"{budget:g}"
    return args


def summarise(out: Path) -> dict:
    plan = yaml.safe_load((out / "plan.yaml").read_text())
    sizes = plan["resolved"]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()
            if line.strip()]
    # plan.yaml lists a method as its name, or {name: options}
    # (less those the sizing left out: the default plan's extras run only where they fit)
    methods = [m if isinstance(m, str) else next(iter(m)) for m in plan.get("methods", [])]
    methods = [m for m in methods if m not in (sizes.get("left_out") or [])]
    seeds = defaultdict(set)
    n_eval = set()
    for row in rows:
        if row.get("k") == sizes["k"]:
            seeds[row["method"]].add(row["seed"])
            n_eval.add(row["n_eval"])
    log = out / "run_log.json"
    skipped = json.loads(log.read_text()).get("skipped", []) if log.exists() else []
    return {"k": sizes["k"], "test_rows": sorted(n_eval), "max_test": sizes["max_test"],
            "seeds": {m: len(seeds.get(m, ())) for m in methods or sorted(seeds)},
            "fit_seconds": {m: round(sum(r["fit_seconds"] for r in rows if r["method"] == m)
                                     / max(1, sum(r["method"] == m for r in rows)), 1)
                            for m in methods or sorted(seeds)},
            "runs": len(rows), "skipped": skipped, "left_out": sizes.get("left_out") or [],
            "protocol": sizes.get("protocol")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "runs" / "demo-bench"))
    ap.add_argument("--read", help="report on a finished OUT instead of running")
    ap.add_argument("--budget-minutes", type=float, help="instead of the Makefile's")
    ap.add_argument("--keep", action="store_true", help="keep OUT's earlier results (continue)")
    args = ap.parse_args()

    wall = None
    if args.read:
        out = Path(args.read)
    else:
        out = Path(args.out)
        if out.exists() and not args.keep:
            shutil.rmtree(out)
        command = demo_command(out, args.budget_minutes)
        print("$", shlex.join(command), flush=True)
        start = time.perf_counter()
        code = subprocess.call(command, cwd=ROOT)
        wall = time.perf_counter() - start
        if code != 0:
            print(f"the demo command failed (exit {code}) after {wall:.0f} s")
            return 1
    s = summarise(out)
    print(f"wall time        {wall:.1f} s ({wall / 60:.1f} min)" if wall is not None
          else "wall time        (not run here)")
    print(f"k                {s['k']} per class")
    print(f"test rows        {', '.join(map(str, s['test_rows']))} (sampled {s['max_test']})")
    print("seeds per method " + ", ".join(f"{m} {n}" for m, n in s["seeds"].items()))
    print("mean fit s       " + ", ".join(f"{m} {v}" for m, v in s["fit_seconds"].items()))
    print(f"runs             {s['runs']} finished, {len(s['skipped'])} skipped")
    print(f"fit protocol     {s['protocol']}; left out: {', '.join(s['left_out']) or 'none'}")
    met = {"time": wall is None or wall <= GOAL["minutes"] * 60,
           "seeds": all(n >= GOAL["seeds"] for n in s["seeds"].values()),
           "k": s["k"] >= GOAL["k"],
           "test rows": bool(s["test_rows"]) and min(s["test_rows"]) >= GOAL["test_rows"]}
    print("goal             " + ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in met.items()))
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""One learning method's default fit on K per class of a task, scored on its whole test file.

What users_view.py's "ours" side runs for one method and seed (the plan's epoch cap and lr choice),
with option overrides, printing the fit record: the template, the lr and epochs chosen, each
trial's validation score. For checking a change to the fit protocol without the peer's runs.

    TAILORLM_DATASETS=../shared/datasets .venv/bin/python bench/fit_once.py lora --task trec \
        --seed 0 [--set '{"template": "Question: {text}\\nType:"}'] [--val-is-train]

`--val-is-train` passes the training rows as validation: nothing is held out or refitted, and
with `--set '{"lr_factors": [1], "patience": 0}'` the fit trains to the cap like the Trainer.
"""

from __future__ import annotations

import argparse
import json
import time

from common import backend, task
from tailorlm.compare.budget import epochs_for
from tailorlm.data.sample import k_per_class
from tailorlm.engine.evaluate import evaluate
from tailorlm.methods import get_method
from tailorlm.methods.tuned import LR_FACTORS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("method")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--set", default="{}", help="JSON of the method's options over the plan's")
    ap.add_argument("--val-is-train", action="store_true")
    args = ap.parse_args()
    be = backend()
    full, _ = task(args.task, "train")
    _, test = task(args.task, "test")
    train = k_per_class(full, args.k, args.seed)
    spec = get_method(args.method)
    cfg = spec.config.from_dict({"epochs": epochs_for(len(train)),
                                 "lr_factors": list(LR_FACTORS), **json.loads(args.set)})
    start = time.perf_counter()
    adapter = spec.fit(be, train, train if args.val_is_train else None, cfg, seed=args.seed)
    seconds = time.perf_counter() - start
    r = adapter.train_result
    acc = evaluate(be, adapter, test).score
    print(json.dumps({"method": args.method, "task": args.task, "seed": args.seed,
                      "set": json.loads(args.set), "acc": round(acc, 4), "fit_s": round(seconds),
                      "template": r["template"]["template"], "fit": r["fit"]}, default=str))


if __name__ == "__main__":
    main()

"""The users-view peer (Trainer + PEFT) at each lr of the grid, for one method and seed.

The users-view table's "peer* acc (best lr on test)" column, run a method and seed at a time (each
in its own process, as bench/fit_once.py runs ours), so a long table can be filled in pieces and
the default-lr column already measured is not run again (`--skip-default`). The grid is
LR_FACTORS x the method's default lr, the same learning rates ours chooses between; the peer
trains each at its own 10 epochs on the same K per class rows and is scored on the whole test
file. Choosing its best on test flatters the peer: it is the strongest column a user could reach.

    TAILORLM_DATASETS=../shared/datasets .venv/bin/python bench/peer_grid.py lora --task sst2 \
        --seed 0 [--skip-default]

Prints one JSON line: {"method", "task", "seed", "runs": [{"lr", "acc", "seconds"}, ...]}.
"""

from __future__ import annotations

import argparse
import json

from common import backend, task
from tailorlm.compare.budget import epochs_for
from tailorlm.data.sample import k_per_class
from tailorlm.methods import get_method
from tailorlm.methods.tuned import LR_FACTORS
from users_view import METHODS, peer_runs
from vs_trainer import NATURAL, NATURAL_INIT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("method", choices=METHODS)
    ap.add_argument("--task", default="sst2", choices=sorted(NATURAL))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--skip-default", action="store_true",
                    help="only the grid's other lrs (the default's column is measured already)")
    args = ap.parse_args()
    be = backend()
    full, _ = task(args.task, "train")
    _, test = task(args.task, "test")
    train = k_per_class(full, args.k, args.seed)
    cfg = get_method(args.method).config.from_dict({"epochs": epochs_for(len(train))})
    grid = [cfg.lr * f for f in LR_FACTORS if not (args.skip_default and f == 1.0)]
    runs = peer_runs(args.method, be, train, test, cfg, NATURAL[args.task],
                     NATURAL_INIT[args.task], args.seed, grid)
    print(json.dumps({"method": args.method, "task": args.task, "seed": args.seed,
                      "default_lr": cfg.lr,
                      "runs": [{**r, "acc": round(r["acc"], 4), "seconds": round(r["seconds"], 1)}
                               for r in runs]}))


if __name__ == "__main__":
    main()

"""What one checkpoint of a full fine-tune of SmolLM2-135M costs to write: a resume checkpoint
(weights + AdamW's two moments + RNG, 1.6 GB) against the final one (the weights handed back and
the state, 0.5 GB). Mostly disk and hashing, so less sensitive to CPU load than a fit.

    OMP_NUM_THREADS=2 .venv/bin/python bench/checkpoint_cost.py [--repeat 2]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from tailorlm.engine import train as train_module
from tailorlm.engine.checkpoint import step_dir
from tailorlm.engine.train import TrainConfig
from tailorlm.methods.module_trainable import ModuleTrainable
from tailorlm.models import load_backend


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    backend = load_backend("smollm2-135m")
    model = copy.deepcopy(backend.model).float().requires_grad_(True)
    trainable = ModuleTrainable(model)
    optimizer = torch.optim.AdamW(trainable.parameters(), lr=1e-5)
    for p in trainable.parameters():  # one step, so AdamW holds its moments
        p.grad = torch.zeros_like(p)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    state = {"step": 1, "best_metric": 0.0, "best_step": 1, "bad_evals": 0,
             "stopped_early": False, "tokens_seen": 0, "seconds": 0.0, "losses": [1.0]}
    config = TrainConfig()
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        root, log = Path(tmp) / "checkpoints", Path(tmp) / "train_log.jsonl"
        log.write_text("")
        for i in range(args.repeat):
            step = 2 * i + 1
            start = time.perf_counter()
            train_module._save(root, step, trainable, optimizer, scheduler, state, None, config,
                               "x", 1, log)
            resume_s = time.perf_counter() - start
            size = sum(f.stat().st_size for f in step_dir(root, step).iterdir())
            start = time.perf_counter()
            train_module._save_final(root, step + 1, trainable, state, config, "x", 1, log)
            final_s = time.perf_counter() - start
            final = sum(f.stat().st_size for f in step_dir(root, step + 1).iterdir())
            start = time.perf_counter()
            best = train_module._copy(trainable.state_dict())
            copy_s = time.perf_counter() - start
            del best
            print(f"resume checkpoint {size / 1e9:.2f} GB {resume_s:.1f} s | final "
                  f"{final / 1e9:.2f} GB {final_s:.1f} s | best weights copied in memory "
                  f"{copy_s:.2f} s", flush=True)


if __name__ == "__main__":
    main()

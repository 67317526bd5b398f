"""Seconds per training step of lora, soft_prompt and soft_prompt over a bound LoRA (the hybrid's
input side: over PEFT's unmerged layers, as before, and over the merged view `bind` gives now), on
the same batches of the demo task, interleaved so that load from other processes falls on all of
them alike.

    OMP_NUM_THREADS=2 .venv/bin/python bench/step_times.py [--k 4] [--steps 6] [--profile]

Each step is what engine/train.py does per micro-batch: loss, backward, AdamW step. `--profile`
prints torch.profiler's top operators of one hybrid input-side step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tailorlm.data.load import load_builtin_task
from tailorlm.data.sample import k_per_class
from tailorlm.engine.train import collate
from tailorlm.methods.lora import LoraAdapter, LoraConfig, frozen_view, peft_config, wrap
from tailorlm.methods.module_trainable import ModuleTrainable
from tailorlm.methods.soft_prompt import SoftPromptConfig, SoftPromptTrainable, initial_prompt
from tailorlm.methods.templates import resolve
from tailorlm.methods.trainable import encode_rows
from tailorlm.methods import virtual_prefix as vp
from tailorlm.models import load_backend


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()

    backend = load_backend("smollm2-135m")
    train, _ = load_builtin_task("support_routing")
    shots = k_per_class(train, args.k, 0)
    template = resolve("default", shots)
    rows = encode_rows(backend, template, shots)
    batches = [collate(rows[i:i + args.batch_size], backend.tokenizer.pad_token_id or 0)
               for i in range(0, len(rows), args.batch_size)]
    print(f"threads {torch.get_num_threads()}, {len(rows)} rows, "
          f"{len(batches)} batches of {args.batch_size}, "
          f"mean row {sum(len(r[0]) for r in rows) / len(rows):.0f} tokens")

    torch.manual_seed(0)
    lora_model = wrap(frozen_view(backend.model), peft_config(LoraConfig(), backend.identity))
    lora = ModuleTrainable(lora_model.base_model.model)
    adapter = LoraAdapter("lora", LoraConfig(), shots.with_examples([]), template,
                          identity=backend.identity, peft_model=lora_model,
                          base_id=id(backend.model))
    unmerged, merged = adapter.bind_unmerged(backend), adapter.bind(backend)
    sp_cfg = SoftPromptConfig()
    init = initial_prompt(backend, shots, sp_cfg, 0)
    trainables = {"lora": lora,
                  "soft_prompt": SoftPromptTrainable(backend.model, init),
                  "input side over unmerged lora": SoftPromptTrainable(unmerged.model, init),
                  "input side over merged lora": SoftPromptTrainable(merged.model, init)}
    optimizers = {name: torch.optim.AdamW(t.parameters(), lr=1e-4)
                  for name, t in trainables.items()}

    def step(name: str, batch) -> float:
        t = trainables[name]
        start = time.perf_counter()
        optimizers[name].zero_grad(set_to_none=True)
        loss, n = t.loss(batch)
        (loss * n).backward()
        optimizers[name].step()
        return time.perf_counter() - start

    times = {name: [] for name in trainables}
    frozen = [vp.frozen(backend.model), vp.frozen(unmerged.model)]
    for f in frozen:
        f.__enter__()
    lora_params = [p for p in lora.parameters()]
    for p in lora_params:  # vp.frozen(unmerged.model) froze the LoRA too; the lora steps train it
        p.requires_grad_(True)
    try:
        for name in trainables:  # warm-up
            step(name, batches[0])
        for i in range(args.steps):
            for name in trainables:
                if name == "lora":
                    for p in lora_params:
                        p.requires_grad_(True)
                else:
                    for p in lora_params:
                        p.requires_grad_(False)
                times[name].append(step(name, batches[i % len(batches)]))
        if args.profile:
            for p in lora_params:
                p.requires_grad_(False)
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                step("input side over unmerged lora", batches[0])
            print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25))
    finally:
        for f in reversed(frozen):
            f.__exit__(None, None, None)
    for name, ts in times.items():
        print(f"{name:32s} median {statistics.median(ts):6.3f} s/step  "
              f"(min {min(ts):.3f}, max {max(ts):.3f}, n={len(ts)})")


if __name__ == "__main__":
    main()

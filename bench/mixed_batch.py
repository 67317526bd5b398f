"""Classification throughput of one mixed batch (engine/mixed.py) vs the same rows on one adapter.

32 sst2 dev rows, on smollm2-135m (float32, CPU), spread round-robin over 8 adapters of mixed kinds

    2 prompt_template (two wordings), 1 few_shot (4 demonstrations), 2 soft_prompt (10 and 20
    vectors), 1 prefix (10 positions), 2 lora (r=8 and r=16, all seven projections)

made from their methods' own initial values (label words' embeddings / key/values; LoRA with a
small random B): throughput does not depend on training. Compared with the same 32 rows all on
one adapter of each kind, and with the same rows sent per adapter (8 calls of 4 rows: grouping
instead of mixing). Every configuration is timed `--repeats` times, round-robin, after one
warm-up call (the shared prefixes' caches are filled, as on a running server); the best time is
reported.

    TAILORLM_DATASETS=/work/shared/datasets .venv/bin/python bench/mixed_batch.py [--rows 32]
        [--repeats 3] [--threads 1]

On a shared 2-core machine, 2 threads measure mostly how long each of thousands of small ops
waits for the other core; --threads 1 compares the work itself.
"""

from __future__ import annotations

import argparse
import time

import torch

from common import backend, task
from tailorlm.engine.mixed import BatchEngine, ClassifyRequest
from tailorlm.methods.lora import ATTENTION_AND_MLP


def adapters(be, train):
    from tailorlm.methods import get_method, lora as lo, prefix as pf, soft_prompt as sp
    from tailorlm.methods.prompt_adapter import PromptAdapter
    from tailorlm.methods.templates import resolve

    empty = train.with_examples([])
    t1, t2 = resolve("default", train), resolve("text_sentiment", train)
    out = {"template_a": PromptAdapter("prompt_template", None, empty, t1),
           "template_b": PromptAdapter("prompt_template", None, empty, t2)}
    demos = [next(e for e in train.examples if e.label == label) for label in train.labels] * 2
    out["few_shot"] = PromptAdapter("few_shot", None, empty, t1, demos=demos)
    for n in (10, 20):
        cfg = sp.SoftPromptConfig(n_virtual=n)
        out[f"soft_prompt_{n}"] = sp.SoftPromptAdapter(
            sp.NAME, cfg, empty, t1, prompt_embeddings=sp.initial_prompt(be, train, cfg, 0, t1),
            peft_config=sp.peft_config(be, n))
    cfg = pf.PrefixConfig(n_virtual=10)
    with torch.no_grad():
        flat = pf.initial_encoder(be, train, cfg, 0, t1)().detach().float()
    out["prefix_10"] = pf.PrefixAdapter(pf.NAME, cfg, empty, t1, prefix=flat,
                                        peft_config=pf.peft_config(be, 10))
    for r in (8, 16):
        cfg = lo.LoraConfig(r=r, alpha=2 * r, target_modules=list(ATTENTION_AND_MLP))
        torch.manual_seed(r)
        model = lo.wrap(lo.frozen_view(be.model), lo.peft_config(cfg, be.identity))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.01)
        out[f"lora_r{r}"] = lo.LoraAdapter(lo.NAME, cfg, empty, t1, identity=be.identity,
                                           peft_model=model.eval(), base_id=id(be.model))
    assert get_method("prompt_template")  # registered
    return out


def best_seconds(configs: dict, repeats: int) -> dict[str, float]:
    """The best of `repeats` timings of each config, taken round-robin (config 1, 2, ..., 1, 2,
    ...) so that a busy spell on a shared machine slows every config alike; one warm-up call each
    first (it fills the prefix caches)."""
    for fn in configs.values():
        fn()
    times = {name: [] for name in configs}
    for _ in range(repeats):
        for name, fn in configs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: every core)")
    args = ap.parse_args()
    be = backend()
    if args.threads:
        torch.set_num_threads(args.threads)
    train, dev = task("sst2", "dev", args.rows)
    engine = BatchEngine(be, max_batch=args.rows)
    served = {name: engine.add(a, name) for name, a in adapters(be, train).items()}
    names = list(served)
    texts = [e.input for e in dev.examples]
    mixed = [ClassifyRequest(served[names[i % len(names)]], t) for i, t in enumerate(texts)]
    by_adapter = {name: [r for r in mixed if r.adapter is served[name]] for name in names}
    configs = {"mixed (8 adapters, one call)": lambda: engine.classify(mixed),
               "grouped (8 calls of 4 rows)": lambda: [engine.classify(reqs)
                                                       for reqs in by_adapter.values()]}
    for name in names:
        one = [ClassifyRequest(served[name], t) for t in texts]
        configs[f"one adapter: {name}"] = lambda one=one: engine.classify(one)
    results = best_seconds(configs, args.repeats)
    singles = [v for k, v in results.items() if k.startswith("one adapter")]
    mean_single = sum(singles) / len(singles)
    print(f"threads={torch.get_num_threads()} rows={len(texts)} repeats={args.repeats}")
    for key, seconds in results.items():
        print(f"{key:36s} {seconds:7.3f} s   {len(texts) / seconds:7.1f} rows/s")
    m = results["mixed (8 adapters, one call)"]
    print(f"mixed / mean one-adapter throughput: {mean_single / m:.2f}x")
    print(f"mixed / fastest one-adapter throughput: {min(singles) / m:.2f}x")
    print(f"mixed / grouped throughput: {results['grouped (8 calls of 4 rows)'] / m:.2f}x")


if __name__ == "__main__":
    main()

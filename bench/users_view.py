"""`bench/vs_trainer.py --mode users-view`: tailorlm's default fit against what a user would run
with transformers' Trainer + PEFT, on the same rows, scored on the same test file.

See vs_trainer.py's docstring for both sides' recipes. One table per task: per method, ours and the
peer's accuracy (mean ± std over seeds) and fit seconds, the peer's best over the lr grid (chosen
on test: optimistic for the peer), and what ours chose (template, lr, epochs).
"""

from __future__ import annotations

import copy
import gc
import shlex
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import torch

from common import backend, task
from tailorlm.compare.budget import epochs_for
from tailorlm.data.sample import k_per_class
from tailorlm.engine.evaluate import evaluate
from tailorlm.methods import get_method
from tailorlm.methods.lora import frozen_view
from tailorlm.methods.templates import resolve
from tailorlm.methods.trainable import encode_rows
from tailorlm.methods.tuned import LR_FACTORS
from vs_trainer import NATURAL, NATURAL_INIT, PEER_EPOCHS, PEERS, run_trainer

METHODS = ("soft_prompt", "prefix", "lora", "full")


def peer_model(method: str, be, cfg, init_text: str) -> torch.nn.Module:
    """What a PEFT / Trainer user trains: the base under PEFT's own config, or a float32 copy."""
    import peft

    if method == "full":
        return copy.deepcopy(be.model).float().requires_grad_(True)
    base = frozen_view(be.model)
    if method == "lora":
        return peft.get_peft_model(base, peft.LoraConfig(
            r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, bias="none",
            target_modules=copy.copy(cfg.target_modules), task_type="CAUSAL_LM"))
    if method == "prefix":
        return peft.get_peft_model(base, peft.PrefixTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=cfg.n_virtual))
    model = peft.get_peft_model(base, peft.PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=cfg.n_virtual, prompt_tuning_init="RANDOM"))
    # PEFT's TEXT init, done by hand (it wants a tokenizer path): the instruction's token
    # embeddings, repeated to the virtual length
    ids = be.encode(init_text)
    ids = [ids[i % len(ids)] for i in range(cfg.n_virtual)]
    with torch.no_grad():
        embed = be.model.get_input_embeddings()
        model.prompt_encoder["default"].embedding.weight.copy_(
            embed(torch.tensor(ids, device=embed.weight.device)).float())
    return model


def peer_runs(method: str, be, train, test, cfg, natural: str, init_text: str, seed: int,
              grid: list[float]) -> list[dict]:
    """The peer at each lr of `grid`: {"lr", "acc", "seconds"}."""
    spec = get_method(method)
    template = resolve(natural, train)
    rows = encode_rows(be, template, train)
    out = []
    for lr in grid:
        peer_cfg = SimpleNamespace(batch_size=8, grad_accum=1, epochs=PEER_EPOCHS, lr=lr,
                                   weight_decay=0.0, schedule="linear", warmup_ratio=0.1)
        torch.manual_seed(seed)  # LoRA's A, as a user's seeded script would draw it
        model = peer_model(method, be, cfg, init_text)
        with tempfile.TemporaryDirectory(prefix="users-view-") as tmp:
            seconds = run_trainer(model, rows, peer_cfg, False, seed, be.tokenizer.pad_token_id
                                  or 0, str(Path(tmp, "peer")))
            model.save_pretrained(Path(tmp, "saved"))
            state = {"task": {"name": train.name, "kind": train.kind, "labels": train.labels,
                              "verbalizer": train.verbalizer, "description": train.description},
                     "template": {k: getattr(template, k) for k in
                                  ("name", "query", "answer", "instruction", "separator",
                                   "answer_space")},
                     "train_result": {}, "identity": be.identity, "trained_params": 0}
            peer = spec.from_state(cfg, state, Path(tmp, "saved"))
            acc = evaluate(be, peer, test).score
        out.append({"lr": lr, "acc": acc, "seconds": seconds})
        del model, peer
        gc.collect()
    return out


def ours_run(method: str, be, train, test, seed: int, lr_search: bool) -> dict:
    spec = get_method(method)
    config = {"epochs": epochs_for(len(train))}  # as the default plan sets it (compare/bakeoff)
    if lr_search:
        config["lr_factors"] = list(LR_FACTORS)
    cfg = spec.config.from_dict(config)
    start = time.perf_counter()
    adapter = spec.fit(be, train, None, cfg, seed=seed)
    seconds = time.perf_counter() - start
    acc = evaluate(be, adapter, test).score
    r = adapter.train_result
    out = {"acc": acc, "seconds": seconds, "template": r["template"]["template"],
           "lr": r["fit"]["lr"], "epochs": r["fit"]["epochs"], "default_lr": cfg.lr, "cfg": cfg}
    del adapter
    gc.collect()
    return out


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(name: str, results: dict, grid: bool) -> list[str]:
    lines = [f"### {name}", "", "| method | vs | ours acc | ours fit s | peer acc | peer s "
             "| Δ pts | " + ("peer* acc (best lr on test) | Δ* pts | " if grid else "")
             + "ours chose |", "|" + "---|" * (10 if grid else 8)]
    for method, runs in results.items():
        ours = [r["ours"]["acc"] for r in runs]
        peer = [r["peer"][r["default_i"]]["acc"] for r in runs]
        best = [max(p["acc"] for p in r["peer"]) for r in runs]
        delta = 100 * (statistics.mean(ours) - statistics.mean(peer))
        chose = Counter(f"{r['ours']['template']}, lr {r['ours']['lr']:g}, "
                        f"{r['ours']['epochs']} ep" for r in runs)
        row = (f"| {method} | {PEERS[method]} | {mean_std(ours)} "
               f"| {statistics.mean(r['ours']['seconds'] for r in runs):.1f} "
               f"| {mean_std(peer)} "
               f"| {statistics.mean(r['peer'][r['default_i']]['seconds'] for r in runs):.1f} "
               f"| {delta:+.1f} | ")
        if grid:
            gap = 100 * (statistics.mean(ours) - statistics.mean(best))
            row += f"{mean_std(best)} | {gap:+.1f} | "
        lines.append(row + "; ".join(f"{k} (x{v})" for k, v in chose.items()) + " |")
    return lines


def main(args) -> None:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        sys.exit(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    be = backend()
    md = ["    .venv/bin/python bench/vs_trainer.py " + " ".join(shlex.quote(a)
                                                             for a in sys.argv[1:]), ""]
    for name in tasks:
        if name not in NATURAL:
            sys.exit(f"--tasks: no natural template for {name}; add one to NATURAL")
        full_train, _ = task(name, "train")
        _, test = task(name, "test", n=args.n_test or None, seed=0)
        results = {}
        for method in methods:
            runs = []
            for seed in seeds:
                train = k_per_class(full_train, args.k, seed)
                ours = ours_run(method, be, train, test, seed, args.lr_search)
                print(f"{name} {method} seed {seed}: ours {ours['acc']:.3f} "
                      f"({ours['seconds']:.0f} s)", file=sys.stderr, flush=True)
                default = ours["default_lr"]
                grid = [default] + ([] if args.no_peer_grid else
                                    [default * f for f in LR_FACTORS if f != 1.0])
                peer = peer_runs(method, be, train, test, ours.pop("cfg"), NATURAL[name],
                                 NATURAL_INIT[name], seed, grid)
                runs.append({"ours": ours, "peer": peer, "default_i": 0})
                print(f"{name} {method} seed {seed}: peer {peer[0]['acc']:.3f} "
                      f"({peer[0]['seconds']:.0f} s)", file=sys.stderr, flush=True)
            results[method] = runs
        md += [f"{name}: K={args.k} per class, seeds {seeds}, {len(test)} test rows; peer: "
               f"Trainer + PEFT, {PEER_EPOCHS} epochs, batch 8, template "
               f"{NATURAL[name]!r}; ours: the default plan's fit"
               f"{' with its lr choice' if args.lr_search else ''}.", ""]
        md += table(name, results, not args.no_peer_grid) + [""]
    text = "\n".join(md)
    print(text)
    if args.md:
        args.md.write_text(text + "\n")

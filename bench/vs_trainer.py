"""tailorlm's training against transformers' Trainer (+ PEFT), same rows, side by side.

For each method, both sides train a copy of SmolLM2-135M on the same sst2 rows (K per class from
train) with the same epochs, batch size, lr, AdamW, warmup 0.1 + linear decay, grad clip 1.0 and
bf16 setting, then both trained models are scored by tailorlm's engine on the same test sample:

    rows    encode_rows(backend, template, train): [prompt ids][target ids][eos]; the Trainer gets
            the same ids with labels -100 on the prompt (loss on the target and eos only)
    ours    get_method(name).fit(backend, train, val, config)     (engine/train.py)
    peer    Trainer(model, TrainingArguments(...)).train() on
              soft_prompt  peft.get_peft_model(base, PromptTuningConfig), same initial vectors
              lora         peft.get_peft_model(base, LoraConfig), same r/alpha/dropout/targets/seed
              full         a float32 copy of the base
    score   the peer's model saved by PEFT/transformers and loaded back by our method's from_state

What differs, on purpose or by design:
  * tailorlm always validates (without `val` it would hold out a quarter of the 32 rows), so it
    gets K per class from sst2 dev as `val`, and keeps the best epoch on it; the Trainer keeps the
    last epoch and evaluates nothing. Our evaluation time is measured and left out of "ours s"
    (shown beside it); our per-epoch checkpoints (the Trainer saves none) stay in.
  * Trainer time is `trainer.train()` only; ours is the whole `fit` (model copy, encoding included).
    Ours runs first, so any warm-up the process gains goes to the Trainer.
  * The Trainer uses its default optimizer (adamw_torch_fused), ours torch.optim.AdamW.

FLOPs are the useful work, the same number for both sides: 6·N·T for full, 4·N·T for lora and
soft_prompt (forward, plus the backward through activations; frozen weights get no gradient),
N = non-embedding parameters (Kaplan et al. 2020; LM head and attention over the context left
out), T = real tokens trained (rows x epochs; soft_prompt's virtual tokens not counted). So the MFU
ratio is the inverse of the time ratio. MFU = FLOPs / train seconds / this machine's peak matmul
rate (best of several 2048³ matmuls, fp32 or bf16 as the run computes, all cores).

    .venv/bin/python bench/vs_trainer.py [--methods soft_prompt,lora,full] [--k 16] [--seed 0]
        [--epochs 3] [--batch-size 8] [--n-test 400] [--bf16 auto|on|off] [--md PATH]

The user's view (`--mode users-view`, issue 10): not the same recipe on both sides, but what each
side does by default on the same rows, as a user would run it:

    ours    the default plan's fit: get_method(name).fit(backend, train, None, config) with the
            plan's epoch cap (compare/budget.epochs_for) and, with --lr-search, its lr choice:
            the prompt search's template, a quarter held out for early stopping and the lr
            choice, then a refit on every row (methods/trainable.py)
    peer    Trainer + PEFT at 10 epochs, batch 8, warmup 0.1 + linear, the method's default lr,
            on the same rows read through the user's natural template (NATURAL); soft_prompt
            starts from PEFT's TEXT init with a natural instruction, prefix is PEFT's
            PrefixTuningConfig, lora PEFT's LoraConfig with our r/alpha/targets, full a float32
            copy; keeps the last epoch
    peer*   the same, best over the same lr grid (our default x LR_FACTORS), the best chosen on
            the test rows: an optimistic bound for the peer, separately reported
    score   every model by tailorlm's engine on the whole test file (--n-test 0), 3 seeds

    .venv/bin/python bench/vs_trainer.py --mode users-view --tasks sst2,trec
        --methods soft_prompt,prefix,lora,full --seeds 0,1,2 --n-test 0 [--lr-search]
        [--no-peer-grid] [--md PATH]
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import platform
import shlex
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from common import backend, task, timed
from tailorlm.data.sample import k_per_class
from tailorlm.engine import train as train_module
from tailorlm.engine.evaluate import evaluate
from tailorlm.engine.train import use_bf16
from tailorlm.methods import get_method
from tailorlm.methods import trainable as trainable_module
from tailorlm.methods.lora import frozen_view
from tailorlm.methods.templates import resolve
from tailorlm.methods.trainable import encode_rows

GOALS = {"soft_prompt": 0.5, "lora": 0.7, "full": 0.7}  # ours / peer wall time, at most
PEERS = {"soft_prompt": "PEFT", "prefix": "PEFT prefix tuning", "lora": "Trainer+PEFT",
         "full": "Trainer"}
# The user's view: the template and soft-prompt init a user would write for each task.
NATURAL = {"sst2": "Review: {text}\nSentiment:", "trec": "Question: {text}\nType:"}
NATURAL_INIT = {"sst2": "Classify the sentiment of this movie review:",
                "trec": "Classify the type of answer this question asks for:"}
PEER_EPOCHS = 10
ACCURACY_POINTS = 1.0  # ours may trail the peer by at most this many accuracy points


def peak_matmul(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` (n, n) @ (n, n) matmuls, after one warm-up."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(timed(lambda: a @ b)[1] for _ in range(repeats))
    return 2 * n**3 / best


def clocked(fn, totals: dict, key: str):
    """`fn`, adding its wall time to totals[key] and its calls to totals[key + "_n"]."""
    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            totals[key] += time.perf_counter() - t0
            totals[key + "_n"] += 1
    return wrapper


@contextmanager
def validation_and_checkpoint_clocks():
    """Time what our loop spends outside training: the validation callback the method hands it
    (whatever it computes) and checkpoint writes. Patched where fit_trainable and the loop look
    them up, and restored after."""
    totals = {"eval": 0.0, "eval_n": 0, "ckpt": 0.0, "ckpt_n": 0}
    loop, save = trainable_module.train, train_module._save

    def loop_with_clock(*a, evaluate=None, **kw):
        return loop(*a, evaluate=evaluate and clocked(evaluate, totals, "eval"), **kw)

    trainable_module.train, train_module._save = loop_with_clock, clocked(save, totals, "ckpt")
    try:
        yield totals
    finally:
        trainable_module.train, train_module._save = loop, save


def right_pad(pad_id: int):
    """The Trainer's collator: right-padded like ours (the tokenizer's own padding side could be
    left, which would move every token's position), labels padded with -100."""
    def collate(rows: list[dict]) -> dict:
        T = max(len(r["input_ids"]) for r in rows)
        out = {"input_ids": torch.full((len(rows), T), pad_id),
               "attention_mask": torch.zeros((len(rows), T), dtype=torch.long),
               "labels": torch.full((len(rows), T), -100)}
        for b, r in enumerate(rows):
            n = len(r["input_ids"])
            out["input_ids"][b, :n] = torch.tensor(r["input_ids"])
            out["attention_mask"][b, :n] = 1
            out["labels"][b, :n] = torch.tensor(r["labels"])
        return out
    return collate


def peer_model(method: str, be, cfg, train, seed: int) -> torch.nn.Module:
    """What a PEFT / Trainer user would train: the base under PEFT, or a float32 copy of it."""
    import peft

    if method == "full":
        return copy.deepcopy(be.model).float().requires_grad_(True)
    base = frozen_view(be.model)  # new frozen Parameters over the base's memory, as ours uses
    if method == "lora":
        torch.manual_seed(seed)  # the same draw of A as ours
        return peft.get_peft_model(base, peft.LoraConfig(
            r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, bias="none",
            target_modules=copy.copy(cfg.target_modules), task_type="CAUSAL_LM"))
    from tailorlm.methods.soft_prompt import initial_prompt

    model = peft.get_peft_model(base, peft.PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=cfg.n_virtual, prompt_tuning_init="RANDOM"))
    with torch.no_grad():  # start from our init (label words' embeddings) so only training differs
        model.prompt_encoder["default"].embedding.weight.copy_(initial_prompt(be, train, cfg, seed))
    return model


def run_trainer(model, rows, cfg, bf16: bool, seed: int, pad_id: int, out_dir: str) -> float:
    from transformers import PrinterCallback, Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, num_train_epochs=cfg.epochs,
        learning_rate=cfg.lr, weight_decay=cfg.weight_decay, lr_scheduler_type=cfg.schedule,
        warmup_steps=cfg.warmup_ratio, max_grad_norm=1.0,  # a float < 1 is a ratio of all steps
        bf16=bf16, use_cpu=True, seed=seed, save_strategy="no", eval_strategy="no",
        logging_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        remove_unused_columns=False, label_names=["labels"])
    data = [{"input_ids": ids, "labels": [t if m else -100 for t, m in zip(ids, mask)]}
            for ids, mask in rows]
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=right_pad(pad_id))
    trainer.remove_callback(PrinterCallback)  # it prints the final metrics into our markdown
    return timed(trainer.train)[1]


def compare(method: str, args, be, train, val, test, bf16: bool, peak: float) -> dict:
    spec = get_method(method)
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "warmup_ratio": 0.1,
                 "schedule": "linear", "patience": 0, "bf16": bf16}
    lr = getattr(args, f"lr_{method}")
    if lr is not None:
        overrides["lr"] = lr
    cfg = spec.config.from_dict(overrides)
    rows = encode_rows(be, resolve(cfg.template, train), train)
    tokens = sum(len(ids) for ids, _ in rows) * cfg.epochs
    n_params = be.total_params - be.model.get_input_embeddings().weight.numel()
    flops = (6 if method == "full" else 4) * n_params * tokens
    pad_id = be.tokenizer.pad_token_id or 0

    with tempfile.TemporaryDirectory(prefix="vs-trainer-") as tmp:
        with validation_and_checkpoint_clocks() as t:
            ours, ours_total = timed(lambda: spec.fit(be, train, val, cfg, seed=args.seed,
                                                      work_dir=Path(tmp, "ours")))
        ours_s = ours_total - t["eval"]
        acc_ours = evaluate(be, ours, test).score

        model = peer_model(method, be, cfg, train, args.seed)
        peer_s = run_trainer(model, rows, cfg, bf16, args.seed, pad_id, str(Path(tmp, "peer")))
        model.save_pretrained(Path(tmp, "peer-saved"))  # PEFT's adapter folder, or the model
        peer = spec.from_state(cfg, ours.state(), Path(tmp, "peer-saved"))
        acc_peer = evaluate(be, peer, test).score
    del ours, peer, model
    gc.collect()
    return {"method": method, "ours_s": ours_s, "clocks": t,
            "peer_s": peer_s, "acc_ours": acc_ours, "acc_peer": acc_peer, "lr": cfg.lr,
            "tokens": tokens, "mfu_ours": flops / ours_s / peak, "mfu_peer": flops / peer_s / peak}


def report(results: list[dict], skipped: dict, header: list[str]) -> str:
    lines = header + [
        "", "| method | vs | ours s | peer s | ratio | goal | time met | acc ours | acc peer "
        "| Δ pts | acc met | MFU ours | MFU peer |", "|" + "---|" * 13]
    for r in results:
        ratio = r["ours_s"] / r["peer_s"]
        delta = 100 * (r["acc_ours"] - r["acc_peer"])
        goal = GOALS[r["method"]]
        lines.append(
            f"| {r['method']} | {PEERS[r['method']]} | {r['ours_s']:.1f} | {r['peer_s']:.1f} "
            f"| {ratio:.2f}x | ≤ {goal}x | {'yes' if ratio <= goal else 'no'} "
            f"| {r['acc_ours']:.3f} | {r['acc_peer']:.3f} | {delta:+.1f} "
            f"| {'yes' if delta >= -ACCURACY_POINTS else 'no'} "
            f"| {100 * r['mfu_ours']:.1f}% | {100 * r['mfu_peer']:.1f}% |")
    lines.append("")
    for r in results:
        c = r["clocks"]
        lines.append(f"- {r['method']}: lr {r['lr']:g}, {r['tokens']} tokens trained; ours also "
                     f"validated {c['eval_n']}x in {c['eval']:.1f} s (left out of 'ours s'); "
                     f"its {c['ckpt_n']} checkpoints took {c['ckpt']:.1f} s (kept in)")
    for method, why in skipped.items():
        lines.append(f"- {method}: skipped ({why})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="soft_prompt,lora,full")
    ap.add_argument("--k", type=int, default=16, help="training rows per class (sst2 train)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--n-test", type=int, default=400, help="sst2 test rows, seeded; 0 = all")
    for m in GOALS:
        ap.add_argument(f"--lr-{m.replace('_', '-')}", type=float, default=None,
                        help=f"lr for {m} on both sides (default: the method's own)")
    ap.add_argument("--bf16", choices=("auto", "on", "off"), default="off")  # as the methods default
    ap.add_argument("--md", type=Path, default=None, help="also write the markdown here")
    ap.add_argument("--mode", choices=("same-recipe", "users-view"), default="same-recipe")
    ap.add_argument("--tasks", default="sst2", help="users-view: sst2,trec")
    ap.add_argument("--seeds", default="0,1,2", help="users-view: the seeds")
    ap.add_argument("--lr-search", action="store_true",
                    help="users-view: ours tries LR_FACTORS as a plan with room for it does")
    ap.add_argument("--no-peer-grid", action="store_true",
                    help="users-view: the peer at its default lr only (no peer* column)")
    args = ap.parse_args()
    if args.mode == "users-view":
        from users_view import main as users_view

        return users_view(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in GOALS]
    if unknown:
        sys.exit(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(GOALS)}")

    skipped = {}
    if "soft_prompt" in methods:
        try:
            import tailorlm.methods.soft_prompt  # noqa: F401
        except ImportError as e:
            skipped["soft_prompt"] = f"tailorlm.methods.soft_prompt does not import: {e}"
            methods.remove("soft_prompt")

    be = backend()  # float32 weights; bf16 is autocast on both sides
    bf16 = use_bf16({"auto": "auto", "on": True, "off": False}[args.bf16])
    peaks = {"fp32": peak_matmul(torch.float32), "bf16": peak_matmul(torch.bfloat16)}
    full_train, _ = task("sst2", "train")
    train = k_per_class(full_train, args.k, args.seed)
    _, dev = task("sst2", "dev")
    val = k_per_class(dev, args.k, args.seed)
    _, test = task("sst2", "test", n=args.n_test or None, seed=args.seed)

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), platform.processor())
    header = [
        "    .venv/bin/python " + " ".join(shlex.quote(a) for a in sys.argv),
        "",
        f"sst2, {len(train)} training rows ({args.k} per class, seed {args.seed}), ours validates "
        f"on {len(val)} dev rows, test {len(test)} rows; {args.epochs} epoch(s), "
        f"batch {args.batch_size}, warmup 0.1 + linear, bf16 autocast {'on' if bf16 else 'off'}. "
        f"{cpu}, {torch.get_num_threads()} threads (os.cpu_count {os.cpu_count()}); peak matmul "
        f"fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s. "
        f"torch {torch.__version__}, transformers {__import__('transformers').__version__}, "
        f"peft {__import__('peft').__version__}.",
    ]
    results = []
    for m in methods:
        results.append(compare(m, args, be, train, val, test, bf16,
                               peaks["bf16" if bf16 else "fp32"]))
        print(f"{m}: done", file=sys.stderr, flush=True)
    md = report(results, skipped, header)
    print(md)
    if args.md:
        args.md.write_text(md + "\n")


if __name__ == "__main__":
    main()

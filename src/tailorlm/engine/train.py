"""The one training loop: every trainable method (soft prompt, prefix, LoRA, full) runs through it.

The loop does not know which method it trains. A method hands it a `Trainable`: the parameters to
update, their state dict, and a `loss(batch)`, in which the method puts its virtual tokens, prefix
or adapters in front of the frozen (or not) base model and calls `lm_loss.target_loss`.

It reads top to bottom in the order it runs:

    config ─► batches (length-bucketed, seeded by (seed, epoch)) ─► AdamW + warmup/decay schedule
           ─► resume from the newest verified checkpoint, or seed and start fresh
           ─► loop: micro-batches ─► backward ─► clip ─► step ─► evaluate ─► log ─► checkpoint
           ─► restore the best weights (by the validation metric, higher is better) from memory
           ─► write the final checkpoint: the weights handed back, marked finished

A killed run resumed with `resume=True` ends bit-equal to one that was never killed (CPU, fp32):
the batch order is a pure function of (seed, epoch), and a checkpoint holds everything else a step
reads: weights, optimizer and scheduler state, every RNG, the position in the epoch, and the best
weights so far when they are not the current ones.

Checkpoints are for resuming, so they go by the clock (every `checkpoint_seconds`, 5 minutes by
default), not by epoch or evaluation: a full fine-tune's checkpoint is 1.6 GB (weights and
AdamW's two moments), and one per epoch or evaluation would be most of a short fit. SIGTERM and
SIGINT finish the step under way, write a checkpoint, then act as they would have (stop the
process, or raise KeyboardInterrupt), also when that step was the last; a second one acts at
once; one the process was started ignoring stays ignored. The best weights are a copy in memory,
written once, in the final checkpoint (no optimizer state: a finished run resumes to nothing).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from tailorlm.engine import checkpoint
from tailorlm.engine.train_config import SCHEDULES, TrainConfig  # noqa: F401 (re-exported)
from tailorlm.engine.train_config import tie_tolerance
from tailorlm.errors import TailorError

log = logging.getLogger(__name__)

Row = tuple[list[int], list[int]]  # (token ids, target mask): see lm_loss.encode_example
SCHEDULE_ONLY = ("checkpoint_seconds", "checkpoint_every")  # may change between resumes


class Trainable(Protocol):
    """What a method hands the loop. Nothing here says which method it is."""

    def parameters(self) -> Iterable[torch.nn.Parameter]: ...  # what the optimizer updates
    def state_dict(self) -> dict[str, torch.Tensor]: ...  # the trainable weights only
    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None: ...
    def loss(self, batch: Batch) -> tuple[torch.Tensor, int]: ...  # (mean over targets, count)
    def train(self, mode: bool) -> None: ...  # dropout on or off


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) right-padded with the pad id
    attention_mask: torch.Tensor  # (B, T) 1 on real tokens
    target_mask: torch.Tensor  # (B, T) 1 on the tokens to predict

    def to(self, device: torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device),
                     self.target_mask.to(device))


@dataclass
class TrainResult:
    steps: int
    best_metric: float | None
    best_step: int | None
    losses: list[float] = field(default_factory=list)  # mean target-token loss of each step
    tokens_seen: int = 0  # non-pad input tokens through the model
    seconds: float = 0.0  # wall time, summed over a killed run and its resumes
    stopped_early: bool = False


def collate(rows: list[Row], pad_id: int = 0) -> Batch:
    T = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), T), dtype=torch.long)
    target_mask = torch.zeros((len(rows), T), dtype=torch.long)
    for b, (ids, mask) in enumerate(rows):
        input_ids[b, :len(ids)] = torch.tensor(ids)
        attention_mask[b, :len(ids)] = 1
        target_mask[b, :len(ids)] = torch.tensor(mask)
    return Batch(input_ids, attention_mask, target_mask)


def epoch_batches(lengths: list[int], batch_size: int, grad_accum: int, seed: int,
                  epoch: int) -> list[list[list[int]]]:
    """Row indices of each step of one epoch, split into its micro-batches: [step][micro][row].

    Shuffle, sort by length within windows of 50 steps' worth of rows (rows of similar length share
    a batch, so little padding, while order stays random at the scale of the epoch), cut into steps,
    shuffle the steps (else each window would run short-to-long). A pure function of its arguments:
    a resumed run rebuilds the same epoch and skips the steps already taken.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=g).tolist()
    per_step = batch_size * grad_accum
    window = 50 * per_step
    order = [i for w in range(0, len(order), window)
             for i in sorted(order[w:w + window], key=lambda i: lengths[i])]
    steps = [order[s:s + per_step] for s in range(0, len(order), per_step)]
    steps = [steps[k] for k in torch.randperm(len(steps), generator=g).tolist()]
    return [[step[m:m + batch_size] for m in range(0, len(step), batch_size)] for step in steps]


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the peak lr at `step` (0-based), as transformers' get_*_schedule_with_warmup:
    linear rise from 0 over `warmup` steps, then linear or cosine decay to 0 at `total`, or flat."""
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return max(0.0, 1.0 - progress)


def use_bf16(setting: bool | str) -> bool:
    if setting != "auto":
        return bool(setting)
    from tailorlm.models.load import best_dtype  # reads the CPU flags (AVX512-BF16, AMX) or the GPU

    return best_dtype() == torch.bfloat16


def train(trainable: Trainable, train_rows: list[Row], *, config: TrainConfig, out_dir: Path,
          evaluate: Callable[[], float] | None = None, fingerprint: str, resume: bool = False,
          progress: bool = True, pad_id: int = 0) -> TrainResult:
    """Train `trainable` on `train_rows`; checkpoints and train_log.jsonl go under `out_dir`.

    `evaluate()` returns a validation metric, higher is better; with it, the best weights seen
    are loaded back into `trainable` at the end. `fingerprint` is the caller's hash of the
    data and method config: resuming a checkpoint made with another one is refused.
    """
    if not train_rows:
        raise TailorError("no training rows: give the method a non-empty training split")
    out_dir = Path(out_dir)
    ckpt_root, log_path = out_dir / "checkpoints", out_dir / "train_log.jsonl"
    out_dir.mkdir(parents=True, exist_ok=True)

    # -- plan: every epoch has the same number of steps
    lengths = [len(ids) for ids, _ in train_rows]
    steps_per_epoch = math.ceil(len(train_rows) / (config.batch_size * config.grad_accum))
    total_steps = steps_per_epoch * config.epochs
    warmup = math.ceil(config.warmup_ratio * total_steps)

    # -- optimizer and schedule; master weights stay float32, autocast only computes in bf16
    params = [p for p in trainable.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the trainable has no parameters that require grad")
    device = params[0].device
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup, total_steps, config.schedule))
    bf16 = use_bf16(config.bf16)

    # -- resume from the newest verified checkpoint, or seed every RNG and start fresh
    state = {"step": 0, "best_metric": None, "best_step": None, "bad_evals": 0,
             "stopped_early": False, "tokens_seen": 0, "seconds": 0.0, "losses": []}
    best = None  # a copy of the best weights, once the step after the best has changed them
    best_is_current = False  # the best weights are the trainable's own: copy before the next step
    checkpoint.remove_temps(ckpt_root)
    found = checkpoint.latest(ckpt_root) if resume else None
    if found is not None:
        tensors, saved = checkpoint.read(found)
        _check_same_run(saved, config, fingerprint, len(train_rows), out_dir)
        trainable.load_state_dict(tensors["trainable"])
        state = {k: saved[k] for k in state}
        _truncate_log(log_path, state["step"])
        if saved.get("finished"):  # its weights are the ones the run handed back
            log.info("%s finished at step %d: nothing to train", out_dir, state["step"])
            trainable.train(False)
            return _result(state)
        optimizer.load_state_dict(
            checkpoint.unflatten_optimizer(tensors["optimizer"], saved["optimizer"]))
        scheduler.load_state_dict(saved["scheduler"])
        checkpoint.set_rng_state(tensors["rng"], saved["rng"])
        best = tensors.get("best")
        best_is_current = best is None and state["best_step"] == state["step"]
        log.info("resuming from %s (step %d of %d)", found, state["step"], total_steps)
    else:
        if resume:
            log.info("no complete checkpoint under %s: starting from step 0", ckpt_root)
        elif checkpoint.steps(ckpt_root):
            raise TailorError(f"{out_dir} holds checkpoints of an earlier run: pass --resume to "
                              f"continue it, or choose a new --out")
        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)
    _truncate_log(log_path, state["step"])  # drop lines a killed run wrote after its checkpoint

    def save(step: int) -> None:
        _save(ckpt_root, step, trainable, optimizer, scheduler, state, best, config,
              fingerprint, len(train_rows), log_path)

    # -- the loop
    step = state["step"]
    t0 = time.perf_counter() - state["seconds"]
    last_save = time.perf_counter()
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
               disable=not progress or not sys.stderr.isatty())
    trainable.train(True)
    batches, batches_epoch = None, -1
    with checkpoint.StopSignals() as signals:
        while step < total_steps and not state["stopped_early"]:
            epoch, position = divmod(step, steps_per_epoch)
            if batches_epoch != epoch:
                batches_epoch = epoch
                batches = epoch_batches(lengths, config.batch_size, config.grad_accum,
                                        config.seed, epoch)

            # Backward on the *sum* of token losses of every micro-batch, then divide the
            # gradients by the step's target count: the same gradient as one batch holding all
            # the rows, however the targets fall between micro-batches.
            optimizer.zero_grad(set_to_none=True)
            loss_sum, n_sum = 0.0, 0
            for rows in batches[position]:
                batch = collate([train_rows[i] for i in rows], pad_id).to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss, n = trainable.loss(batch)
                if n:
                    (loss * n).backward()
                loss_sum += loss.item() * n
                n_sum += n
                state["tokens_seen"] += int(batch.attention_mask.sum())
            for p in params:
                if p.grad is not None:
                    p.grad.div_(max(n_sum, 1))
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            if best_is_current:  # copied only now: a best found at the last step costs no copy
                best, best_is_current = _copy(trainable.state_dict()), False
            optimizer.step()
            scheduler.step()
            step += 1
            step_loss = loss_sum / max(n_sum, 1)
            state["losses"].append(step_loss)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")

            # Evaluate on schedule and after the last step, so the final weights can be the best.
            end_of_epoch = position == steps_per_epoch - 1
            due = step % config.eval_every == 0 if config.eval_every else end_of_epoch
            metric = None
            if evaluate is not None and ((due and step >= config.min_steps)
                                         or step == total_steps):
                trainable.train(False)
                with torch.no_grad():
                    metric = float(evaluate())
                trainable.train(True)
                top = state["best_metric"]
                if top is None or metric > top or (
                        config.tie_rows and metric >= top - tie_tolerance(top, config.tie_rows)):
                    # a new best, or a tie with it: these (later) weights are kept
                    state["best_metric"] = metric if top is None else max(top, metric)
                    state["best_step"], state["bad_evals"] = step, 0
                    best_is_current = True
                else:
                    state["bad_evals"] += 1
                    state["stopped_early"] = 0 < config.patience <= state["bad_evals"]

            state["step"], state["seconds"] = step, time.perf_counter() - t0
            if step % config.log_every == 0 or metric is not None or step == total_steps:
                record = {"step": step, "epoch": epoch, "loss": step_loss, "lr": lr,
                          "tokens": state["tokens_seen"], "seconds": round(state["seconds"], 3)}
                if metric is not None:
                    record["eval"] = metric
                with open(log_path, "a") as f:
                    f.write(json.dumps(record) + "\n")

            # A run that is over writes its final checkpoint below, whatever the clock says.
            if step == total_steps or state["stopped_early"]:
                break
            by_steps = config.checkpoint_every and step % config.checkpoint_every == 0
            by_clock = (config.checkpoint_seconds
                        and time.perf_counter() - last_save >= config.checkpoint_seconds)
            if by_steps or by_clock or signals.received:
                save(step)
                last_save = time.perf_counter()
            if signals.received:
                log.info("stopping at step %d on %s: checkpoint written (resume continues it)",
                         step, signal.Signals(signals.received).name)
                bar.close()
                signals.act()  # raises KeyboardInterrupt, or ends the process (SIGTERM)
        bar.close()
        trainable.train(False)

        # -- the best weights, not the last, are what the method keeps; written once, with the
        # state. Still under StopSignals: a signal now waits for the write, then acts; one that
        # came during the last step is not lost because the run ended with it
        if best is not None and state["best_step"] != step:
            trainable.load_state_dict(best)
        _save_final(ckpt_root, step, trainable, state, config, fingerprint, len(train_rows),
                    log_path)
        if signals.received:
            log.info("stopping after the last step on %s: final checkpoint written",
                     signal.Signals(signals.received).name)
            signals.act()
    return _result(state)


def _result(state: dict) -> TrainResult:
    return TrainResult(steps=state["step"], best_metric=state["best_metric"],
                       best_step=state["best_step"], losses=list(state["losses"]),
                       tokens_seen=state["tokens_seen"], seconds=state["seconds"],
                       stopped_early=state["stopped_early"])


def _copy(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in sd.items()}


def _save(root, step, trainable, optimizer, scheduler, state, best, config, fingerprint, n_rows,
          log_path) -> None:
    """A resume checkpoint: everything the next step reads, and the best weights if not these."""
    _fsync_file(log_path)  # the log must hold every step the checkpoint covers
    opt_tensors, opt_meta = checkpoint.flatten_optimizer(optimizer.state_dict())
    rng_tensors, rng_meta = checkpoint.rng_state()
    saved = {**state, "config": asdict(config), "fingerprint": fingerprint, "n_rows": n_rows,
             "optimizer": opt_meta, "scheduler": scheduler.state_dict(), "rng": rng_meta}
    tensors = {"trainable": trainable.state_dict(), "optimizer": opt_tensors, "rng": rng_tensors}
    if best is not None and state["best_step"] != step:
        tensors["best"] = best
    checkpoint.write(root, step, tensors, saved)
    checkpoint.prune(root, step, keep_last=2)


def _save_final(root, step, trainable, state, config, fingerprint, n_rows, log_path) -> None:
    """The finished run: the weights it hands back and its state, no optimizer or RNG (nothing
    is left to train). Resuming it returns these weights at once."""
    _fsync_file(log_path)
    saved = {**state, "config": asdict(config), "fingerprint": fingerprint, "n_rows": n_rows,
             "finished": True}
    checkpoint.write(root, step, {"trainable": trainable.state_dict()}, saved)
    checkpoint.prune(root, step, keep_last=2)


def _check_same_run(saved: dict, config: TrainConfig, fingerprint: str, n_rows: int,
                    out_dir: Path) -> None:
    """Refuse to continue a checkpoint made from other data, method config or training config."""
    now = asdict(config)
    diffs = [f"{k}: {v!r} in the checkpoint, {now.get(k)!r} now"
             for k, v in saved["config"].items() if now.get(k) != v and k not in SCHEDULE_ONLY]
    if saved["fingerprint"] != fingerprint:
        diffs.insert(0, "the data or method config (fingerprint "
                        f"{saved['fingerprint'][:12]} in the checkpoint, {fingerprint[:12]} now)")
    if saved["n_rows"] != n_rows:
        diffs.append(f"training rows: {saved['n_rows']} in the checkpoint, {n_rows} now")
    if diffs:
        raise TailorError(f"cannot resume {out_dir}: {'; '.join(diffs)}. Use a new --out to start "
                          f"this run fresh, or drop --resume")


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log lines of steps <= step, so a resumed run's log equals an uninterrupted one's."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):  # a line torn by the kill
            pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


def _fsync_file(path: Path) -> None:
    if path.exists():
        with open(path, "rb+") as f:
            os.fsync(f.fileno())

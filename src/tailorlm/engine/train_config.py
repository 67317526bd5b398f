"""What a training run is told: its options, checked when they are given.

`TrainConfig` is plain data, apart from the loop that reads it (engine/train.py), so a method's
config can check its training options (methods/tuned.py) when an adapter is only loaded to be
used, without importing the loop:

    TrainConfig(epochs=3, lr=1e-3)      # fine
    TrainConfig(lr=0)                   # TailorError: lr must be above 0 ...
"""

from __future__ import annotations

from dataclasses import dataclass

from tailorlm.errors import TailorError

SCHEDULES = ("linear", "cosine", "constant")


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 8  # rows per forward pass; a step sees batch_size * grad_accum rows
    grad_accum: int = 1  # forward passes per optimizer step: a bigger step in the same memory
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1  # share of all steps during which lr rises linearly from 0
    schedule: str = "linear"  # after warmup: "linear" to 0, "cosine" to 0, or "constant"
    max_grad_norm: float = 1.0  # clip the global gradient norm to this; 0 = no clipping
    seed: int = 0
    eval_every: int = 0  # steps between evaluations; 0 = at the end of each epoch
    patience: int = 0  # stop after this many evaluations without a new best; 0 = never stop early
    # Evaluations start at this step: neither the best checkpoint nor early stopping reads
    # anything earlier (the last step is always evaluated). 0 = from the first one.
    min_steps: int = 0
    # The rows `evaluate` judges on, when the metric is a share of them (accuracy, F1): then an
    # evaluation within a standard error of the best so far (tie_tolerance) ties it, and the
    # later weights are kept. 0 = only a strictly higher value is a new best.
    tie_rows: int = 0
    bf16: bool | str = "auto"  # bfloat16 autocast; "auto" = where the hardware computes it natively
    # Resume checkpoints: every checkpoint_seconds of training (and on SIGTERM/SIGINT), and every
    # checkpoint_every steps if set; 0 turns either off. Neither changes what the run computes.
    checkpoint_seconds: float = 300.0
    checkpoint_every: int = 0
    log_every: int = 1  # steps between lines of train_log.jsonl

    def __post_init__(self) -> None:
        least = {"epochs": 1, "batch_size": 1, "grad_accum": 1, "log_every": 1, "eval_every": 0,
                 "patience": 0, "min_steps": 0, "tie_rows": 0, "checkpoint_every": 0, "seed": 0}
        for name, low in least.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise TailorError(f"{name} must be a whole number of at least {low}, "
                                  f"not {value!r}")
        if not self.lr > 0:
            raise TailorError(f"lr must be above 0 (e.g. 1e-3 for a soft prompt), not {self.lr!r}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise TailorError("weight_decay and max_grad_norm must be 0 or more "
                              "(max_grad_norm 0 turns clipping off)")
        if not 0 <= self.warmup_ratio < 1:
            raise TailorError(f"warmup_ratio is a share of all steps: give 0 <= ratio < 1, "
                              f"not {self.warmup_ratio!r}")
        if self.schedule not in SCHEDULES:
            raise TailorError(f"schedule must be one of {', '.join(SCHEDULES)}, "
                              f"not {self.schedule!r}")
        if isinstance(self.checkpoint_seconds, bool) or not isinstance(
                self.checkpoint_seconds, (int, float)) or not self.checkpoint_seconds >= 0:
            raise TailorError(f"checkpoint_seconds must be 0 (off) or more, e.g. 300 for a "
                              f"resume checkpoint every 5 minutes, not {self.checkpoint_seconds!r}")
        if self.bf16 not in ("auto", True, False):
            raise TailorError(f"bf16 must be 'auto', true or false, not {self.bf16!r}")


def tie_tolerance(best: float, rows: int) -> float:
    """How far under `best` an evaluation on `rows` rows still ties it: the standard error of a
    share `best` of `rows` rows, at least one row's worth (24 rows at 0.875: 0.068, 1.6 rows;
    8 rows: 0.125). For a mean of per-row scores in [0, 1] (ROUGE-L) it is an upper bound on the
    standard error. Validation this small cannot tell the evaluations apart, and on few rows a
    longer fit is the better bet (few-sample fine-tuning gains from more steps: Mosbach et al.
    2021, Zhang et al. 2021), so the later one is kept."""
    share = min(max(best, 0.0), 1.0)
    return max((share * (1 - share) / rows) ** 0.5, 1 / rows)

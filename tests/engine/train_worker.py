"""A toy soft-prompt training run, shared by test_train.py and its SIGKILL subprocess.

    python tests/engine/train_worker.py OUT_DIR [--resume] [--sleep SECONDS]
                                            [--checkpoint-every STEPS] [--checkpoint-seconds S]

Virtual-token embeddings prepended through inputs_embeds to a frozen tiny Llama, with dropout on
them so that the RNG state matters to a resumed run. `--sleep` slows each micro-batch, so the
parent can kill the run after a chosen checkpoint, before the run ends.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: conftest, helpers

from tailorlm.engine.lm_loss import encode_example, target_loss  # noqa: E402
from tailorlm.engine.train import Batch, TrainConfig, train  # noqa: E402

FINGERPRINT = "toy-sentiment-v1"
POS = ["a great film", "I loved it", "wonderful and fun", "the best movie", "great acting",
       "a joy to watch", "loved the cast", "fun and great", "the cat sat on the mat"]
NEG = ["a bad film", "I hated it", "boring and dull", "the worst movie", "bad acting",
       "a waste of time", "hated the cast", "dull and bad", "a dog ran in the park"]


class SoftPrompt:
    """n trainable vectors in front of every input; the base model stays frozen."""

    def __init__(self, model, n_virtual: int = 4, dropout: float = 0.1, seed: int = 0):
        self.model = model.requires_grad_(False)
        g = torch.Generator().manual_seed(seed)
        C = model.config.hidden_size
        self.prompt = torch.nn.Parameter(torch.randn(n_virtual, C, generator=g))  # (V, C)
        self.dropout, self.training = dropout, False
        self.sleep = 0.0  # seconds each loss() waits: lets the SIGKILL test catch a run mid-way
        self.calls = 0  # loss() calls: a resumed run makes fewer
        self.autocast_seen = None  # whether the last loss() ran under CPU autocast

    def parameters(self):
        return [self.prompt]

    def state_dict(self):
        return {"prompt": self.prompt.detach().clone()}

    def load_state_dict(self, sd):
        with torch.no_grad():
            self.prompt.copy_(sd["prompt"])

    def train(self, mode: bool) -> None:
        self.training = mode

    def loss(self, batch: Batch):
        time.sleep(self.sleep)
        self.calls += 1
        self.autocast_seen = torch.is_autocast_enabled("cpu")
        B, V = batch.input_ids.shape[0], self.prompt.shape[0]
        prompt = F.dropout(self.prompt, self.dropout, self.training).expand(B, V, -1)  # (B, V, C)
        embeds = torch.cat([prompt, self.model.get_input_embeddings()(batch.input_ids)], 1)
        zeros = torch.zeros(B, V, dtype=torch.long)
        return target_loss(self.model, torch.cat([zeros, batch.input_ids], 1),
                           torch.cat([zeros + 1, batch.attention_mask], 1),
                           torch.cat([zeros, batch.target_mask], 1), inputs_embeds=embeds)


def make_backend():
    from helpers import tiny_backend

    backend = tiny_backend()
    # The random tiny model's logits are nearly flat (std ~0.1), so no prompt could move its loss;
    # a sharper head gives the virtual tokens something to steer.
    with torch.no_grad():
        backend.model.lm_head.weight.mul_(30)
    return backend


def make_rows(backend):
    pairs = [(f"Review: {t}\nSentiment:", " positive") for t in POS]
    pairs += [(f"Review: {t}\nSentiment:", " negative") for t in NEG]
    return [encode_example(backend, p, t) for p, t in pairs]


def config(**overrides) -> TrainConfig:
    base = dict(epochs=3, batch_size=4, lr=0.05, warmup_ratio=0.1, checkpoint_every=1, bf16=False,
                seed=0)
    return TrainConfig(**{**base, **overrides})


def run(out_dir, *, resume=False, sleep=0.0, dropout=0.1, evaluate=None,
        fingerprint=FINGERPRINT, **overrides):
    """Train the toy soft prompt; `evaluate(trainable)` -> metric, if given. (trainable, result)"""
    torch.set_num_threads(1)  # same reduction order in the subprocess and in pytest
    backend = make_backend()
    trainable = SoftPrompt(backend.model, dropout=dropout)
    trainable.sleep = sleep
    result = train(trainable, make_rows(backend), config=config(**overrides),
                   out_dir=Path(out_dir), fingerprint=fingerprint, resume=resume, progress=False,
                   evaluate=(lambda: evaluate(trainable)) if evaluate else None,
                   pad_id=backend.tokenizer.pad_token_id)
    return trainable, result


if __name__ == "__main__":
    args = sys.argv[1:]

    def option(name, kind, default):
        return kind(args[args.index(name) + 1]) if name in args else default

    run(args[0], resume="--resume" in args, sleep=option("--sleep", float, 0.0),
        checkpoint_every=option("--checkpoint-every", int, 1),
        checkpoint_seconds=option("--checkpoint-seconds", float, 300.0))

"""Label scoring with the shared prompt cache vs one forward pass per label, on banking77.

banking77 has 77 labels of 1-6 tokens. The baseline runs prompt + label for every label (batched
16 sequences at a time, right-padded, as an evaluation harness would); ours runs the prompt once and
scores every label from its key/value cache (engine/scoring.py). Same token ids on both sides.

    .venv/bin/python bench/label_scoring.py [--n 40] [--dtype float32]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from common import backend, task, timed
from tailorlm.engine.scoring import score_labels
from tailorlm.methods.templates import CLASSIFICATION


def per_label_forward(be, prompts, continuations, batch_size=16):
    """log p(label | prompt) with one full forward pass per (prompt, label) pair."""
    pad = be.tokenizer.pad_token_id
    labels = [be.encode(c) for c in continuations]
    out = np.zeros((len(prompts), len(labels)))
    with torch.inference_mode():
        for i, p in enumerate(prompts):
            ids = (be.encode(p.shared) if p.shared else []) + be.encode(p.own)
            for l0 in range(0, len(labels), batch_size):
                chunk = labels[l0:l0 + batch_size]
                seqs = [ids + lab for lab in chunk]
                T = max(map(len, seqs))
                x = torch.full((len(seqs), T), pad)
                mask = torch.zeros((len(seqs), T), dtype=torch.long)
                for r, s in enumerate(seqs):
                    x[r, :len(s)] = torch.tensor(s)
                    mask[r, :len(s)] = 1
                logp = torch.log_softmax(be.model(input_ids=x, attention_mask=mask).logits.float(), -1)
                for r, lab in enumerate(chunk):
                    pos = torch.arange(len(ids) - 1, len(ids) - 1 + len(lab))
                    out[i, l0 + r] = logp[r, pos, torch.tensor(lab)].double().sum().item()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    be = backend(args.dtype)
    train, test = task("banking77", "test", n=args.n)
    template = CLASSIFICATION["text_intent"]
    prompts = [template.prompt(test, e) for e in test.examples]
    conts = template.continuations(test)
    lens = [len(be.encode(c)) for c in conts]
    cached, t_cached = timed(lambda: score_labels(be, prompts, conts))
    naive, t_naive = timed(lambda: per_label_forward(be, prompts, conts))
    same = (cached.argmax(1) == naive.argmax(1)).mean()
    gold = np.array([test.labels.index(e.label) for e in test.examples])
    print(f"banking77: {len(prompts)} queries x {len(conts)} labels "
          f"({min(lens)}-{max(lens)} tokens, mean {np.mean(lens):.1f}), dtype {args.dtype}")
    print(f"shared prompt cache : {t_cached:7.1f} s  accuracy {(cached.argmax(1) == gold).mean():.3f}")
    print(f"forward per label   : {t_naive:7.1f} s  accuracy {(naive.argmax(1) == gold).mean():.3f}")
    print(f"speed-up {t_naive / t_cached:.1f}x; same prediction on {same:.1%} of queries; "
          f"max |score difference| {np.abs(cached - naive).max():.2e}")


if __name__ == "__main__":
    main()

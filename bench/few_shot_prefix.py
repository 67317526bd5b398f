"""Few-shot scoring with the demonstrations' key/value prefix computed once vs recomputed per query.

sst2, 8 balanced demonstrations. Ours: Prompt(shared=demos, own=query): the engine runs the
demonstrations once and reuses their cache for every batch. Baseline: the same token ids given as
each query's own input (`share_prefix=False`), so every query recomputes them.

    .venv/bin/python bench/few_shot_prefix.py [--n 200] [--demos 8] [--dtype float32]
"""

from __future__ import annotations

import argparse

import numpy as np

from common import backend, task, timed
from tailorlm.data.sample import k_per_class
from tailorlm.engine.scoring import score_labels
from tailorlm.methods.few_shot import pick_demos
from tailorlm.methods.templates import CLASSIFICATION


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--demos", type=int, default=8)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    be = backend(args.dtype)
    train, test = task("sst2", "test", n=args.n)
    shots = k_per_class(train, 16, 0)
    demos = pick_demos(shots.examples, args.demos, "balanced", train.labels,
                       np.random.default_rng(0))
    template = CLASSIFICATION["text_sentiment"]
    cached = [template.prompt(test, e, demos) for e in test.examples]
    conts = template.continuations(test)
    a, t_cached = timed(lambda: score_labels(be, cached, conts))
    b, t_recomputed = timed(lambda: score_labels(be, cached, conts, share_prefix=False))
    gold = np.array([test.labels.index(e.label) for e in test.examples])
    prefix = len(be.encode(cached[0].shared))
    own = np.mean([len(be.encode(p.own)) for p in cached])
    print(f"sst2: {len(cached)} queries, {len(demos)} demonstrations = {prefix} shared tokens, "
          f"{own:.0f} own tokens per query, dtype {args.dtype}")
    print(f"cached demonstration prefix : {t_cached:7.1f} s  accuracy {(a.argmax(1) == gold).mean():.3f}")
    print(f"recomputed per query        : {t_recomputed:7.1f} s  accuracy {(b.argmax(1) == gold).mean():.3f}")
    print(f"speed-up {t_recomputed / t_cached:.1f}x; same prediction on "
          f"{(a.argmax(1) == b.argmax(1)).mean():.1%} of queries; max |score difference| "
          f"{np.abs(a - b).max():.2e}")


if __name__ == "__main__":
    main()

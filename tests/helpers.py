"""Test helpers: a tiny Backend and small tasks, built offline."""

from __future__ import annotations

import json

import numpy as np
import torch

from tailorlm.data.task import Example, Task
from tailorlm.models.backend import LocalBackend


def tiny_backend(seed: int = 0) -> LocalBackend:
    from conftest import build_tiny_llama, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    model = build_tiny_llama(len(tokenizer), seed=seed)
    model.config.max_position_embeddings = 512
    return LocalBackend("tiny", "test/tiny-llama", "0" * 64, model, tokenizer, "(memory)")


def sharp_tiny_backend(seed: int = 0) -> LocalBackend:
    """tiny_backend with its LM head scaled x30: a random tiny model's logits are nearly flat
    (std ~0.1), so no prompt or adapter could move its loss; a sharper head gives training
    something to steer."""
    backend = tiny_backend(seed)
    with torch.no_grad():
        backend.model.lm_head.weight.mul_(30)
    return backend


def reference_scores(backend: Backend, prompts, continuations: list[str]) -> np.ndarray:
    """Label log-likelihoods the slow, obvious way: one full forward pass per (prompt, label).

    Prompts are `Prompt`s or plain strings; a Prompt's parts are tokenized apart, as the engine does.
    """
    out = np.zeros((len(prompts), len(continuations)))
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            if isinstance(prompt, str):
                p = backend.encode(prompt)
            else:
                p = (backend.encode(prompt.shared) if prompt.shared else []) + \
                    backend.encode(prompt.own)
            for j, cont in enumerate(continuations):
                c = backend.encode(cont)
                logits = backend.model(torch.tensor([p + c])).logits[0].double()
                logp = torch.log_softmax(logits, -1)
                out[i, j] = sum(logp[len(p) - 1 + t, c[t]].item() for t in range(len(c)))
    return out


def sentiment_task(n_per_class: int = 6) -> Task:
    pos = ["a great film", "I loved it", "wonderful and fun", "the best movie", "great acting",
           "a joy to watch", "loved the cast", "fun and great"]
    neg = ["a bad film", "I hated it", "boring and dull", "the worst movie", "bad acting",
           "a waste of time", "hated the cast", "dull and bad"]
    rows = [Example(input=t, target="positive", label="positive") for t in pos[:n_per_class]]
    rows += [Example(input=t, target="negative", label="negative") for t in neg[:n_per_class]]
    return Task(name="tiny-sentiment", kind="classification", examples=rows)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def wait_until_up(url: str, proc, what: str, seconds: float = 120, log=None) -> None:
    """Poll `url` until it answers; fail the test (with the end of `log`, a Path, if given)
    when `proc` exits or `seconds` pass first. For servers a test starts as a subprocess."""
    import time
    import urllib.request

    import pytest

    deadline = time.time() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                tail = log.read_text()[-2000:] if log is not None else ""
                pytest.fail(f"{what} did not start within {seconds:.0f} s {tail}")
            time.sleep(0.5)


def stop_process(proc, seconds: float = 20) -> None:
    """Terminate a server a test started; kill it if it has not exited within `seconds`."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()

"""Contextual calibration (Zhao et al. 2021, "Calibrate Before Use").

A prompt biases a model towards some labels whatever the input (the majority label among the
demonstrations, the last one shown, the more frequent word). Measure that bias on content-free
inputs ("N/A", "", "[MASK]") placed where the query goes:

    p_cf = mean over content-free inputs of softmax(log p(label | prompt(cf)))      # (L,)
    calibrated score(label | x) = log softmax(log p(label | x)) - log p_cf          # W = diag(p_cf)^-1

Both prompt methods offer it (`calibrate: on | off | auto`); `auto` keeps it only when it scores
higher on the validation data.
"""

from __future__ import annotations

import numpy as np

from tailorlm.data.task import Example

CONTENT_FREE = ("N/A", "", "[MASK]")


def content_free_examples() -> list[Example]:
    return [Example(input=text, target="") for text in CONTENT_FREE]


def label_bias(cf_logprobs: np.ndarray) -> np.ndarray:
    """Log of the mean label distribution over content-free inputs: (n_cf, L) -> (L,)."""
    probs = np.exp(cf_logprobs - np.logaddexp.reduce(cf_logprobs, axis=1, keepdims=True))
    return np.log(probs.mean(axis=0))


def calibrate(logprobs: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    if bias is None:
        return logprobs
    normalised = logprobs - np.logaddexp.reduce(logprobs, axis=1, keepdims=True)
    return normalised - bias[None, :]

"""The cost meter: what a fit or an evaluation spent, recorded beside what it scored.

    with CostMeter() as m:
        for batch in loader:
            ...
            m.add_tokens(batch_tokens)
    m.add_flops(train_flops(n_params, m.tokens, n_trainable))
    m.seconds, m.start_rss_mb, m.peak_rss_mb, m.peak_delta_mb, m.tokens, m.flops

Time is wall-clock (`time.perf_counter`). Memory is the process's peak resident set size (RSS)
during the phase, in MiB (2**20 bytes), and the RSS when it started; a run's own memory is the
difference, `peak_delta_mb` (the base model, loaded before, is not in it). Before reading the
starting RSS the meter collects garbage and hands freed heap pages back to the system
(`release_memory`: glibc's malloc_trim), so what an earlier phase freed but the allocator kept
is not counted as this phase's baseline and then reused for free. Linux keeps a high-water mark, VmHWM in /proc/self/status;
writing "5" to /proc/self/clear_refs resets it to the current RSS, so the mark read at the end is
the phase's own peak. Where that write is refused, a thread samples VmRSS every 20 ms instead
(it can miss a spike shorter than that). Off Linux, the process-lifetime peak from getrusage is used.

FLOPs are estimated, not counted, with the approximation of Kaplan et al. 2020 ("Scaling Laws for
Neural Language Models", §2.1): a forward pass costs about 2 FLOPs per parameter per token (one
multiply and one add per weight), and the backward pass twice that: 2 to carry the gradient back
through the activations, 2 for the weights' own gradients. Frozen weights need no gradient of
their own, but the gradient still flows back through them to whatever trains below or beside them:

    evaluation                          2·N·T          (forward only)
    full fine-tuning                    6·N·T          (every weight trains)
    frozen base, N_tr new parameters    4·N·T + 6·N_tr·T   (LoRA, soft prompt, prefix)

for N base parameters and T tokens. It leaves out attention over the context (2·layers·context·
d_model per token), small while the context is short next to 12·d_model.
"""

from __future__ import annotations

import ctypes
import gc
import os
import re
import sys
import threading
import time
from pathlib import Path

_STATUS = "/proc/self/status"
_MIB = 2**20


def _status_kib(field: str) -> int | None:
    """A `kB` field of /proc/self/status (e.g. VmRSS, VmHWM), or None where there is none."""
    try:
        with open(_STATUS) as f:
            match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def current_rss_mb() -> float:
    kib = _status_kib("VmRSS")
    return kib / 1024 if kib is not None else peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak RSS of this process in MiB, since it started or since the last `reset_peak_rss()`."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib / 1024
    try:
        import resource
    except ImportError:  # Windows: no cheap peak to read; report nothing rather than guess
        return 0.0
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / _MIB if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS, KiB elsewhere


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS; False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _RssSampler:
    """Fallback peak tracker: the largest VmRSS seen by a thread polling every `interval` seconds."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak_mb = current_rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tailorlm-rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, current_rss_mb())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak_mb, current_rss_mb())


def release_memory() -> None:
    """Collect garbage and return the allocator's free heap pages to the system (glibc), so the
    RSS read next is what the process holds, not what it once held."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim, the RSS is read as it is
        pass


def forward_flops(n_params: int, n_tokens: int) -> int:
    """Kaplan estimate of one forward pass over `n_tokens` tokens: 2·N·T."""
    return 2 * n_params * n_tokens


def train_flops(n_params: int, n_tokens: int, n_trainable: int | None = None) -> int:
    """Kaplan estimate of training on `n_tokens` tokens (forward + backward).

    `n_params` is the base model's parameter count. Every weight trains (full fine-tuning, or
    `n_trainable` None or at least `n_params`): 6·N·T. A frozen base with `n_trainable` new
    parameters beside it (LoRA, soft prompt, prefix): 4·N·T + 6·N_tr·T, since frozen weights carry
    the gradient back (2·N·T) but need none of their own.
    """
    if n_trainable is None or n_trainable >= n_params:
        return 6 * n_params * n_tokens
    return 4 * n_params * n_tokens + 6 * n_trainable * n_tokens


class CostMeter:
    """Wall seconds, peak RSS, tokens and estimated FLOPs of the code inside `with CostMeter() as m:`."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.start_rss_mb = 0.0
        self.peak_rss_mb = 0.0
        self.tokens = 0
        self.flops = 0
        self._t0 = 0.0
        self._sampler: _RssSampler | None = None

    def add_tokens(self, n: int) -> None:
        self.tokens += int(n)

    def add_flops(self, n: int) -> None:
        self.flops += int(n)

    @property
    def peak_delta_mb(self) -> float:
        """How far the peak rose above the RSS the phase started with."""
        return self.peak_rss_mb - self.start_rss_mb

    def __enter__(self) -> CostMeter:
        release_memory()
        self.start_rss_mb = current_rss_mb()
        if not reset_peak_rss() and _status_kib("VmRSS") is not None:
            self._sampler = _RssSampler()
            self._sampler.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0
        if self._sampler is not None:
            self.peak_rss_mb = self._sampler.stop()
            self._sampler = None
        else:
            self.peak_rss_mb = peak_rss_mb()

    def as_dict(self) -> dict[str, float | int]:
        return {
            "seconds": self.seconds,
            "peak_rss_mb": self.peak_rss_mb,
            "start_rss_mb": self.start_rss_mb,
            "tokens": self.tokens,
            "flops": self.flops,
        }


def count_params(module) -> tuple[int, int]:
    """(trainable, total) parameter counts of a torch module; tied weights count once."""
    trainable = total = 0
    for p in module.parameters():  # parameters() yields each shared tensor once
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def dir_bytes(path: str | os.PathLike) -> int:
    """Total size in bytes of the files under `path` (a file's own size; 0 if it is missing).

    Symlinks are not followed, so a file linked twice is not counted twice.
    """
    root = Path(path)
    if root.is_file():
        return root.stat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            file = Path(dirpath, name)
            if not file.is_symlink():
                total += file.stat().st_size
    return total

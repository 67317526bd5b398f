"""The cost meter: what a fit or an evaluation spent, recorded beside what it scored.

    with CostMeter() as m:
        for batch in loader:
            ...
            m.add_tokens(batch_tokens)
    m.add_flops(train_flops(n_params, m.tokens))  # n_params: all of them, frozen too
    m.seconds, m.peak_rss_mb, m.tokens, m.flops

Time is wall-clock (`time.perf_counter`). Memory is the process's peak resident set size (RSS)
during the phase, in MiB (2**20 bytes). Linux keeps a high-water mark, VmHWM in /proc/self/status;
writing "5" to /proc/self/clear_refs resets it to the current RSS, so the mark read at the end is
the phase's own peak. Where that write is refused, a thread samples VmRSS every 20 ms instead
(it can miss a spike shorter than that). Off Linux, the process-lifetime peak from getrusage is used.

FLOPs are estimated, not counted, with the approximation of Kaplan et al. 2020 ("Scaling Laws for
Neural Language Models", §2.1): a forward pass costs about 2 FLOPs per parameter per token (one
multiply and one add per weight), and the backward pass twice that, so training costs about 6·N·T
for N parameters and T tokens. It leaves out attention over the context (2·layers·context·d_model
per token), small while the context is short next to 12·d_model. Frozen parameters still cost the
forward pass and the backward pass through activations, so N is the total, not the trainable count.
"""

from __future__ import annotations

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


def forward_flops(n_params: int, n_tokens: int) -> int:
    """Kaplan estimate of one forward pass over `n_tokens` tokens: 2·N·T."""
    return 2 * n_params * n_tokens


def train_flops(n_params: int, n_tokens: int) -> int:
    """Kaplan estimate of training on `n_tokens` tokens (forward + backward): 6·N·T."""
    return 6 * n_params * n_tokens


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

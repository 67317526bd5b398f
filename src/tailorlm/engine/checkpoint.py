"""Training checkpoints: written atomically, verified before use, no pickle anywhere.

    out_dir/checkpoints/
      step-000120/              a complete checkpoint
        trainable.safetensors   the method's trainable weights
        optimizer.safetensors   optimizer state tensors, flattened: "<param index>.<name>"
        rng.safetensors         torch CPU (and CUDA) generator states
        best.safetensors        the best weights so far, when they are not the trainable's
        state.json              step, position, best metric, config, fingerprint, scheduler,
                                optimizer hyper-parameters, python/numpy RNG states, loss history
        COMPLETE                {file name: sha256} of every file above; written last
      step-000150/              a finished run's: the weights it handed back and state.json
                                (finished: true), no optimizer or RNG; resuming it trains nothing
      .tmp-step-000123-4242/    a checkpoint being written (or torn by a crash): never read

A checkpoint is written into `.tmp-step-…-<pid>`, every file fsync'd, COMPLETE written last, then
the folder is renamed into place (a rename is atomic on POSIX). So a folder named `step-*` is whole
unless something damaged it afterwards; `latest()` also checks every hash, and skips any that fail.
Tensors go through safetensors and everything else through JSON, because loading a pickle can run
arbitrary code (our safety rules refuse torch.load).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import signal
import threading
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

log = logging.getLogger(__name__)

MARKER = "COMPLETE"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:06d}"


def write(root: Path, step: int, tensors: dict[str, dict[str, torch.Tensor]], state: dict) -> Path:
    """Write `tensors[name]` to `name.safetensors` and `state` to state.json, atomically."""
    root.mkdir(parents=True, exist_ok=True)
    final = step_dir(root, step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    hashes = {}
    for name, group in tensors.items():
        group = _own_storage(group)
        hashes[f"{name}.safetensors"] = _write_synced(tmp / f"{name}.safetensors", st_save(group))
    hashes["state.json"] = _write_synced(tmp / "state.json", json.dumps(state).encode())
    _write_synced(tmp / MARKER, json.dumps(hashes, indent=1).encode())
    _fsync_dir(tmp)
    if final.exists():  # only a damaged one can be here: latest() skipped it, so we redo its step
        aside = root / f".tmp-old-{final.name}-{os.getpid()}"
        os.replace(final, aside)
        shutil.rmtree(aside)
    os.replace(tmp, final)
    _fsync_dir(root)
    return final


def read(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """The tensor groups and state of a checkpoint folder, after checking every hash."""
    files = verified_files(path)
    if files is None:
        raise ValueError(f"{path} is not a complete checkpoint: no COMPLETE marker, or a hash "
                         f"does not match")
    tensors = {name.removesuffix(".safetensors"): st_load(data)
               for name, data in files.items() if name.endswith(".safetensors")}
    return tensors, json.loads(files["state.json"])


def verified_files(path: Path) -> dict[str, bytes] | None:
    """Every file of a checkpoint, keyed by name, if its marker lists them and all hashes match."""
    try:
        hashes = json.loads((path / MARKER).read_text())
        files = {name: (path / name).read_bytes() for name in hashes}
    except (OSError, ValueError):
        return None
    if "state.json" not in files:
        return None
    if any(hashlib.sha256(data).hexdigest() != hashes[name] for name, data in files.items()):
        return None
    return files


def steps(root: Path) -> list[int]:
    """Step numbers of the `step-*` folders under root (complete or not), ascending."""
    if not root.is_dir():
        return []
    found = (_STEP_DIR.match(p.name) for p in root.iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


def latest(root: Path) -> Path | None:
    """The newest checkpoint whose marker exists and whose hashes verify; torn ones are skipped."""
    for step in reversed(steps(root)):
        if verified_files(step_dir(root, step)) is not None:
            return step_dir(root, step)
    return None


def remove_temps(root: Path) -> None:
    """Delete `.tmp-*` folders: checkpoints a killed run was writing. One run owns an out_dir."""
    if root.is_dir():
        for tmp in root.glob(".tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)


def prune(root: Path, current: int, *, keep_last: int = 2, keep: set[int] = frozenset()) -> None:
    """Keep the newest `keep_last` complete checkpoints up to step `current` and the steps in
    `keep`; delete the rest, including any past `current` (left torn by a run that was resumed
    from an earlier step: they are from a future this run has replaced)."""
    complete = [s for s in steps(root) if s <= current and (step_dir(root, s) / MARKER).exists()]
    kept = set(complete[-keep_last:]) | set(keep)
    for s in steps(root):
        if s not in kept:
            shutil.rmtree(step_dir(root, s), ignore_errors=True)


# -- stopping on a signal, after a checkpoint --------------------------------------------------

class StopSignals:
    """SIGTERM and SIGINT, caught while training (main thread only) so that the loop can finish
    its step and write a checkpoint first: it checks `received` after each step, then calls
    `act()`, which does what the signal would have done (KeyboardInterrupt, or the end of the
    process). A second signal acts at once, without a checkpoint. A signal the process was
    started ignoring (nohup, `cmd &` in a script) is left ignored."""

    CAUGHT = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: int | None = None
        self.previous: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.CAUGHT:
                # a process started ignoring it (nohup, `cmd &` in a script) keeps ignoring it
                if signal.getsignal(s) is not signal.SIG_IGN:
                    self.previous[s] = signal.signal(s, self._on_signal)
        return self

    def _on_signal(self, signum, frame) -> None:
        if self.received is not None:  # asked twice: stop now
            self.act(signum)
        self.received = signum
        log.warning("%s: finishing the step and writing a checkpoint (again to stop now)",
                    signal.Signals(signum).name)

    def act(self, signum: int | None = None) -> None:
        self.restore()
        signal.raise_signal(signum or self.received)

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self.previous = {}

    def __exit__(self, *exc) -> None:
        self.restore()


# -- what a checkpoint holds beyond the weights ------------------------------------------------

def flatten_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """optimizer.state_dict() as (tensors, JSON-able rest): tensors keyed "<param index>.<name>"."""
    tensors, scalars = {}, defaultdict(dict)
    for index, param_state in sd["state"].items():
        for name, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value
            else:
                scalars[str(index)][name] = value
    return tensors, {"state": scalars, "param_groups": sd["param_groups"]}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state = defaultdict(dict)
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state[int(index)][name] = value
    for index, values in meta["state"].items():
        state[int(index)].update(values)
    return {"state": dict(state), "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """Every generator a training step may draw from: torch (CPU, CUDA), python, numpy."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    key, pos = np_state["state"]["key"], np_state["state"]["pos"]
    np_state["state"] = {"key": key.tolist(), "pos": int(pos)}
    return tensors, {"python": [version, list(internal), gauss], "numpy": np_state}


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = dict(meta["numpy"])
    np_state["state"] = {"key": np.array(np_state["state"]["key"], dtype=np.uint32),
                         "pos": np_state["state"]["pos"]}
    np.random.set_state(np_state)


def _own_storage(group: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU tensors that each own their storage. safetensors refuses tensors that share memory
    (tied weights, views); copying only those keeps a full fine-tune's save from doubling RAM."""
    out, seen = {}, set()
    for key, value in group.items():
        value = value.detach().cpu().contiguous()
        storage = value.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != value.nbytes:
            value = value.clone()
        seen.add(value.untyped_storage().data_ptr())
        out[key] = value
    return out


def _write_synced(path: Path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    """Make a folder's entries (new files, a rename) durable; not possible on Windows."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

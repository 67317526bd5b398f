"""The training loop, on a toy soft prompt over a frozen tiny Llama (see train_worker.py)."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import train_worker as worker  # noqa: E402
from tailorlm.engine import checkpoint  # noqa: E402
from tailorlm.engine.train import TrainConfig, epoch_batches, lr_factor  # noqa: E402
from tailorlm.errors import TailorError  # noqa: E402

WORKER = Path(worker.__file__)
TOTAL_STEPS = 15  # 18 rows, 4 rows a step -> 5 steps an epoch, 3 epochs


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run with a checkpoint after every step: what every resume must equal."""
    out = tmp_path_factory.mktemp("reference")
    trainable, result = worker.run(out)
    return out, trainable.state_dict(), result


def log_without_time(out: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "seconds"} for line in lines]


def assert_same_as_reference(out, trainable, result, reference):
    ref_out, ref_state, ref_result = reference
    for name, tensor in ref_state.items():
        assert torch.equal(trainable.state_dict()[name], tensor), name
    assert result.losses == ref_result.losses
    assert result.tokens_seen == ref_result.tokens_seen
    assert log_without_time(out) == log_without_time(ref_out)


def test_loss_decreases(tmp_path):
    _, result = worker.run(tmp_path, epochs=8, lr=0.5, checkpoint_every=0)
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert result.steps == 40 and len(result.losses) == 40
    assert last < first - 0.2, (first, last)
    # Checkpoints go by the clock (5 minutes by default): a short run writes only its final one,
    # which holds the weights and the state, and no optimizer (a finished run trains no more).
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["step-000040"]
    final = tmp_path / "checkpoints" / "step-000040"
    assert sorted(os.listdir(final)) == ["COMPLETE", "state.json", "trainable.safetensors"]
    assert json.loads((final / "state.json").read_text())["finished"] is True


def test_schedule_warmup_then_decay(tmp_path):
    assert [lr_factor(s, 2, 12, "linear") for s in (0, 1, 2, 7, 12)] == [0.0, 0.5, 1.0, 0.5, 0.0]
    assert lr_factor(7, 2, 12, "cosine") == pytest.approx(0.5, abs=1e-12)
    assert lr_factor(12, 2, 12, "cosine") == 0.0
    assert [lr_factor(s, 2, 12, "constant") for s in (1, 2, 12)] == [0.5, 1.0, 1.0]
    # In a run: 15 steps, warmup ceil(0.1 * 15) = 2; a log line's lr is the one its step used.
    worker.run(tmp_path, lr=0.3, checkpoint_every=0)
    lrs = [line["lr"] for line in log_without_time(tmp_path)]
    want = [0.3 * (s / 2 if s < 2 else (15 - s) / 13) for s in range(15)]
    assert lrs == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_grad_accum_equals_one_big_batch(tmp_path):
    big, r_big = worker.run(tmp_path / "big", batch_size=8, grad_accum=1, dropout=0.0)
    acc, r_acc = worker.run(tmp_path / "acc", batch_size=4, grad_accum=2, dropout=0.0)
    assert r_big.steps == r_acc.steps == 9  # ceil(18 / 8) = 3 steps an epoch
    torch.testing.assert_close(acc.state_dict()["prompt"], big.state_dict()["prompt"],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r_acc.losses, r_big.losses, rtol=1e-5)


def test_epoch_batches_deterministic_and_cover_every_row():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=203).tolist()
    a = epoch_batches(lengths, batch_size=4, grad_accum=2, seed=7, epoch=1)
    assert a == epoch_batches(lengths, batch_size=4, grad_accum=2, seed=7, epoch=1)
    assert a != epoch_batches(lengths, batch_size=4, grad_accum=2, seed=7, epoch=2)
    assert a != epoch_batches(lengths, batch_size=4, grad_accum=2, seed=8, epoch=1)
    rows = [i for step in a for micro in step for i in micro]
    assert sorted(rows) == list(range(203))
    assert len(a) == math.ceil(203 / 8)
    assert all(len(step) <= 2 and all(len(m) <= 4 for m in step) for step in a)
    # One window (203 <= 50 * 8 rows): the steps are slices of one length-sorted order.
    spans = sorted((min(lengths[i] for m in s for i in m), max(lengths[i] for m in s for i in m))
                   for s in a)
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(spans, spans[1:]))


def scripted_evaluate(values: list[float]):
    """(evaluate, seen): evaluate returns `values` in turn; seen[n] = the weights the n-th
    evaluation read."""
    metrics, seen = iter(values), {}

    def evaluate(trainable):
        seen[len(seen) + 1] = trainable.state_dict()["prompt"]
        return next(metrics)

    return evaluate, seen


def test_early_stopping_restores_best(tmp_path):
    evaluate, seen = scripted_evaluate([0.1, 0.5, 0.3, 0.2, 0.9, 0.9])
    trainable, result = worker.run(tmp_path, evaluate=evaluate, eval_every=1, patience=2,
                                   checkpoint_every=0)
    assert result.stopped_early and result.steps == 4
    assert (result.best_step, result.best_metric) == (2, 0.5)
    assert torch.equal(trainable.state_dict()["prompt"], seen[2])
    assert not torch.equal(seen[2], seen[4])
    # The best weights were a copy in memory; only the final checkpoint is written.
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["step-000004"]
    assert [line.get("eval") for line in log_without_time(tmp_path)] == [0.1, 0.5, 0.3, 0.2]
    # Resuming a stopped run does not train on, and still hands back the best weights.
    again, result2 = worker.run(tmp_path, resume=True, evaluate=evaluate, eval_every=1, patience=2,
                                checkpoint_every=0)
    assert result2.steps == 4 and result2.stopped_early
    assert torch.equal(again.state_dict()["prompt"], seen[2])


def test_validation_starts_at_min_steps(tmp_path):
    evaluate, seen = scripted_evaluate([0.4, 0.3, 0.2, 0.9])
    _, result = worker.run(tmp_path, evaluate=evaluate, eval_every=1, patience=2,
                           checkpoint_every=0, min_steps=3)
    # nothing before step 3 is read: the best is step 3's, patience ends the run at step 5
    assert len(seen) == 3 and result.steps == 5 and result.stopped_early
    assert result.best_step == 3
    assert [line.get("eval") for line in log_without_time(tmp_path)] == [None, None, 0.4, 0.3,
                                                                         0.2]


def test_an_evaluation_within_a_standard_error_ties_and_its_weights_are_kept(tmp_path):
    evaluate, seen = scripted_evaluate([0.5, 0.75, 0.625, 0.5, 0.5, 1.0])
    # 8 judged rows: 0.625 is within tie_tolerance(0.75, 8) = 0.153 of 0.75, 0.5 is not
    trainable, result = worker.run(tmp_path, evaluate=evaluate, eval_every=1, patience=2,
                                   checkpoint_every=0, tie_rows=8)
    assert result.steps == 5 and result.stopped_early
    assert (result.best_step, result.best_metric) == (3, 0.75)
    assert torch.equal(trainable.state_dict()["prompt"], seen[3])


def test_tie_tolerance_is_a_standard_error_at_least_one_row():
    from tailorlm.engine.train_config import tie_tolerance

    assert tie_tolerance(0.875, 24) == pytest.approx((0.875 * 0.125 / 24) ** 0.5)
    assert tie_tolerance(1.0, 8) == pytest.approx(1 / 8)
    assert tie_tolerance(0.5, 200) == pytest.approx(0.5 / 200 ** 0.5)
    assert tie_tolerance(1.00005, 24) == pytest.approx(1 / 24)  # a judged value over 1


def test_bf16_autocast_close_to_fp32(tmp_path):
    fp32, r32 = worker.run(tmp_path / "fp32", lr=0.5, checkpoint_every=0, bf16=False)
    bf16, r16 = worker.run(tmp_path / "bf16", lr=0.5, checkpoint_every=0, bf16=True)
    assert fp32.autocast_seen is False and bf16.autocast_seen is True
    assert bf16.prompt.dtype == torch.float32  # master weights stay fp32
    last32, last16 = np.mean(r32.losses[-5:]), np.mean(r16.losses[-5:])
    assert abs(last16 - last32) / last32 < 0.02, (last32, last16)


SCHEDULES = {"steps": ["--checkpoint-every", "1"],  # a checkpoint after every step
             "clock": ["--checkpoint-every", "0", "--checkpoint-seconds", "0.05"]}  # 0.1 s a step


def start_worker(out: Path, *options: str) -> subprocess.Popen:
    # SIGINT as an interactive shell leaves it: pytest started in the background (`cmd &` in a
    # script) ignores it, and a child would inherit that
    return subprocess.Popen([sys.executable, str(WORKER), str(out), "--sleep", "0.1", *options],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(proc: subprocess.Popen, ready, what: str) -> None:
    deadline = time.monotonic() + 60
    while not ready():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, f"no {what} appeared"
        time.sleep(0.005)


@pytest.mark.parametrize("schedule", ["steps", "clock"])
@pytest.mark.parametrize("kill_after", [2, 8])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, reference, kill_after, schedule):
    proc = start_worker(tmp_path, *SCHEDULES[schedule])
    target = checkpoint.step_dir(tmp_path / "checkpoints", kill_after)
    try:
        wait_for(proc, target.exists, "checkpoint")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not checkpoint.step_dir(tmp_path / "checkpoints", TOTAL_STEPS).exists()  # killed early

    resumed_from = checkpoint.latest(tmp_path / "checkpoints")
    assert int(resumed_from.name.removeprefix("step-")) >= kill_after
    trainable, result = worker.run(tmp_path, resume=True)  # the schedule may differ on resume
    assert trainable.calls == TOTAL_STEPS - int(resumed_from.name.removeprefix("step-"))
    assert_same_as_reference(tmp_path, trainable, result, reference)
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_writes_a_checkpoint_then_stops(tmp_path, reference, signum):
    """No checkpoint is due for an hour; SIGTERM/SIGINT finish the step, write one, then stop."""
    proc = start_worker(tmp_path, "--checkpoint-every", "0", "--checkpoint-seconds", "3600")
    log = tmp_path / "train_log.jsonl"
    try:
        wait_for(proc, lambda: log.exists() and len(log.read_text().splitlines()) >= 3,
                 "third log line")
        assert checkpoint.steps(tmp_path / "checkpoints") == []
        os.kill(proc.pid, signum)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr = proc.stderr.read().decode()
        proc.stderr.close()
    # SIGTERM's default ends the process; SIGINT raises KeyboardInterrupt, which ends it here.
    if signum == signal.SIGTERM:
        assert proc.returncode == -signal.SIGTERM, stderr[-2000:]
    else:
        assert proc.returncode != 0 and "KeyboardInterrupt" in stderr, stderr[-2000:]
    saved = checkpoint.steps(tmp_path / "checkpoints")
    assert len(saved) == 1 and 3 <= saved[0] < TOTAL_STEPS, saved
    _, state = checkpoint.read(checkpoint.step_dir(tmp_path / "checkpoints", saved[0]))
    assert not state.get("finished")
    trainable, result = worker.run(tmp_path, resume=True)
    assert trainable.calls == TOTAL_STEPS - saved[0]
    assert_same_as_reference(tmp_path, trainable, result, reference)


def test_a_signal_during_the_last_step_still_stops_after_the_final_checkpoint(tmp_path, request):
    """SIGINT that lands in the last step: the run ends, writes its final checkpoint, and then
    raises KeyboardInterrupt, not return as if nothing came (a comparison would go on to its next
    fit). In-process, so the signal lands in that step every time."""
    backend = worker.make_backend()

    class InterruptedAtTheEnd(worker.SoftPrompt):
        def loss(self, batch):
            if self.calls == TOTAL_STEPS - 1:  # the last step's only micro-batch
                os.kill(os.getpid(), signal.SIGINT)
            return super().loss(batch)

    trainable = InterruptedAtTheEnd(backend.model)
    # Python's own SIGINT handler, also where pytest was started ignoring SIGINT (`cmd &`)
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, handler))
    with pytest.raises(KeyboardInterrupt):
        worker.train(trainable, worker.make_rows(backend), config=worker.config(checkpoint_every=0),
                     out_dir=tmp_path, fingerprint=worker.FINGERPRINT, progress=False,
                     pad_id=backend.tokenizer.pad_token_id)
    assert trainable.calls == TOTAL_STEPS
    assert checkpoint.steps(tmp_path / "checkpoints") == [TOTAL_STEPS]
    _, state = checkpoint.read(checkpoint.step_dir(tmp_path / "checkpoints", TOTAL_STEPS))
    assert state.get("finished")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored after


@pytest.mark.parametrize("stop_at", [3, 6])
def test_best_weights_survive_a_resume(tmp_path, stop_at):
    """A checkpoint taken after the best step carries the best weights (stop_at 6: checkpoint 5,
    best 2), one taken at it has them as its weights (stop_at 3: checkpoint 2); either way a
    resumed run hands back the same weights as an uninterrupted one."""
    metrics = [0.1, 0.5, 0.3, 0.2, 0.25, 0.1] + [0.0] * 9

    def judge(seen, stop_at=None):
        def evaluate(trainable):
            seen.append(trainable.state_dict()["prompt"])
            if len(seen) == stop_at:
                raise RuntimeError("interrupted")
            return metrics[len(seen) - 1]
        return evaluate

    whole_seen = []
    whole, r_whole = worker.run(tmp_path / "whole", evaluate=judge(whole_seen), eval_every=1)
    assert (r_whole.best_step, r_whole.best_metric) == (2, 0.5)
    assert torch.equal(whole.state_dict()["prompt"], whole_seen[1])

    out, seen = tmp_path / "killed", []
    with pytest.raises(RuntimeError, match="interrupted"):
        worker.run(out, evaluate=judge(seen, stop_at=stop_at), eval_every=1)  # dies in it
    assert checkpoint.steps(out / "checkpoints") == [stop_at - 2, stop_at - 1]
    tensors, state = checkpoint.read(checkpoint.step_dir(out / "checkpoints", stop_at - 1))
    assert state["best_step"] == 2
    kept = tensors["best"] if stop_at - 1 > 2 else tensors["trainable"]
    assert torch.equal(kept["prompt"], whole_seen[1]) and ("best" in tensors) == (stop_at > 3)

    seen = seen[:stop_at - 1]  # the evaluations the checkpoint covers
    again, result = worker.run(out, resume=True, evaluate=judge(seen), eval_every=1)
    assert (result.best_step, result.best_metric) == (2, 0.5)
    assert torch.equal(again.state_dict()["prompt"], whole_seen[1])
    assert result.losses == r_whole.losses


@pytest.mark.parametrize("damage", ["marker_missing", "file_truncated"])
def test_torn_checkpoint_is_skipped(tmp_path, reference, damage):
    shutil.copytree(reference[0], tmp_path, dirs_exist_ok=True)
    root = tmp_path / "checkpoints"
    assert checkpoint.steps(root) == [TOTAL_STEPS - 1, TOTAL_STEPS]
    last = checkpoint.step_dir(root, TOTAL_STEPS)
    # A finished-looking folder left by a save that never got renamed: never a candidate.
    shutil.copytree(last, root / ".tmp-step-000016-99999")
    if damage == "marker_missing":
        (last / checkpoint.MARKER).unlink()
    else:
        data = (last / "trainable.safetensors").read_bytes()
        (last / "trainable.safetensors").write_bytes(data[: len(data) // 2])
    assert checkpoint.latest(root) == checkpoint.step_dir(root, TOTAL_STEPS - 1)

    trainable, result = worker.run(tmp_path, resume=True)
    assert trainable.calls == 1  # only the last step is redone
    assert_same_as_reference(tmp_path, trainable, result, reference)
    assert not list(root.glob(".tmp-*"))
    assert checkpoint.latest(root) == last


def test_latest_picks_newest_verified(tmp_path):
    def write(step):
        return checkpoint.write(tmp_path, step, {"trainable": {"w": torch.full((3,), float(step))}},
                                {"step": step})

    c100, c200, c300 = write(100), write(200), write(300)
    (c200 / checkpoint.MARKER).unlink()
    assert checkpoint.latest(tmp_path) == c300
    with open(c300 / "state.json", "ab") as f:
        f.write(b" ")  # any change to a file fails its hash
    assert checkpoint.latest(tmp_path) == c100
    tensors, state = checkpoint.read(c100)
    assert state == {"step": 100}
    assert torch.equal(tensors["trainable"]["w"], torch.full((3,), 100.0))
    with pytest.raises(ValueError):
        checkpoint.read(c200)
    (tmp_path / ".tmp-step-000400-1").mkdir()
    checkpoint.remove_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"step-000{s}" for s in (100, 200, 300)]


def test_resume_refuses_other_data_or_config(tmp_path, reference):
    shutil.copytree(reference[0], tmp_path, dirs_exist_ok=True)
    with pytest.raises(TailorError, match="fingerprint.*new --out.*drop --resume"):
        worker.run(tmp_path, resume=True, fingerprint="other-data")
    with pytest.raises(TailorError, match=r"lr: 0\.05 in the checkpoint, 0\.1 now"):
        worker.run(tmp_path, resume=True, lr=0.1)
    with pytest.raises(TailorError, match="--resume"):
        worker.run(tmp_path, resume=False)


def test_resume_without_checkpoint_starts_fresh(tmp_path, reference):
    trainable, result = worker.run(tmp_path, resume=True)
    assert_same_as_reference(tmp_path, trainable, result, reference)


def test_config_validates_itself():
    with pytest.raises(TailorError, match="schedule must be one of"):
        TrainConfig(schedule="step")
    with pytest.raises(TailorError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(TailorError, match="checkpoint_seconds"):
        TrainConfig(checkpoint_seconds=-1)
    with pytest.raises(TailorError, match="warmup_ratio"):
        TrainConfig(warmup_ratio=1.5)

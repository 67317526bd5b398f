import time

import numpy as np
import pytest
import torch

from tailorlm.engine import cost
from tailorlm.engine.cost import CostMeter, count_params, dir_bytes, forward_flops, peak_rss_mb, train_flops


def test_meter_times_a_sleep():
    with CostMeter() as m:
        time.sleep(0.2)
    assert 0.2 <= m.seconds < 0.4


def _allocate_200mb() -> None:
    block = np.ones(25_000_000, dtype=np.float64)  # 200 MB, every page written
    time.sleep(0.1)  # held long enough for the 20 ms fallback sampler to see it
    del block


def test_meter_sees_a_200mb_allocation():
    with CostMeter() as m:
        _allocate_200mb()
    assert m.peak_delta_mb >= 150
    assert m.peak_rss_mb >= m.start_rss_mb + 150


def test_meter_peak_is_the_phase_not_the_process():
    _allocate_200mb()
    if not cost.reset_peak_rss():
        pytest.skip("the kernel refuses to reset the RSS high-water mark here")
    with CostMeter() as m:
        time.sleep(0.05)
    assert m.peak_delta_mb < 50


def test_meter_fallback_sampler_sees_the_allocation(monkeypatch):
    if cost._status_kib("VmRSS") is None:
        pytest.skip("needs /proc/self/status")
    monkeypatch.setattr(cost, "reset_peak_rss", lambda: False)
    with CostMeter() as m:
        assert m._sampler is not None
        _allocate_200mb()
    assert m.peak_delta_mb >= 150


def test_peak_rss_mb_is_plausible():
    assert 10 < peak_rss_mb() < 1_000_000


def test_meter_counts_tokens_and_flops():
    with CostMeter() as m:
        m.add_tokens(100)
        m.add_tokens(28)
    m.add_flops(train_flops(1_000, m.tokens))
    assert m.tokens == 128
    assert m.flops == 6 * 1_000 * 128
    assert m.as_dict()["tokens"] == 128


def test_kaplan_flops():
    assert forward_flops(135_000_000, 1_000) == 270_000_000_000
    assert train_flops(135_000_000, 1_000) == 3 * forward_flops(135_000_000, 1_000)


def test_count_params_trainable_and_tied():
    layer = torch.nn.Linear(4, 3)  # 4*3 weights + 3 biases
    assert count_params(layer) == (15, 15)
    layer.bias.requires_grad_(False)
    assert count_params(layer) == (12, 15)

    embed = torch.nn.Embedding(10, 4)
    head = torch.nn.Linear(4, 10, bias=False)
    head.weight = embed.weight  # tied, as in most small LMs: counted once
    assert count_params(torch.nn.ModuleList([embed, head])) == (40, 40)


def test_dir_bytes_exact(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"x" * 1000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.json").write_bytes(b"{}")
    (tmp_path / "sub" / "empty").write_bytes(b"")
    (tmp_path / "link").symlink_to(tmp_path / "a.bin")
    assert dir_bytes(tmp_path) == 1002
    assert dir_bytes(tmp_path / "a.bin") == 1000
    assert dir_bytes(tmp_path / "missing") == 0

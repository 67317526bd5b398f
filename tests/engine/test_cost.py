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


def test_train_flops_of_a_frozen_base_skip_its_weight_gradients():
    # SmolLM2-135M with a r=8 LoRA (2.4M parameters) on 10k tokens: 4·N·T + 6·N_tr·T
    assert train_flops(134_515_008, 10_000, 2_442_240) == \
        4 * 134_515_008 * 10_000 + 6 * 2_442_240 * 10_000 == 5_527_134_720_000
    assert train_flops(1_000, 100, 10) == 406_000
    # everything trains (full fine-tuning): 6·N·T however it is asked
    assert train_flops(1_000, 100, 1_000) == train_flops(1_000, 100) == 600_000


def test_meter_baseline_is_not_what_an_earlier_phase_freed():
    """Freed heap pages the allocator kept (fragmented by live blocks between them) would make
    the next phase's baseline look high and its own peak look small: the meter trims them."""
    if cost._status_kib("VmRSS") is None:
        pytest.skip("needs /proc/self/status")
    blocks, pins = [], []
    for _ in range(4000):  # 200 MB in 50 kB blocks, each followed by a small block kept alive
        blocks.append(bytearray(50_000))
        pins.append(bytearray(1_000))
    del blocks
    held = cost.current_rss_mb()
    with CostMeter() as m:
        pass
    assert m.start_rss_mb < held - 100, (held, m.start_rss_mb)
    assert m.as_dict()["start_rss_mb"] == m.start_rss_mb


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

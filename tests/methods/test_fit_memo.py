"""A LoRA fit kept for the hybrid that starts from it (methods/fit_memo.py), and its costs."""

import numpy as np
import pytest
import torch

from helpers import sentiment_task, tiny_backend
from tailorlm.compare.budget import Probe, method_costs, run_seconds, with_shared_fits
from tailorlm.compare.runner import Run, run_comparison
from tailorlm.engine.evaluate import label_scores
from tailorlm.methods import fit_memo, get_method

LORA = {"epochs": 2, "batch_size": 4, "lr": 1e-2, "template": "text_label", "refit": False}
INPUT = {"epochs": 2, "batch_size": 4, "template": "text_label", "min_epochs": 0}


@pytest.fixture(scope="module")
def backend():
    return tiny_backend()


@pytest.fixture
def fits(fit_calls):
    return fit_calls  # conftest.py: every method's fit calls, by name


def lora_weights(adapter) -> dict:
    return {n: p.detach().clone() for n, p in adapter.peft_model.named_parameters()
            if "lora_" in n}


def test_a_lora_fit_is_deterministic_so_a_kept_one_is_what_would_be_trained(backend):
    task = sentiment_task(6)
    config = get_method("lora").config.from_dict(LORA)
    first = lora_weights(get_method("lora").fit(backend, task, None, config, seed=3))
    again = lora_weights(get_method("lora").fit(backend, task, None, config, seed=3))
    other = lora_weights(get_method("lora").fit(backend, task, None, config, seed=4))
    assert first.keys() == again.keys() and len(first) > 0
    assert all(torch.equal(first[n], again[n]) for n in first)  # bit for bit
    assert not all(torch.equal(first[n], other[n]) for n in first)


def test_the_hybrid_takes_the_lora_fit_and_scores_as_if_it_trained_it(backend, fits):
    task = sentiment_task(6)
    lora = get_method("lora")
    spec = get_method("lora+soft_prompt")
    config = spec.config.from_dict({"weight": LORA, "input": INPUT})
    key = fit_memo.fit_key(lora, backend, task, None, config.weight, 0, None)
    standalone = lora.fit(backend, task, None, config.weight, seed=0)
    fit_memo.keep(key, standalone, seconds=12.5, peak_mb=321.0)
    fits.clear()

    taken = spec.fit(backend, task, None, config, seed=0)
    assert fits == {"soft_prompt": 1}  # the weight side was not trained again
    assert taken.train_result["reused_seconds"] == 12.5
    assert taken.train_result["reused_peak_mb"] == 321.0
    assert taken.train_result["weight"]["reused"] is True
    assert taken.train_result["weight"]["fit_seconds"] == 12.5

    fit_memo.clear()
    trained = spec.fit(backend, task, None, config, seed=0)
    assert fits == {"soft_prompt": 2, "lora": 1}
    assert "reused_seconds" not in trained.train_result
    np.testing.assert_allclose(label_scores(backend, taken, task),
                               label_scores(backend, trained, task), rtol=0, atol=1e-6)


def test_only_declared_methods_are_kept_and_at_most_keep_of_them(backend):
    task = sentiment_task(4)
    full = get_method("full")
    assert fit_memo.fit_key(full, backend, task, None, full.config.from_dict({}), 0, None) is None
    lora = get_method("lora")
    keys = [fit_memo.fit_key(lora, backend, task, None, lora.config.from_dict({"r": r}), 0, None)
            for r in (2, 4, 8)]
    assert len(set(keys)) == 3
    for key in keys:
        fit_memo.keep(key, object(), 1.0, 1.0)
    assert fit_memo.recall(keys[0]) is None  # the oldest went first
    assert fit_memo.recall(keys[2]) is not None and fit_memo.KEEP == 2


@pytest.mark.parametrize("order", [("lora", "lora+soft_prompt"), ("lora+soft_prompt", "lora")])
def test_the_runner_fits_the_lora_once_and_both_rows_carry_its_cost(backend, fits, tmp_path,
                                                                   order):
    task = sentiment_task(6)
    configs = {"lora": LORA, "lora+soft_prompt": {"weight": LORA, "input": INPUT}}
    rows = run_comparison(backend, task, task, [Run(m, configs[m], seed=0, k=6) for m in order],
                          tmp_path)
    assert fits == {"lora": 1, "soft_prompt": 1}  # whichever runs second takes the LoRA
    assert [r["fit_reused"] for r in rows] == [False, True]
    by = {r["method"]: r for r in rows}
    # either way the LoRA's seconds are in both rows: the hybrid's fit costs its LoRA's and more
    assert by["lora"]["fit_seconds"] > 0
    assert by["lora+soft_prompt"]["fit_seconds"] >= by["lora"]["fit_seconds"]


def test_the_budget_counts_the_shared_side_once():
    infos = with_shared_fits({m: method_costs(m) for m in ("lora", "full", "lora+soft_prompt")})
    assert infos["lora+soft_prompt"]["free_sides"] == (0,)
    assert infos["lora"]["free_sides"] == () and infos["full"]["free_sides"] == ()
    probe = Probe(s_query=0.05, tok_s=600.0, row_tokens=30.0, n_labels=2)
    hybrid_alone = with_shared_fits({"lora+soft_prompt": method_costs("lora+soft_prompt")})
    assert hybrid_alone["lora+soft_prompt"]["free_sides"] == ()
    shared = run_seconds(probe, infos["lora+soft_prompt"], 40, 6, 0, 0, False)
    alone = run_seconds(probe, hybrid_alone["lora+soft_prompt"], 40, 6, 0, 0, False)
    lora = run_seconds(probe, infos["lora"], 40, 6, 0, 0, False)
    assert shared == pytest.approx(alone - lora, rel=1e-6)
    # another rank on the hybrid's LoRA is another fit: nothing shared
    other = with_shared_fits({"lora": method_costs("lora"), "lora+soft_prompt": method_costs(
        "lora+soft_prompt", {"weight": {"r": 4}})})
    assert other["lora+soft_prompt"]["free_sides"] == ()

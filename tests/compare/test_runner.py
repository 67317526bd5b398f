import json

import pytest

from helpers import sentiment_task, tiny_backend
from tailorlm.compare.runner import RESULTS, Run, read_results, run_comparison

REQUIRED = {"method", "model", "task", "metric", "score", "score_ci", "n_eval", "fit_seconds",
            "eval_seconds", "peak_rss_mb", "trainable_params", "artifact_bytes",
            "prompt_tokens_per_query", "latency_ms_per_query", "seed", "k", "config"}
RUNS = [Run("prompt_template", {"template": "text_label"}, seed=0, k=3),
        Run("few_shot", {"n_demos": 2, "template": "text_label", "n_candidates": 1}, seed=0, k=3)]


@pytest.fixture(scope="module")
def backend():
    return tiny_backend()


def test_rows_have_the_stable_keys_and_adapters_are_saved(backend, tmp_path):
    task = sentiment_task(8)
    rows = run_comparison(backend, task, task, RUNS, tmp_path)
    assert [r["method"] for r in rows] == ["prompt_template", "few_shot"]
    for row in rows:
        assert REQUIRED <= set(row)
        assert row["n_eval"] == 16 and row["k"] == 3 and row["n_train"] == 6
        assert 0 <= row["score_ci"][0] <= row["score"] <= row["score_ci"][1] <= 1
        assert row["trainable_params"] == 0 and row["artifact_bytes"] > 0
        assert (tmp_path / "adapters" / row["adapter"].split("/")[-1] / "card.json").exists()
    # few-shot prompts carry demonstrations: more prompt tokens per query than zero-shot
    assert rows[1]["prompt_tokens_per_query"] > rows[0]["prompt_tokens_per_query"]
    assert rows[1]["config"]["n_demos"] == 2 and rows[1]["config"]["selection"] == "balanced"


def test_rerun_skips_finished_runs_and_appends_new_ones(backend, tmp_path):
    task = sentiment_task(8)
    run_comparison(backend, task, task, RUNS[:1], tmp_path)
    events = []
    rows = run_comparison(backend, task, task, RUNS, tmp_path,
                          on_event=lambda kind, *rest: events.append(kind))
    assert events == ["skip", "start", "done"]
    assert len(read_results(tmp_path)) == 2 == len(rows)
    run_comparison(backend, task, task, [Run("prompt_template", {"template": "text_label"},
                                             seed=1, k=3)], tmp_path)
    assert [r["seed"] for r in read_results(tmp_path)] == [0, 0, 1]


def test_a_torn_last_line_is_ignored_and_closed(backend, tmp_path):
    task = sentiment_task(8)
    run_comparison(backend, task, task, RUNS[:1], tmp_path)
    with open(tmp_path / RESULTS, "a") as f:
        f.write('{"method": "few_sh')  # a crash mid-append
    assert len(read_results(tmp_path)) == 1
    run_comparison(backend, task, task, RUNS[1:], tmp_path)
    lines = (tmp_path / RESULTS).read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["method"] == "few_shot"
    assert "test_rows" in json.loads(lines[0]) and "test_rows" not in json.loads(lines[2])
    assert len(read_results(tmp_path)) == 2


def test_generation_task_scored_with_rouge_l(backend, tmp_path):
    from tailorlm.data.task import Example, Task

    rows = [Example(input=f"name[{n}], area[{a}]", target=f"{n} is in the {a}.",
                    references=(f"{n} is in the {a}.", f"In the {a} is {n}."))
            for n, a in [("Blue Spice", "city centre"), ("Alimentum", "riverside"),
                         ("The Eagle", "city centre"), ("Zizzi", "riverside")]]
    task = Task(name="tiny-e2e", kind="generation", examples=rows)
    runs = [Run("prompt_template", {"template": "input_output"}),
            Run("few_shot", {"n_demos": 1, "selection": "random", "n_candidates": 2,
                             "template": "input_output"})]
    out = run_comparison(backend, task, task, runs, tmp_path)
    assert [r["metric"] for r in out] == ["rouge_l", "rouge_l"]
    assert all(0.0 <= r["score"] <= 1.0 and r["n_eval"] == 4 for r in out)
    assert out[1]["prompt_tokens_per_query"] > out[0]["prompt_tokens_per_query"]


def test_trained_and_hybrid_rows_carry_training_costs_and_variants(backend, tmp_path):
    from tailorlm.data.task import Example

    base = sentiment_task(4)
    task = base.with_examples([Example(e.input, e.target, e.label,
                                       extra={"client": ("acme", "globex")[i % 2]})
                               for i, e in enumerate(base.examples)])
    weight = {"epochs": 1, "batch_size": 4, "bf16": False}
    runs = [Run("lora", weight),
            Run("lora+few_shot", {"weight": weight, "variant_field": "client",
                                  "input": {"n_demos": 2, "n_candidates": 1}})]
    lora, hybrid = run_comparison(backend, task, task, runs, tmp_path)
    for row in (lora, hybrid):
        assert row["train_tokens"] > 0 and row["optimizer_bytes"] > 0
        assert row["train_flops"] == (4 * row["total_params"] + 6 * row["trainable_params"]) \
            * row["train_tokens"]  # a frozen base (engine/cost.py)
    assert "variants" not in lora
    assert {k: v["n_eval"] for k, v in hybrid["variants"].items()} == {"acme": 4, "globex": 4}
    assert all(0 <= v["score"] <= 1 and v["bytes"] > 0 for v in hybrid["variants"].values())
    assert hybrid["one_lora_per_variant_bytes"] > hybrid["add_variant_bytes"]


def test_evaluation_subset_is_stratified_and_fixed():
    from tailorlm.compare.runner import evaluation_subset

    task = sentiment_task(20)  # rows sorted by label: the first 10 are one class
    task = task.with_examples(sorted(task.examples, key=lambda e: e.label))
    sub = evaluation_subset(task, 10)
    assert len(sub) == 10 and {e.label for e in sub.examples} == set(task.labels)
    again = evaluation_subset(task, 10)
    assert [e.input for e in sub.examples] == [e.input for e in again.examples]
    assert evaluation_subset(task, None) is task and evaluation_subset(task, 99) is task


def test_a_failing_run_is_reported_and_the_rest_go_on(backend, tmp_path, monkeypatch):
    import tailorlm.compare.runner as runner

    task = sentiment_task(8)
    real = runner._run_one

    def flaky(backend_, train, test, run, *rest):
        if run.method == "prompt_template":
            raise RuntimeError("out of memory")
        return real(backend_, train, test, run, *rest)

    monkeypatch.setattr(runner, "_run_one", flaky)
    events = []
    rows = run_comparison(backend, task, task, RUNS, tmp_path,
                          on_event=lambda kind, *rest: events.append(kind))
    assert events == ["start", "failed", "start", "done"]
    assert rows[0]["skipped"] and rows[0]["reason"] == "failed: RuntimeError: out of memory"
    assert [r["method"] for r in read_results(tmp_path)] == ["few_shot"]
    assert "RuntimeError: out of memory" in (tmp_path / "errors.log").read_text()
    monkeypatch.setattr(runner, "_run_one", real)  # fixed: the next call retries it
    run_comparison(backend, task, task, RUNS, tmp_path)
    assert [r["method"] for r in read_results(tmp_path)] == ["few_shot", "prompt_template"]


def test_evaluation_subset_of_many_labels_is_never_empty():
    from tailorlm.compare.runner import evaluation_subset
    from tailorlm.data.task import Example, Task

    labels = [f"l{i}" for i in range(77)]  # banking77: 20 rows over 77 labels
    task = Task("t", "classification", [Example(f"x {lab} {i}", lab, lab)
                                        for lab in labels for i in range(3)])
    assert 10 <= len(evaluation_subset(task, 20)) <= 20
    one_each = task.with_examples(task.examples[::3])  # a single example of every label
    assert len(evaluation_subset(one_each, 20)) == 20


def test_a_run_without_latency_skips_the_one_at_a_time_timing(backend, tmp_path):
    task = sentiment_task(6)
    timed, untimed = run_comparison(backend, task, task, [
        Run("prompt_template", {"template": "text_label"}, seed=0, k=3),
        Run("prompt_template", {"template": "text_label"}, seed=1, k=3, latency=False)], tmp_path)
    assert timed["latency_queries"] == 20 and timed["latency_ms_p95"] > 0
    assert untimed["latency_queries"] == 0 and untimed["latency_ms_p50"] is None
    assert untimed["score"] >= 0 and untimed["eval_seconds"] > 0

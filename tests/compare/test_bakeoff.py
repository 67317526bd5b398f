"""A whole plan on a tiny model: every family, sensitivity, curves, resume, the budget guard."""

import json

import pytest

from helpers import write_jsonl
from tailorlm.compare.bakeoff import run_plan
from tailorlm.compare.plan import default_plan
from tailorlm.compare.runner import read_results

POS = ["a great film", "I loved it", "wonderful and fun", "the best movie", "so good",
       "a joy to watch", "truly moving", "brilliant acting"]
NEG = ["a bad film", "I hated it", "boring and dull", "the worst movie", "so bad",
       "a chore to watch", "truly awful", "wooden acting"]
# test rows no training row repeats: a leak from test into training could not hide here
TEST_POS = ["what a delight", "great fun", "I adored it", "superb film"]
TEST_NEG = ["a dull mess", "I disliked it", "poor film", "dreadful plot"]


@pytest.fixture
def plan_args(tmp_path, tiny_model_dir):
    rows = [{"text": t, "label": "positive"} for t in POS] + \
        [{"text": t, "label": "negative"} for t in NEG]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": t, "label": "positive"}
                                                 for t in TEST_POS] +
                       [{"text": t, "label": "negative"} for t in TEST_NEG])
    return [f"data.train={train}", f"data.test={test}", f"model={tiny_model_dir}",
            "train.epochs=1", "train.batch_size=4", "eval.sensitivity=4",
            "methods.few_shot.n_candidates=1", "methods.few_shot.n_demos=2"]


def test_default_plan_end_to_end(plan_args, tmp_path):
    plan = default_plan(plan_args + ["seeds=2", "train.k=4", "train.curve=[2, 4]"])
    out = tmp_path / "run"
    summary = run_plan(plan, out, on_note=lambda line: None)
    rows = read_results(out)
    methods = [m.method for m in plan.methods]
    # every method at k=4 for 2 seeds, and once at k=2
    assert sorted((r["method"], r["k"], r["seed"]) for r in rows) == sorted(
        [(m, 4, s) for m in methods for s in (0, 1)] + [(m, 2, 0) for m in methods])
    for r in rows:
        assert r["n_eval"] == 8 and 0 <= r["train_score"] <= 1 and r["load_seconds"] > 0
        assert r["family"] in ("prompt", "soft prompt", "fine tuning", "hybrid")
        sens = r.get("sensitivity")
        assert (sens is not None) == (r["k"] == 4 and r["seed"] == 0)
    assert not (out / "work").exists() or not any((out / "work").iterdir())  # checkpoints gone
    by_method = {m["method"]: m for m in summary["methods"]}
    assert list(by_method) == methods
    for m in by_method.values():
        assert m["n_seeds"] == 2 and m["sensitivity"]["n_variants"] >= 7
        assert m["overfit_risk"] in ("low", "medium", "high")
        assert m["cost"]["fit_usd"] >= 0 and m["cost"]["per_query_usd"] > 0
    assert set(summary["curves"]) == set(methods)
    assert summary["recommendation"]["method"] in methods
    for name in ("report.md", "report.json", "report.html", "plan.yaml"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "report.json").read_text())["k"] == 4
    # per-row outcomes and predictions files: what `tailor recommend` and the report read
    for r in rows:
        assert len(r["per_row"]["pred"]) == 8 and (out / r["predictions"]).exists()
        lines = [json.loads(x) for x in (out / r["predictions"]).read_text().splitlines()]
        assert [line["predicted"] == line["gold"] for line in lines] == [
            line["correct"] for line in lines]
        assert set(lines[0]["scores"]) == {"negative", "positive"}
    assert summary["baselines"]["majority"]["score"] == pytest.approx(0.5)
    assert summary["baselines"]["zero_shot"]["method"] == "prompt_template"
    classes = summary["classes"]
    assert classes["method"] == summary["recommendation"]["method"]
    assert sum(map(sum, classes["confusion"])) == 8
    assert all(len(w["input"]) > 0 for w in classes["wrong"])
    md = (out / "report.md").read_text()
    assert "majority class (always" in md and "zero-shot (prompt_template)" in md
    assert "Constraints: none" in md and "## Per class" in md


def test_an_interrupted_comparison_resumes_where_it_stopped(plan_args, tmp_path):
    plan = default_plan(plan_args + ["seeds=1", "train.k=4", "train.curve=[]",
                                     "methods=[prompt_template, few_shot, soft_prompt]"])
    out = tmp_path / "run"
    seen = []

    def stop_after_two(kind, i, n, run, row, left):
        seen.append((kind, run.method))
        if kind == "done" and len(read_results(out)) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, out, on_event=stop_after_two, on_note=lambda line: None)
    assert [r["method"] for r in read_results(out)] == ["prompt_template", "few_shot"]
    before = (out / "results.jsonl").read_bytes()
    seen.clear()
    run_plan(plan, out, on_event=lambda kind, i, n, run, row, left: seen.append(
        (kind, run.method)), on_note=lambda line: None)
    assert seen == [("skip", "prompt_template"), ("skip", "few_shot"),
                    ("start", "soft_prompt"), ("done", "soft_prompt")]
    after = (out / "results.jsonl").read_bytes()
    assert after.startswith(before)  # appended, never rewritten
    assert [r["method"] for r in read_results(out)] == ["prompt_template", "few_shot",
                                                       "soft_prompt"]


def test_the_budget_skips_optional_runs_and_says_so(plan_args, tmp_path):
    plan = default_plan(plan_args + ["seeds=3", "train.k=4", "train.curve=[2, 4]",
                                     "methods=[prompt_template, few_shot]",
                                     "budget_minutes=0.001"])
    out = tmp_path / "run"
    summary = run_plan(plan, out, on_note=lambda line: None)
    rows = read_results(out)
    # the required runs (each method once at k, seed 0) ran; the extra seeds and k=2 did not
    assert sorted((r["method"], r["seed"], r["k"]) for r in rows) == [
        ("few_shot", 0, 4), ("prompt_template", 0, 4)]
    skipped = {s["run"].rsplit("-", 1)[0] for s in summary["skipped"]}
    assert skipped == {f"{m}-k4-s{s}" for m in ("prompt_template", "few_shot") for s in (1, 2)} \
        | {f"{m}-k2-s0" for m in ("prompt_template", "few_shot")}
    assert all("over the budget" in s["reason"] for s in summary["skipped"])
    assert "Skipped" in (out / "report.md").read_text()


def test_a_generation_plan(tmp_path, tiny_model_dir):
    rows = [{"input": f"name[{n}], food[{f}]", "target": f"{n} serves {f} food."}
            for n in ("Alpha", "Bravo", "Cobalt", "Delta") for f in ("Thai", "French")]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    test = write_jsonl(tmp_path / "test.jsonl", [
        {"input": f"name[{n}], food[{f}]", "target": f"{n} serves {f} food."}
        for n, f in (("Echo", "Thai"), ("Foxtrot", "French"), ("Golf", "Thai"),
                     ("Hotel", "French"))])
    plan = default_plan([f"data.train={train}", f"data.test={test}", f"model={tiny_model_dir}",
                         "seeds=1", "train.k=6", "train.curve=[]", "train.epochs=1",
                         "eval.sensitivity=2", "methods=[prompt_template, soft_prompt, lora]",
                         "methods.prompt_template.template=input_output"])
    summary = run_plan(plan, tmp_path / "run", on_note=lambda line: None)
    assert summary["metric"] == "rouge_l" and summary["kind"] == "generation"
    for m in summary["methods"]:
        assert 0 <= m["score_mean"] <= 1 and m["sensitivity"]["n_variants"] == 7
    assert summary["recommendation"]["method"] in ("prompt_template", "soft_prompt", "lora")


def test_the_generation_probe_times_training_rows_not_decoding(tiny_model_dir):
    """Decoding runs a row one token per step: timing it as the training rate overestimated
    every fit on e2e 2-3x. The probe times a forward over whole training rows instead."""
    from tailorlm.compare.budget import probe
    from tailorlm.data.task import Example, Task
    from tailorlm.models import load_backend

    rows = [Example(input=f"name[{n}], food[{f}]", target=f"{n} serves {f} food.")
            for n in ("Alpha", "Bravo", "Cobalt", "Delta") for f in ("Thai", "French")]
    task = Task(name="g", kind="generation", examples=rows)
    p = probe(load_backend(str(tiny_model_dir)), task, task)
    decoding_rate = 64 / p.s_query  # the probe decodes 64 tokens a row
    assert p.tok_s > 2 * decoding_rate and p.row_tokens > 5


def test_more_budget_continues_the_comparison_on_its_recorded_sizes(plan_args, tmp_path,
                                                                    monkeypatch):
    """A rerun sizes nothing anew (other test rows or k would start the comparison over and mix
    two in one report): it keeps OUT's recorded sizes and runs only what was skipped."""
    import tailorlm.compare.bakeoff as bakeoff
    from tailorlm.errors import TailorError

    args = plan_args + ["seeds=2", "train.k=4", "train.curve=[2, 4]",
                        "methods=[prompt_template, few_shot]"]
    out = tmp_path / "run"
    run_plan(default_plan(args + ["budget_minutes=0.001"]), out, on_note=lambda line: None)
    first = read_results(out)
    assert len(first) == 2  # the required runs only

    def resize(*a, **k):
        raise AssertionError("a continued comparison must not be sized again")

    monkeypatch.setattr(bakeoff, "size_plan", resize)
    notes, seen = [], []
    run_plan(default_plan(args + ["budget_minutes=30"]), out, on_note=notes.append,
             on_event=lambda kind, i, n, run, row, left: seen.append(kind))
    assert seen.count("skip") == 2 and seen.count("done") == 4
    assert any("continuing the comparison" in n for n in notes)
    assert len(read_results(out)) == 6
    log = json.loads((out / "run_log.json").read_text())
    assert len(log["calls"]) == 2 and log["wall_seconds"] == pytest.approx(sum(log["calls"]))
    assert "over 2 calls" in (out / "report.md").read_text()

    with pytest.raises(TailorError, match="another plan.*seeds"):
        run_plan(default_plan(args[:-3] + ["seeds=3", "train.k=4", "train.curve=[2, 4]",
                                           "methods=[prompt_template, few_shot]"]), out,
                 on_note=lambda line: None)


def _without_few_shot(plan_args) -> list[str]:
    """plan_args less few_shot's options: an option for a method the plan lacks is an error."""
    return [a for a in plan_args if not a.startswith("methods.few_shot.")]


def _data(plan_args) -> dict:
    return {a.split("=", 1)[0]: a.split("=", 1)[1] for a in plan_args if a.startswith("data.")}


def test_a_rerun_on_changed_data_is_refused(plan_args, tmp_path):
    from pathlib import Path

    from tailorlm.errors import TailorError

    args = _without_few_shot(plan_args) + ["seeds=1", "train.k=2", "train.curve=[]",
                                          "methods=[prompt_template]"]
    out = tmp_path / "run"
    run_plan(default_plan(args), out, on_note=lambda line: None)
    data = yaml_load(out / "plan.yaml")["resolved"]["data"]
    assert set(data) == {"train_sha256", "val_sha256", "test_sha256"}
    assert read_results(out)[0]["test_sha256"] == data["test_sha256"]
    train = Path(_data(plan_args)["data.train"])
    train.write_text(train.read_text().replace("a great film", "a fine film"))
    with pytest.raises(TailorError, match=r"holds results of other data \(the train data "
                       r"changed since\): give a new --out"):
        run_plan(default_plan(args), out, on_note=lambda line: None)


def test_test_rows_that_repeat_training_rows_are_counted(plan_args, tmp_path):
    from pathlib import Path

    test = Path(_data(plan_args)["data.test"])
    test.write_text(test.read_text() + json.dumps({"text": POS[0], "label": "positive"}) + "\n"
                    + json.dumps({"text": NEG[0], "label": "positive"}) + "\n")
    notes = []
    run_plan(default_plan(_without_few_shot(plan_args) + [
        "seeds=1", "train.k=2", "train.curve=[]", "methods=[prompt_template]"]), tmp_path / "run",
             on_note=notes.append)
    (line,) = [n for n in notes if "duplicate" in n]
    assert line.startswith("warning: 1 of 10 test rows duplicate training rows exactly (and 1 "
                           "more with the same input, another answer)")
    assert f"Data: {line}" in (tmp_path / "run" / "report.md").read_text()


def test_when_every_run_fails_the_message_names_them(plan_args, tmp_path, monkeypatch):
    import tailorlm.compare.runner as runner
    from tailorlm.errors import TailorError

    def broken(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(runner, "_run_one", broken)
    out = tmp_path / "run"
    with pytest.raises(TailorError) as e:
        run_plan(default_plan(plan_args + ["seeds=1", "train.k=2", "train.curve=[]",
                                           "methods=[prompt_template, few_shot]"]), out,
                 on_note=lambda line: None)
    message = str(e.value)
    assert "\n" not in message and message.startswith("every run of the comparison failed")
    assert "failed: RuntimeError: out of memory" in message
    assert "prompt_template-k2-s0" in message and "few_shot-k2-s0" in message
    assert "RuntimeError: out of memory" in message and message.endswith("errors.log")
    from tailorlm.compare.summary import write_reports
    with pytest.raises(TailorError, match="every run in .* failed; the tracebacks are in"):
        write_reports(out)


def yaml_load(path):
    import yaml

    return yaml.safe_load(path.read_text())

import json
from pathlib import Path

import pytest

from helpers import write_jsonl
from tailorlm.cli.main import main


@pytest.fixture
def files(tmp_path):
    pos = ["a great film", "I loved it", "wonderful and fun", "the best movie"]
    neg = ["a bad film", "I hated it", "boring and dull", "the worst movie"]
    rows = [{"text": t, "label": "positive"} for t in pos] + \
        [{"text": t, "label": "negative"} for t in neg]
    return write_jsonl(tmp_path / "train.jsonl", rows), write_jsonl(tmp_path / "test.jsonl", rows)


def test_compare_end_to_end(files, tiny_model_dir, tmp_path, capsys):
    train, test = files
    code = main(["compare", "--train", str(train), "--test", str(test), "--model",
                 str(tiny_model_dir), "--methods", "prompt_template,few_shot", "--k", "2",
                 "--seed", "0", "--curve", "none", "--set", "few_shot.n_demos=2",
                 "--set", "few_shot.n_candidates=1", "eval.sensitivity=4",
                 "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0
    assert "prompt_template" in out and "few_shot" in out and "Recommended:" in out
    rows = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert [r["method"] for r in rows] == ["prompt_template", "few_shot"]
    assert rows[1]["config"]["n_demos"] == 2 and rows[0]["k"] == 2
    assert rows[0]["sensitivity"]["n"] == 4 and rows[0]["sensitivity"]["n_variants"] == 7
    assert rows[1]["sensitivity"]["n_variants"] == 7 + 3  # + demonstration orders
    for name in ("report.md", "report.json", "report.html", "plan.yaml"):
        assert (tmp_path / "run" / name).is_file()
    summary = json.loads((tmp_path / "run" / "report.json").read_text())
    assert summary["recommendation"]["method"] in ("prompt_template", "few_shot")

    # the same folder under another constraint: nothing re-run, the answer re-read
    before = (tmp_path / "run" / "results.jsonl").read_bytes()
    assert main(["recommend", str(tmp_path / "run"), "--max-latency-ms", "0.000001"]) == 0
    assert (tmp_path / "run" / "results.jsonl").read_bytes() == before
    summary = json.loads((tmp_path / "run" / "report.json").read_text())
    assert summary["recommendation"]["method"] is None
    assert set(summary["recommendation"]["excluded"]) == {"prompt_template", "few_shot"}


@pytest.mark.parametrize("args, message", [
    (["--methods", "prompt_template,lora_x"], "unknown method 'lora_x'"),
    (["--methods", "prompt_template", "--set", "few_shot.n_demos=3"],
     "few_shot is not among this plan's methods (prompt_template)"),
    (["--set", "prompt_template.colour=1"], "unknown option(s) colour"),
    (["--methods", "prompt_template,lora", "--variant-field", "client"],
     "data.variant_field (--variant-field) splits the rows for a hybrid's input side, and this "
     "plan has no hybrid (prompt_template, lora)"),
    (["--plan", str(Path(__file__).parents[2] / "configs/examples/prompts_only.yaml"),
      "--set", "lora.r=16"], "lora is not among this plan's methods (prompt_template, few_shot)"),
    (["--metric", "rouge_l"], "eval.metric 'rouge_l' scores generation, and this is a "
     "classification task; valid: accuracy, macro_f1"),
    (["--metric", "acc"], "unknown eval.metric 'acc'; valid: accuracy, macro_f1 "
     "(classification); exact_match, rouge_l, chrf (generation)"),
    (["--api-only", "--methods", "lora,full"], "--api-only: none of this plan's methods (lora, "
     "full) works through an API"),
    (["--curve", "4,x"], "--curve '4,x': k values separated by commas"),
])
def test_user_errors_are_one_line(files, tmp_path, capsys, monkeypatch, args, message):
    import tailorlm.models as models

    monkeypatch.setattr(models, "load_backend", lambda *a, **k: pytest.fail("model loaded"))
    train, test = files
    code = main(["compare", "--train", str(train), "--test", str(test), "--out",
                 str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_bad_file_fails_before_any_model_loads(tmp_path, capsys, monkeypatch):
    import tailorlm.models as models

    monkeypatch.setattr(models, "load_backend", lambda *a, **k: pytest.fail("model loaded"))
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "ok", "label": "a"}\n{"text": "broken", "label": \n')
    code = main(["compare", "--train", str(train), "--test", str(train), "--out",
                 str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "train.jsonl" in err and "line 2" in err


EXAMPLE = Path(__file__).parents[2] / "configs" / "examples" / "support_compare.yaml"


def test_plan_file_with_dotted_overrides_and_flags(tmp_path, monkeypatch, capsys):
    import tailorlm.compare.bakeoff as bakeoff

    seen = {}

    def fake_run_plan(plan, out, **kwargs):
        seen["plan"] = plan
        raise SystemExit(0)

    monkeypatch.setattr(bakeoff, "run_plan", fake_run_plan)
    monkeypatch.setattr(bakeoff, "load_data", lambda plan: None)
    with pytest.raises(SystemExit):
        main(["compare", "--plan", str(EXAMPLE), "train.k=64",
              "seeds=3", "--max-test", "40", "--set", "lora.r=16", "--out", str(tmp_path)])
    plan = seen["plan"]
    assert plan.get("train.k") == 64 and plan.seeds == [0, 1, 2]
    assert plan.get("eval.max_test") == 40 and plan.get("task") == "support_routing"
    assert {m.method: m.config for m in plan.methods}["lora"] == {"r": 16}


def _captured_plan(monkeypatch, argv, tmp_path):
    """The plan `tailor compare ARGV` would run, without running it."""
    import tailorlm.compare.bakeoff as bakeoff

    seen = {}

    def fake_run_plan(plan, out, **kwargs):
        seen["plan"] = plan
        raise SystemExit(0)

    monkeypatch.setattr(bakeoff, "run_plan", fake_run_plan)
    monkeypatch.setattr(bakeoff, "load_data", lambda plan: None)
    with pytest.raises(SystemExit):
        main(["compare", *argv, "--out", str(tmp_path)])
    return seen["plan"]


def test_flags_reach_the_plan_typed(monkeypatch, tmp_path):
    plan = _captured_plan(monkeypatch, [
        "--task", "support_routing", "--k", "4", "--curve", "2,8", "--seed", "5",
        "--metric", "macro_f1", "--max-test", "60", "--budget-minutes", "2.5",
        "--methods", "prompt_template,lora", "--set", "lora.lr=1e-4",
        "--verbalizer", "billing=money", "--description", "what the customer wants"],
        tmp_path)
    assert plan.get("train.k") == 4 and plan.get("train.curve") == [2, 8]
    assert plan.seeds == [5] and plan.get("eval.metric") == "macro_f1"
    assert plan.get("eval.max_test") == 60 and plan.get("budget_minutes") == 2.5
    assert plan.get("data.verbalizer") == {"billing": "money"}
    assert plan.get("data.description") == "what the customer wants"
    assert {m.method: m.config for m in plan.methods} == {"prompt_template": {},
                                                         "lora": {"lr": 1e-4}}


@pytest.mark.parametrize("argv", [[], ["--plan", str(EXAMPLE)]], ids=["default", "plan"])
def test_variant_field_is_applied_to_every_hybrid_of_the_plan(monkeypatch, tmp_path, argv):
    from tailorlm.compare.plan import method_config

    plan = _captured_plan(monkeypatch, [*argv, "--task", "support_routing",
                                        "--variant-field", "client"], tmp_path)
    configs = {m.method: method_config(plan, m) for m in plan.methods}
    assert configs["lora+soft_prompt"]["variant_field"] == "client"
    assert all("variant_field" not in c for name, c in configs.items() if "+" not in name)


def test_api_only_runs_the_prompt_methods_and_says_so(monkeypatch, tmp_path, capsys):
    plan = _captured_plan(monkeypatch, ["--task", "support_routing", "--api-only"], tmp_path)
    prompts = ["prompt_template", "few_shot", "instruction_search"]
    assert [m.method for m in plan.methods] == prompts
    assert plan.to_dict()["methods"] == prompts  # what plan.yaml records
    assert plan.optional == ["instruction_search"]  # the default's: where the budget holds it
    err = capsys.readouterr().err
    assert ("--api-only: running only the prompt methods (prompt_template, few_shot, "
            "instruction_search); not "
            "soft_prompt, lora, full, lora+soft_prompt, which need the model's weights") in err


def test_when_every_run_fails_the_error_names_the_failures(files, tiny_model_dir, tmp_path,
                                                            capsys, monkeypatch):
    import tailorlm.compare.runner as runner

    def broken(*args, **kwargs):
        raise ValueError("boom\nsecond line")

    monkeypatch.setattr(runner, "_run_one", broken)
    train, test = files
    out = tmp_path / "run"
    code = main(["compare", "--train", str(train), "--test", str(test), "--model",
                 str(tiny_model_dir), "--methods", "prompt_template,few_shot", "--k", "2",
                 "--seed", "0", "--curve", "none", "eval.sensitivity=0", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("tailor: error: every run of the comparison failed, no result "
                              "kept (prompt_template-k2-s0-")
    assert "few_shot-k2-s0-" in err[-1] and "failed: ValueError: boom second line" in err[-1]
    assert err[-1].endswith(f"tracebacks in {out / 'errors.log'}")
    assert "ValueError: boom" in (out / "errors.log").read_text()


def test_api_only_constraints_reach_the_report(files, tiny_model_dir, tmp_path, capsys,
                                               monkeypatch):
    import tailorlm.compare.summary as summary

    seen = []
    real = summary.write_reports
    monkeypatch.setattr(summary, "write_reports",
                        lambda out, constraints=None, **kw: seen.append(constraints)
                        or real(out, constraints, **kw))
    train, test = files
    code = main(["compare", "--train", str(train), "--test", str(test), "--model",
                 str(tiny_model_dir), "--methods", "prompt_template,lora", "--k", "2",
                 "--seed", "0", "--curve", "none", "eval.sensitivity=0", "eval.train_score=false",
                 "--api-only", "--max-latency-ms", "1e6", "--out", str(tmp_path / "run")])
    assert code == 0
    rows = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert [r["method"] for r in rows] == ["prompt_template"]
    assert seen[-1].api_only and seen[-1].max_latency_ms == 1e6


def test_variant_field_reaches_the_hybrids_fit(tiny_model_dir, tmp_path):
    texts = {"positive": ["a great film", "I loved it", "wonderful and fun", "the best movie"],
             "negative": ["a bad film", "I hated it", "boring and dull", "the worst movie"]}
    rows = [{"text": t, "label": label, "client": "ab"[i % 2]}
            for label, ts in texts.items() for i, t in enumerate(ts)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    code = main(["compare", "--train", str(train), "--test", str(train), "--model",
                 str(tiny_model_dir), "--methods", "lora+prompt_template", "--k", "4",
                 "--seed", "0", "--curve", "none", "--variant-field", "client",
                 "--set", "lora+prompt_template.epochs=1", "eval.sensitivity=0",
                 "eval.train_score=false", "--out", str(tmp_path / "run")])
    assert code == 0
    row = json.loads((tmp_path / "run" / "results.jsonl").read_text().splitlines()[0])
    assert row["config"]["variant_field"] == "client"
    assert row["n_variants"] == 2 and sorted(row["variants"]) == ["a", "b"]

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
     "'few_shot' is not among --methods"),
    (["--set", "prompt_template.colour=1"], "unknown option(s) colour"),
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

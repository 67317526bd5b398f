"""A few checks on the real built-in model (SmolLM2-135M-Instruct), converted once per session."""

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tailorlm.cli.main import main
from tailorlm.data.load import load_builtin_task, load_task
from tailorlm.engine.evaluate import label_scores
from tailorlm.methods.prompt_adapter import PromptAdapter
from tailorlm.methods.templates import CLASSIFICATION

pytestmark = pytest.mark.integration
SST2 = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "sst2"


@pytest.mark.skipif(not SST2.exists(), reason="shared datasets not present")
def test_zero_shot_sentiment_on_real_sst2(smollm2):
    # docs/benchmarks.md: "Text: x\nSentiment:" scores 0.80 on 250 dev rows; 60 rows, 0.65 floor
    train = load_task(SST2 / "train.jsonl")
    dev = load_task(SST2 / "dev.jsonl", labels=train.labels)
    rows = list(dev.examples)
    random.Random(0).shuffle(rows)
    dev = dev.with_examples(rows[:60])
    adapter = PromptAdapter("prompt_template", None, dev, CLASSIFICATION["text_sentiment"])
    scores = label_scores(smollm2, adapter, dev)
    gold = np.array([dev.labels.index(e.label) for e in dev.examples])
    assert (scores.argmax(1) == gold).mean() >= 0.65


def test_compare_on_the_demo_task(smollm2_home, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TAILORLM_HOME", str(smollm2_home))
    train, test = load_builtin_task("support_routing")
    assert len(train) == 360 and len(test) == 140 and len(train.labels) == 10
    code = main(["compare", "--task", "support_routing", "--k", "2", "--max-test", "30",
                 "--methods", "prompt_template,few_shot", "--seed", "0", "--curve", "none",
                 "eval.sensitivity=10", "--set", "few_shot.n_candidates=1", "--out",
                 str(tmp_path)])
    assert code == 0
    rows = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["method"] for r in rows] == ["prompt_template", "few_shot"]
    for r in rows:
        assert r["model"] == "smollm2-135m" and r["n_eval"] == 30
        assert r["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
        assert 0.0 <= r["score"] <= 1.0 and r["eval_seconds"] > 0
    assert "few_shot" in capsys.readouterr().out
    assert all(r["sensitivity"]["n"] == 10 for r in rows)
    assert (tmp_path / "report.html").stat().st_size > 0

import json
from pathlib import Path

import pytest

from helpers import write_jsonl
from tailorlm.cli.main import main
from tailorlm.engine.cost import dir_bytes

FAST = ["--epochs", "1", "--batch-size", "4"]
CARD_KEYS = {"format_version", "method", "config", "task", "base_model", "data", "metrics",
             "costs", "recipe", "tailorlm_version", "created"}  # CARD.md


@pytest.fixture
def files(tmp_path):
    pos = ["a great film", "I loved it", "wonderful and fun", "the best movie"]
    neg = ["a bad film", "I hated it", "boring and dull", "the worst movie"]
    rows = [{"text": t, "label": "positive", "client": ("acme", "globex")[i % 2]}
            for i, t in enumerate(pos)]
    rows += [{"text": t, "label": "negative", "client": ("acme", "globex")[i % 2]}
             for i, t in enumerate(neg)]
    return write_jsonl(tmp_path / "train.jsonl", rows), write_jsonl(tmp_path / "test.jsonl", rows)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_tune_lora_then_eval_json(files, tiny_model_dir, tmp_path, capsys):
    train, test = files
    out = tmp_path / "adapters" / "lora"
    code, stdout, _ = run(capsys, "tune", "--method", "lora", "--model", tiny_model_dir,
                          "--train", train, "--val", test, "--out", out, *FAST,
                          "--set", "bf16=false")
    assert code == 0 and stdout.count("\n") == 1 and stdout.startswith(f"lora -> {out}: fit ")
    card = json.loads((out / "card.json").read_text())
    assert set(card) == CARD_KEYS | {"serving"}
    assert card["format_version"] == 1 and card["method"] == "lora"
    assert card["config"]["r"] == 8 and card["recipe"] == {
        "method": "lora", "config": card["config"], "seed": 0, "k": None, "plan": None}
    assert card["serving"] == {"max_lora_rank": 8}
    base = card["base_model"]
    assert base["name"] == str(tiny_model_dir.resolve()) and len(base["sha256"]) == 64
    assert base["variant"] == "safetensors float32" and base["dtype"] == "float32"
    assert base["identity"] == base["source"] == str(tiny_model_dir.resolve())
    assert card["task"]["labels"] == ["negative", "positive"]
    assert card["data"]["n_train"] == 8 and card["data"]["n_val"] == 8
    assert card["data"]["n_test"] == 0 and card["data"]["test_sha256"] is None
    assert card["data"]["train_sha256"] == card["data"]["val_sha256"]  # same file
    costs = card["costs"]
    assert costs["train_tokens"] > 0 and costs["trainable_params"] > 0
    # a frozen base: 4·N·T through the base, 6·N_tr·T for the LoRA weights
    assert costs["train_flops"] == (4 * costs["total_params"] + 6 * costs["trainable_params"]) \
        * costs["train_tokens"]
    assert costs["optimizer_bytes"] == 8 * costs["trainable_params"]
    assert costs["fit_seconds"] > 0 and costs["rss_before_mb"] > 0
    assert costs["latency_queries"] == 20 and costs["latency_ms_p95"] >= costs["latency_ms_p50"]
    assert set(card["metrics"]) == {"accuracy", "accuracy_ci"}
    assert (out / "adapter_model.safetensors").is_file() and (out / ".work").is_dir()

    code, stdout, _ = run(capsys, "eval", "--adapter", out, "--test", test, "--json")
    assert code == 0
    report = json.loads(stdout)
    assert {"metric", "score", "score_ci", "n_eval", "eval_seconds", "latency_ms_p50",
            "latency_ms_p95", "queries_per_second", "prompt_tokens_per_query",
            "generated_tokens_per_query", "eval_flops"} <= set(report)
    assert report["n_eval"] == 8 and report["metric"] == "accuracy"
    assert report["score"] == pytest.approx(card["metrics"]["accuracy"])  # val was this file

    code, stdout, _ = run(capsys, "eval", "--adapter", out, "--test", test)
    assert code == 0 and stdout.startswith("lora: accuracy ")


def test_tune_hybrid_with_variants_then_eval_json(files, tiny_model_dir, tmp_path, capsys):
    train, test = files
    out = tmp_path / "hybrid"
    code, stdout, _ = run(capsys, "tune", "--method", "lora+few_shot", "--variant-field",
                          "client", "--model", tiny_model_dir, "--train", train, "--out", out,
                          *FAST, "--set", "weight.bf16=false", "--set", "input.n_demos=2",
                          "--set", "input.n_candidates=1", "--set", "input.template=text_label")
    assert code == 0 and "2 variants" in stdout and "one LoRA per variant" in stdout
    assert sorted(p.name for p in (out / "variants").iterdir()) == ["acme", "globex"]
    card = json.loads((out / "card.json").read_text())
    assert card["costs"]["one_lora_per_variant_bytes"] == 2 * dir_bytes(out / "weight")
    assert set(card["costs"]["variants"]) == {"acme", "globex"}
    assert all(v["bytes"] > 0 for v in card["costs"]["variants"].values())

    assert card["serving"] == {"max_lora_rank": 8} and card["method"] == "lora+few_shot"
    for part, method in (("weight", "lora"), ("fallback", "few_shot"),
                         ("variants/acme", "few_shot")):  # every part is a whole adapter folder
        part_card = json.loads((out / part / "card.json").read_text())
        assert CARD_KEYS <= set(part_card) and part_card["method"] == method
        assert part_card["part_of"] == "lora+few_shot" and part_card["part"] == part.split("/")[-1]
        assert {k: part_card[k] for k in ("task", "base_model", "data", "recipe")} == \
            {k: card[k] for k in ("task", "base_model", "data", "recipe")}
        assert ("serving" in part_card) == (method == "lora")
    code, stdout, _ = run(capsys, "eval", "--adapter", out / "weight", "--test", test, "--json")
    assert code == 0 and json.loads(stdout)["method"] == "lora"

    code, stdout, _ = run(capsys, "eval", "--adapter", out, "--test", test, "--json")
    assert code == 0
    report = json.loads(stdout)
    assert report["method"] == "lora+few_shot" and report["n_eval"] == 8
    assert {name: v["n_eval"] for name, v in report["variants"].items()} == \
        {"acme": 4, "globex": 4}
    assert report["one_lora_per_variant_bytes"] > report["add_variant_bytes"] > 0


def test_resume_after_a_finished_fit_trains_nothing_and_writes_the_adapter(
        files, tiny_model_dir, tmp_path, capsys):
    train, _ = files
    out = tmp_path / "lora"
    args = ["tune", "--method", "lora", "--model", tiny_model_dir, "--train", train, "--out",
            out, *FAST, "--set", "bf16=false"]
    assert run(capsys, *args)[0] == 0
    first = json.loads((out / "card.json").read_text())["costs"]
    log = (out / ".work" / "train_log.jsonl").read_text()
    steps = json.loads((out / "adapter.json").read_text())["state"]["train_result"]["steps"]
    weights = (out / "adapter_model.safetensors").read_bytes()

    code, _, err = run(capsys, *args)  # again without --resume: refused, nothing lost
    assert code == 2 and "pass --resume" in err and err.count("\n") == 1
    (out / "adapter_model.safetensors").unlink()  # the adapter is written again from the run
    assert run(capsys, *args, "--resume")[0] == 0
    assert (out / ".work" / "train_log.jsonl").read_text() == log  # no step was taken
    assert json.loads((out / "adapter.json").read_text())["state"]["train_result"]["steps"] == \
        steps
    assert (out / "adapter_model.safetensors").read_bytes() == weights
    # the card still tells the whole fit's cost, not the resume's second or so
    again = json.loads((out / "card.json").read_text())["costs"]
    assert again["fit_seconds"] >= first["fit_seconds"]
    assert again["peak_rss_mb"] >= first["peak_rss_mb"]


def test_eval_opens_an_adapter_that_compare_saved(files, tiny_model_dir, tmp_path, capsys):
    from tailorlm.compare.runner import Run, run_comparison
    from tailorlm.data.load import load_task
    from tailorlm.models import load_backend

    train_file, test_file = files
    backend = load_backend(str(tiny_model_dir))
    train = load_task(train_file)
    rows = run_comparison(backend, train, train, [Run("lora", {"epochs": 1, "batch_size": 4,
                                                               "bf16": False, "r": 4})],
                          tmp_path / "out")
    folder = Path(rows[0]["adapter"])
    card = json.loads((folder / "card.json").read_text())
    assert set(card) == CARD_KEYS | {"serving"} and card["serving"] == {"max_lora_rank": 8}
    assert card["data"]["test_sha256"] == train.fingerprint() and card["data"]["n_test"] == 8
    assert card["metrics"]["accuracy"] == rows[0]["score"]
    assert card["costs"]["fit_seconds"] == rows[0]["fit_seconds"]
    code, stdout, _ = run(capsys, "eval", "--adapter", folder, "--test", test_file, "--json")
    assert code == 0
    report = json.loads(stdout)
    assert report["method"] == "lora" and report["score"] == pytest.approx(rows[0]["score"])


@pytest.mark.parametrize("args, message", [
    (["--method", "soft_prompt+lora"], "the weight-side method comes first"),
    (["--method", "lora", "--variant-field", "client"], "lora is not a hybrid"),
    (["--method", "lora", "--set", "rank=8"], "unknown option(s) rank"),
    (["--method", "lora", "--set", "r"], "write OPTION=VALUE"),
    (["--method", "few_shot", "--epochs", "2"], "unknown option(s) epochs"),
    (["--method", "lora", "--metric", "rouge_l"], "--metric 'rouge_l' scores generation"),
])
def test_user_errors_are_one_line_before_any_model_loads(files, tmp_path, capsys, monkeypatch,
                                                         args, message):
    import tailorlm.models as models

    monkeypatch.setattr(models, "load_backend", lambda *a, **k: pytest.fail("model loaded"))
    train, _ = files
    code, _, err = run(capsys, "tune", "--train", train, "--out", tmp_path / "a", *args)
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_train_file_fails_before_any_model_loads(tmp_path, capsys, monkeypatch):
    import tailorlm.models as models

    monkeypatch.setattr(models, "load_backend", lambda *a, **k: pytest.fail("model loaded"))
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "ok", "label": "a"}\n{"text": "broken", "label": \n')
    code, _, err = run(capsys, "tune", "--method", "lora", "--train", train, "--out",
                       tmp_path / "a")
    assert code == 2 and "train.jsonl line 2" in err and err.count("\n") == 1


def test_eval_of_a_folder_that_is_no_adapter_is_one_line(files, tmp_path, capsys):
    _, test = files
    code, _, err = run(capsys, "eval", "--adapter", tmp_path, "--test", test)
    assert code == 2 and "not an adapter folder" in err and err.count("\n") == 1

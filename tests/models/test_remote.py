"""RemoteBackend and ApiClient against a fake OpenAI-compatible server on 127.0.0.1 (tests/fake_openai.py),
backed by the tiny model: the three scoring tiers, the cache, retries, caps and auth."""

import re

import numpy as np
import pytest

for _module in ("fastapi", "uvicorn", "openai"):  # pip install -e '.[serve]'
    pytest.importorskip(_module)

from fake_openai import FakeServer  # noqa: E402
from helpers import reference_scores, sentiment_task, tiny_backend
from tailorlm.compare.runner import Run, read_results, run_comparison
from tailorlm.engine.evaluate import evaluate
from tailorlm.engine.prompt import Prompt
from tailorlm.errors import TailorError
from tailorlm.methods.contract import check_backend
from tailorlm.methods.index import get_method
from tailorlm.methods.prompt_adapter import PromptAdapter
from tailorlm.methods.templates import CLASSIFICATION
from tailorlm.models.api_client import ApiCapReached, ResponseCache
from tailorlm.models.remote import (FLOOR, distinct_first_words, first_token_scores, match_label,
                                    remote_backend, split_model_url)

PROMPTS = [Prompt("", "Text: a great film\nSentiment:"), Prompt("", "Text: I hated it\nLabel:"),
           Prompt("Decide.\n", "Text: fun\nAnswer:")]
LABELS = [" positive", " negative"]


@pytest.fixture(scope="module")
def local():
    return tiny_backend()


def remote(server, **kw):
    kw.setdefault("sleep", lambda s: None)
    return remote_backend(f"{server.url}#{server.model_name}", **kw)


def test_echo_tier_scores_labels_as_local_scoring_does(local):
    with FakeServer(local, mode="echo") as server:
        backend = remote(server)
        assert backend.capability.tier == "echo_logprobs" and backend.capability.batch_prompts
        scores = backend.score_labels(PROMPTS, LABELS)
    # the fake tokenizes prompt+label as one string; these prompts split at the same tokens
    np.testing.assert_allclose(scores, reference_scores(local, PROMPTS, LABELS), atol=1e-4)
    row = backend.describe()
    assert row["where"] == "remote" and row["endpoint_host"] == f"127.0.0.1:{server.port}"
    assert row["api_calls"] == 1 + 3  # one probe, one call per query (every label in it)
    assert row["api_prompt_tokens"] > 0 and row["api_latency_ms_p95"] >= row["api_latency_ms_p50"]


def test_top_logprobs_tier_and_labels_that_share_a_first_word(local):
    with FakeServer(local, mode="top") as server:
        backend = remote(server)
        cap = backend.capability
        assert cap.tier == "top_logprobs" and cap.api == "completions"
        scores = backend.score_labels(PROMPTS, LABELS)
        assert scores.shape == (3, 2) and np.isfinite(scores).all()
        backend.score_labels(PROMPTS, [" card arrival", " card linking"])
        assert any("share a first word" in n for n in backend.capability.notes)
    assert backend.describe()["api_tier"] == "top_logprobs"


def test_a_chat_only_server_scores_by_chat_top_logprobs_and_generates_by_chat(local):
    with FakeServer(local, mode="chat") as server:
        backend = remote(server)
        cap = backend.capability
        assert (cap.tier, cap.api) == ("top_logprobs", "chat")
        assert np.isfinite(backend.score_labels(PROMPTS, LABELS)).all()
        answers = backend.generate(PROMPTS[:1], max_new_tokens=3)
        assert isinstance(answers[0], str)
        # labels that share a first word fall back to generating, through chat
        backend.score_labels(PROMPTS, [" card arrival", " card linking"])
    assert any("share a first word" in n for n in cap.notes)


def test_generate_tier_parses_answers_and_counts_unparsed(local):
    with FakeServer(local, mode="plain") as server:
        backend = remote(server)
        assert backend.capability.tier == "generate"
        task = sentiment_task(3)
        adapter = PromptAdapter("prompt_template", None, task.with_examples([]),
                                CLASSIFICATION["text_sentiment"])
        result = evaluate(backend, adapter, task)
    # the random tiny model names no label: every answer is unparsed, predicted "" and wrong
    assert result.predictions == [""] * 6 and result.score == 0.0
    assert backend.describe()["unparsed_rate"] == 1.0
    assert result.tokens > 0  # the endpoint's usage, counted by the cost meter


def test_a_rerun_is_served_from_the_cache(local, tmp_path):
    with FakeServer(local, mode="echo") as server:
        cache = ResponseCache(tmp_path / "cache.sqlite")
        first = remote(server, cache=cache).score_labels(PROMPTS, LABELS)
        sent = server.requests
        again = remote(server, cache=cache)
        np.testing.assert_array_equal(again.score_labels(PROMPTS, LABELS), first)
        assert server.requests == sent and again.client.usage.calls == 0
        assert again.client.usage.cache_hits == 4  # probe + 3 queries


def test_429_with_retry_after_is_retried_then_answered(local):
    waits = []
    with FakeServer(local, mode="plain", fail_429=2, retry_after="1.5") as server:
        backend = remote(server, sleep=waits.append, cache=None)
        backend.client.request("completions", {"prompt": "hi", "max_tokens": 2})
        assert server.requests == 3
    assert waits == [1.5, 1.5] and backend.client.usage.retries == 2
    assert backend.client.usage.calls == 1


def test_401_and_404_fail_at_once_in_one_line(local, monkeypatch):
    with FakeServer(local, api_key="sk-right") as server:
        monkeypatch.setenv("MY_KEY", "sk-wrong")
        backend = remote(server, key_env="MY_KEY", cache=None)
        with pytest.raises(TailorError, match="refused the API key.*--api-key-env") as e:
            backend.client.request("completions", {"prompt": "hi", "max_tokens": 1})
        assert "\n" not in str(e.value) and server.requests == 1  # no retry
        monkeypatch.setenv("MY_KEY", "sk-right")
        wrong = remote_backend(f"{server.url}#no-such-model", key_env="MY_KEY", cache=None)
        with pytest.raises(TailorError, match="404 for model 'no-such-model'.*--model"):
            wrong.client.request("completions", {"prompt": "hi", "max_tokens": 1})
    with pytest.raises(TailorError, match="not set"):
        remote_backend("http://127.0.0.1:1/v1#m", key_env="TAILORLM_NO_SUCH_VAR")
    with pytest.raises(TailorError, match="URL#MODEL"):
        split_model_url("http://127.0.0.1:1/v1")


def test_call_cap_stops_a_comparison_cleanly_with_results_kept(local, tmp_path):
    task = sentiment_task(4)
    runs = [Run("prompt_template", {"template": "text_sentiment", "calibrate": "off"}, k=2),
            Run("prompt_template", {"template": "text_label", "calibrate": "off"}, k=2)]
    with FakeServer(local, mode="echo") as server:
        # probe 1 + 8 test queries: the first run fits in 10 calls, the second does not
        backend = remote(server, max_calls=10, cache=None)
        rows = run_comparison(backend, task, task, runs, tmp_path)
    kept = read_results(tmp_path)
    assert len(kept) == 1 and kept[0]["where"] == "remote" and kept[0]["api_calls"] <= 10
    assert rows[1]["skipped"] and "call cap reached (10 calls" in rows[1]["reason"]
    with pytest.raises(ApiCapReached):
        backend.client.request("completions", {"prompt": "x", "max_tokens": 1})


def test_methods_that_need_weights_refuse_a_remote_backend(local):
    with FakeServer(local) as server:
        backend = remote(server)
        for name in ("soft_prompt", "prefix", "lora", "full", "lora+soft_prompt"):
            assert get_method(name).needs_weights
            with pytest.raises(TailorError, match=re.escape(f"{name} needs the model")):
                check_backend(get_method(name), backend)
        for name in ("prompt_template", "few_shot"):
            check_backend(get_method(name), backend)  # text only: fine
        check_backend(get_method("lora"), local)


def test_label_matching_and_first_token_scores():
    words = ["positive", "negative", "very positive"]
    assert match_label(" Positive.", words) == 0
    assert match_label("very positive, I think", words) == 2
    assert match_label("I would say negative", words) == 1
    assert match_label("no idea", words) is None and match_label("", words) is None
    top = {" pos": -0.5, " neg": -1.5, " the": -2.0}
    np.testing.assert_allclose(first_token_scores(top, [" positive", " negative", " neutral"]),
                               [-0.5, -1.5, -2.0 - np.log(2)])
    assert first_token_scores({}, [" a"])[0] == FLOOR
    assert distinct_first_words([" card arrival", " cash"]) and \
        not distinct_first_words([" card arrival", " card linking"])


def test_compare_cli_against_an_endpoint_then_again_from_the_cache(local, tmp_path, capsys,
                                                                   monkeypatch):
    import json

    from helpers import write_jsonl
    from tailorlm.cli.main import main

    rows = [{"text": e.input, "label": e.label} for e in sentiment_task(4).examples]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    test = write_jsonl(tmp_path / "test.jsonl", rows)
    monkeypatch.setenv("MY_KEY", "sk-test")
    with FakeServer(local, mode="echo", api_key="sk-test") as server:
        args = ["compare", "--train", str(train), "--test", str(test), "--endpoint", server.url,
                "--model", server.model_name, "--api-key-env", "MY_KEY", "--max-api-calls", "500",
                "--methods", "prompt_template,few_shot,lora", "--k", "2", "--seed", "0",
                "--curve", "none", "--set", "few_shot.n_demos=2",
                "--set", "few_shot.n_candidates=1", "eval.sensitivity=0", "--api-only",
                "--sensitive-data", "--out", str(tmp_path / "run")]
        assert main(args) == 0
        err = capsys.readouterr().err
        # --api-only drops lora before the endpoint would (either says so in one line)
        assert "not lora, which need the model's weights" in err
        assert "tier echo_logprobs; projected about" in err and "max_calls=500" in err
        sent = server.requests
        assert main(args) == 0  # the same comparison again: every run is in results.jsonl
        assert server.requests == sent
    kept = read_results(tmp_path / "run")
    assert [r["method"] for r in kept] == ["prompt_template", "few_shot"]
    for row in kept:
        assert row["where"] == "remote" and row["endpoint_model"] == "fake-model"
        assert row["api_tier"] == "echo_logprobs" and row["api_calls"] > 0
        assert row["api_prompt_tokens"] > 0 and row["api_usd"] > 0
        # the default prices: $0.15 per 1M prompt tokens, $0.60 per 1M completion tokens
        assert row["api_usd_per_query"] == pytest.approx(
            (0.15 * row["api_prompt_tokens_per_query"]
             + 0.60 * row["api_completion_tokens_per_query"]) / 1e6)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    api = {a["method"]: a for a in report["api"]}
    assert api["few_shot"]["tier"] == "echo_logprobs"
    assert api["few_shot"]["calls"] == kept[1]["api_calls"] and api["few_shot"]["usd"] > 0
    md = (tmp_path / "run" / "report.md").read_text()
    assert "API few_shot: 127.0.0.1:" in md and "tier echo_logprobs" in md and "cache hits" in md
    methods = report["methods"]
    methods = methods if isinstance(methods, dict) else {m["method"]: m for m in methods}
    # the report's per-query cost is the measured one
    assert methods["prompt_template"]["cost"]["per_query_usd"] == pytest.approx(
        kept[0]["api_usd_per_query"])
    assert report["recommendation"]["excluded"] == {
        "prompt_template": "--sensitive-data: it sends the data to a remote endpoint",
        "few_shot": "--sensitive-data: it sends the data to a remote endpoint"}

import json

import numpy as np
import pytest

from fake_openai import FakeServer
from helpers import sentiment_task, sharp_tiny_backend
from tailorlm.errors import TailorError
from tailorlm.methods import get_method
from tailorlm.methods.artifact import load_adapter, save_adapter
from tailorlm.methods.instruction_search import (SEARCH_FILE, InstructionSearchConfig, _score,
                                                 edit, seed_instructions)
from tailorlm.methods.prompt_adapter import PromptAdapter
from tailorlm.methods.templates import CLASSIFICATION
from tailorlm.models.remote import remote_backend


@pytest.fixture(scope="module")
def backend():
    return sharp_tiny_backend()


def fit(backend, task, **options):
    spec = get_method("instruction_search")
    return spec.fit(backend, task, None, spec.config.from_dict(options), seed=0)


def test_seeds_come_from_the_task_and_edits_follow_grips():
    task = sentiment_task(2)
    task.description = "the sentiment of a movie review"
    seeds = seed_instructions(task, CLASSIFICATION["text_sentiment"])
    assert seeds[0] == "" and "Answer with one of: {labels}." in seeds[1]
    assert "What is the sentiment of the text? Answer with one of: {labels}." in seeds
    assert seeds[-1] == "the sentiment of a movie review."
    rng = np.random.default_rng(0)
    pool = ["Be concise.", "Answer with one of: {labels}."]
    base = "Decide the sentiment. Answer with one of: {labels}. Be concise."
    edits = {edit(base, pool, rng) for _ in range(40)}
    assert len(edits) > 5 and base not in edits or len(edits) > 5
    assert "Answer with one of: {labels}. Decide the sentiment. Be concise." in edits  # swap
    assert "Decide the sentiment. Be concise." in edits  # delete
    assert any("Determine" in e or "Identify" in e or "Choose" in e for e in edits)  # paraphrase
    assert edit("", pool, rng) in pool  # an empty instruction can only grow


def test_an_add_never_repeats_a_phrase_the_instruction_holds():
    """trec's winner was "Be concise. Be concise.": the add edit had inserted a phrase that was
    already there. Now an add (or a paraphrase with no word to change) picks a new phrase, and
    with none left the edit deletes, swaps or paraphrases instead."""
    from tailorlm.methods.instruction_search import _split

    rng = np.random.default_rng(0)
    pool = ["Be concise.", "Answer with one word.", "be  CONCISE."]
    for base in ["Be concise.", "Answer with one word. Be concise.", "Be concise. Classify it."]:
        for _ in range(60):
            phrases = [" ".join(p.lower().split()) for p in _split(edit(base, pool, rng))]
            assert len(phrases) == len(set(phrases)), phrases
    assert {edit("Be concise.", ["Be concise."], rng) for _ in range(20)} <= {"", "Be concise."}


def test_the_budget_knows_the_search_passes():
    """compare/budget.py sizes a plan by the passes a search scores: seeds, rounds x edits (and
    proposals), calibration; asked of the method (MethodSpec.choice_passes)."""
    from tailorlm.compare.budget import Probe, estimate_fit, method_costs

    assert method_costs("instruction_search")["passes"] == 5 + 3 * 4 + 1
    assert method_costs("instruction_search", {"rounds": 1, "edits_per_round": 2})["passes"] == 8
    with_llm = {"proposer": "http://h/v1#m", "proposals_per_round": 2}
    assert method_costs("instruction_search", with_llm)["passes"] == 5 + 3 * 6 + 1
    p = Probe(s_query=0.1, tok_s=100.0, row_tokens=10.0, n_labels=2)
    # 40 rows: 40 judged; 18 passes of 40 queries at 0.1 s
    assert estimate_fit(p, (0.0,), 40, 5, passes=18) == pytest.approx(18 * 40 * 0.1)


def test_search_never_ends_below_its_first_seed_and_records_its_trajectory(backend, tmp_path):
    task = sentiment_task(8)
    adapter = fit(backend, task, rounds=2, edits_per_round=3, calibrate="off")
    s = adapter.search
    assert [t["round"] for t in s["trajectory"]] == [0, 1, 2]
    best = [t["best_score"] for t in s["trajectory"]]
    assert best == sorted(best)  # greedy: kept only if better
    assert best[-1] >= s["seed_scores"][""]
    assert s["candidates_scored"] <= len(s["seed_scores"]) + 2 * 3
    assert s["stopped"] == "rounds done" and s["metric"] == "accuracy"
    # the chosen instruction's score, measured again
    again = _score(backend, PromptAdapter("x", None, task.with_examples([]), adapter.template),
                   task, None)[0]
    assert again == pytest.approx(best[-1])
    save_adapter(adapter, tmp_path / "a", {})
    assert json.loads((tmp_path / "a" / SEARCH_FILE).read_text())["trajectory"][-1]["instruction"] \
        == adapter.template.instruction
    loaded = load_adapter(tmp_path / "a")
    assert loaded.template == adapter.template and loaded.search["trajectory"] == s["trajectory"]
    assert loaded.prompt(task.examples[0]) == adapter.prompt(task.examples[0])


def test_budget_stops_the_search(backend):
    adapter = fit(backend, sentiment_task(4), rounds=5, max_seconds=0)
    assert adapter.search["candidates_scored"] == 1  # the instruction-less seed only
    assert adapter.search["stopped"] == "budget: max_seconds=0 reached"
    with pytest.raises(TailorError, match="URL#MODEL"):
        InstructionSearchConfig(proposer="http://x/v1")


def test_search_through_an_endpoint_with_call_cap_and_llm_proposer(backend):
    for module in ("fastapi", "uvicorn", "openai"):
        pytest.importorskip(module)
    task = sentiment_task(4)
    with FakeServer(backend, mode="echo") as server:
        remote = remote_backend(f"{server.url}#{server.model_name}", cache=None)
        # 4 seeds x 8 rows = 32 calls, then 8 per candidate: the cap falls in round 1 or 2
        adapter = fit(remote, task, template="text_sentiment", rounds=3, edits_per_round=2,
                      max_calls=45,
                      proposer=f"{server.url}#{server.model_name}", proposals_per_round=1,
                      calibrate="off")
    s = adapter.search
    assert s["stopped"] == "budget: max_calls=45 reached"
    assert 45 <= s["calls"] <= 45 + len(task)  # checked between candidates, not within one
    assert s["tokens"] > 0 and s["usd"] == 0.0  # no prices given
    assert s["proposer_usage"]["api_calls"] >= 1  # the LLM proposer was asked

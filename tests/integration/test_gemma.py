"""Gemma 3 270M, the catalog's second model: its tokenizer puts <bos> before text, and scoring
must too. Converted from its GGUF once per session, in the integration tests' shared home."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from tailorlm.data.load import load_builtin_task, load_task
from tailorlm.engine.evaluate import evaluate
from tailorlm.engine.scoring import score_labels
from tailorlm.methods.prompt_adapter import PromptAdapter
from tailorlm.methods.templates import CLASSIFICATION

pytestmark = pytest.mark.integration
SST2 = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "sst2"


@pytest.fixture(scope="module")
def gemma(smollm2_home):
    from tailorlm.errors import TailorError
    from tailorlm.models import load_backend

    mp = pytest.MonkeyPatch()
    mp.setenv("TAILORLM_HOME", str(smollm2_home))
    try:
        backend = load_backend("gemma3-270m")
    except TailorError as e:  # not installed: `make test` installs it
        mp.undo()
        pytest.skip(str(e))
    yield backend
    mp.undo()


def rows(n: int):
    if SST2.exists():
        task = load_task(SST2 / "dev.jsonl")
    else:
        task = load_builtin_task("support_routing")[1]
    examples = list(task.examples)
    random.Random(0).shuffle(examples)
    return task.with_examples(examples[:n])


def test_gemma_reads_bos_first_and_scores_as_a_plain_forward(gemma):
    assert gemma.identity == "google/gemma-3-270m"
    assert gemma.variant == "GGUF Q4_K_M dequantized to float32"
    assert gemma.bos_ids == [gemma.tokenizer.bos_token_id] == [2]

    task = rows(2)
    adapter = PromptAdapter("prompt_template", None, task, CLASSIFICATION["text_label"])
    prompts = [adapter.prompt(e) for e in task.examples]
    labels = adapter.continuations(task)
    got = score_labels(gemma, prompts, labels)
    want = np.zeros_like(got)
    tok = gemma.tokenizer
    for i, p in enumerate(prompts):
        context = tok(p.text)["input_ids"]
        assert context[0] == 2  # the tokenizer asks for <bos>
        for j, label in enumerate(labels):
            ids = tok(p.text + label)["input_ids"]
            assert ids[:len(context)] == context
            with torch.no_grad():
                logp = torch.log_softmax(gemma.model(torch.tensor([ids])).logits[0].double(), -1)
            want[i, j] = sum(logp[t - 1, ids[t]].item() for t in range(len(context), len(ids)))
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_gemma_evaluates_a_few_rows(gemma):
    task = rows(12)
    adapter = PromptAdapter("prompt_template", None, task, CLASSIFICATION["text_label"])
    result = evaluate(gemma, adapter, task, latency_queries=2)
    assert result.n_eval == 12 and 0.0 <= result.score <= 1.0
    assert result.label_scores.shape == (12, len(task.labels))
    assert result.prompt_tokens_per_query == pytest.approx(np.mean(
        [len(gemma.tokenizer(adapter.prompt(e).text)["input_ids"]) for e in task.examples]))

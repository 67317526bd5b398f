"""The mixed engine on the real built-in model: rows of a prompt template, a soft prompt and a LoRA
in one batch equal each alone and `tailor eval`'s path; banking77's multi-token labels too."""

import random
import sys
from pathlib import Path

import numpy as np
import pytest

from tailorlm.data.load import load_task
from tailorlm.engine.evaluate import label_scores
from tailorlm.engine.mixed import BatchEngine, ClassifyRequest, GenerateRequest

sys.path.insert(0, str(Path(__file__).parent))
from mixed_adapters import lora, prompt_adapter, soft_prompt  # noqa: E402

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve()
DATA = next((p / "shared" / "datasets" for p in HERE.parents[2:5]
             if (p / "shared" / "datasets" / "sst2").exists()), None)


@pytest.fixture(scope="module")
def smollm2(smollm2_home):
    from tailorlm.models import load_backend

    mp = pytest.MonkeyPatch()
    mp.setenv("TAILORLM_HOME", str(smollm2_home))
    yield load_backend("smollm2-135m")
    mp.undo()


def rows(name: str, split: str, n: int):
    task = load_task(DATA / name / f"{split}.jsonl")
    examples = list(task.examples)
    random.Random(0).shuffle(examples)
    return task.with_examples(examples[:n])


@pytest.mark.skipif(DATA is None, reason="shared datasets not present")
def test_mixed_batch_on_smollm2_equals_alone_and_eval(smollm2):
    task = rows("sst2", "train", 6)
    adapters = {"prompt_template": prompt_adapter(task),
                "soft_prompt": soft_prompt(smollm2, task, 8, 0),
                "lora": lora(smollm2, task, 8, 1, std=0.02)}
    engine = BatchEngine(smollm2)
    served = {name: engine.add(a, name) for name, a in adapters.items()}
    reqs = [ClassifyRequest(s, e.input) for s in served.values() for e in task.examples]
    random.Random(1).shuffle(reqs)
    mixed = engine.classify(reqs)
    for req, got in zip(reqs, mixed):
        alone = engine.classify([req])[0]
        assert got.label == alone.label
        np.testing.assert_allclose(list(got.logprobs.values()), list(alone.logprobs.values()),
                                   atol=1e-4)
    for name, adapter in adapters.items():
        expected = label_scores(smollm2, adapter, task)
        got = [r for r, q in zip(mixed, reqs) if q.adapter is served[name]]
        texts = [q.text for q in reqs if q.adapter is served[name]]
        order = [texts.index(e.input) for e in task.examples]
        raw = np.array([[got[i].logprobs[label] for label in task.labels] for i in order])
        np.testing.assert_allclose(adapter.adjust(raw), expected, atol=1e-4)
    text = engine.generate([GenerateRequest(engine.base_served, prompt="The capital of France is",
                                            max_tokens=4, temperature=0)])[0].text
    assert "Paris" in text


@pytest.mark.skipif(DATA is None, reason="shared datasets not present")
def test_multi_token_labels_of_banking77(smollm2):
    task = rows("banking77", "test", 3)
    adapter = prompt_adapter(task)
    engine = BatchEngine(smollm2)
    s = engine.add(adapter, "router")
    got = engine.classify([ClassifyRequest(s, e.input) for e in task.examples])
    expected = label_scores(smollm2, adapter, task)
    raw = np.array([[r.logprobs[label] for label in task.labels] for r in got])
    np.testing.assert_allclose(raw, expected, atol=1e-4)
    assert [r.label for r in got] == [task.labels[i] for i in expected.argmax(1)]

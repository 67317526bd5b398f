import copy
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import sharp_tiny_backend, tiny_backend
from tailorlm.engine.evaluate import label_scores
from tailorlm.engine.generate import generate
from tailorlm.engine.mixed import BatchEngine, ClassifyRequest, GenerateRequest
from tailorlm.engine.mixed_batch import PACKED_ATTENTION
from tailorlm.engine.prompt import Prompt
from tailorlm.methods.artifact import save_adapter

sys.path.insert(0, str(Path(__file__).parent))
from mixed_adapters import (classifiers, client_sentiment, full, generation_task,  # noqa: E402
                            lora, prefix, prompt_adapter, soft_prompt)

TEXTS = ["a great film", "boring and dull", "I loved it, the best movie"]


@pytest.fixture(scope="module")
def backend():
    return tiny_backend()


@pytest.fixture(scope="module")
def task():
    return client_sentiment()


@pytest.fixture(scope="module")
def adapters(backend, task):
    return classifiers(backend, task)


@pytest.fixture(scope="module")
def served(backend, adapters, tmp_path_factory):
    """Every adapter saved to its folder and loaded by the engine (instruction_search from
    memory: its folder wants the search's record)."""
    engine = BatchEngine(backend, max_batch=8)
    out = {}
    for name, adapter in adapters.items():
        if name == "instruction_search":
            out[name] = engine.add(adapter, name)
            continue
        folder = tmp_path_factory.mktemp("adapters") / name
        save_adapter(adapter, folder, {})
        out[name] = engine.load(folder, name)
    return engine, out


def test_every_row_of_a_mixed_batch_equals_the_row_alone(served):
    engine, by_name = served
    reqs = [ClassifyRequest(s, text, variant=v) for s in by_name.values() for text in TEXTS
            for v in ((None, "acme") if s.method == "lora+soft_prompt" else (None,))]
    random.Random(0).shuffle(reqs)
    mixed = engine.classify(reqs)
    assert len({r.adapter.method for r in reqs}) == 8  # every kind in one call
    for req, got in zip(reqs, mixed):
        alone = engine.classify([req])[0]
        assert got.label == alone.label
        assert got.logprobs.keys() == alone.logprobs.keys()
        np.testing.assert_allclose(list(got.logprobs.values()), list(alone.logprobs.values()),
                                   atol=1e-4)
        assert (got.prompt_tokens, got.completion_tokens) == \
            (alone.prompt_tokens, alone.completion_tokens)


def test_packs_hold_each_row_once_within_their_limits(served, monkeypatch):
    """Classification packs rows without padding (engine/mixed_batch.py): every row in exactly
    one pack, at most max_batch rows, attention within PACK_PAIRS, and the same answers."""
    import tailorlm.engine.mixed as mixed

    engine, by_name = served
    monkeypatch.setattr(mixed, "PACK_PAIRS", 3_000)
    reqs = [ClassifyRequest(s, text * (1 + i % 3)) for i, s in enumerate(by_name.values())
            for text in TEXTS]
    rows = [engine._row(r.adapter, r.adapter.side(None),
                        *engine._encode(r.adapter.side(None).parts.prompt(
                            mixed.Example(input=r.text, target="")))) for r in reqs]
    packs = list(engine._batches(list(range(len(rows))), rows, [0] * len(rows)))
    assert sorted(i for p in packs for i in p) == list(range(len(rows)))
    assert len(packs) > 1 and all(len(p) <= engine.max_batch for p in packs)
    for p in packs:
        T = sum(len(rows[i].own) for i in p)
        P = sum({id(rows[i].prefix): rows[i].n_prefix for i in p}.values())
        assert len(p) == 1 or T * (P + T) <= 3_000
    got = engine.classify(reqs)  # small packs answer what one big pack does, and row-by-row
    monkeypatch.setattr(mixed, "PACK_PAIRS", 10**9)  # attention what the dense mask does
    config = engine.banks.view.config
    assert config._attn_implementation == PACKED_ATTENTION
    big = engine.classify(reqs)
    monkeypatch.setattr(config, "_attn_implementation", "sdpa")
    dense = engine.classify(reqs)
    for a, b, c in zip(got, big, dense):
        assert a.label == b.label == c.label
        for other in (b, c):
            np.testing.assert_allclose(list(a.logprobs.values()), list(other.logprobs.values()),
                                       atol=1e-4)


@pytest.mark.parametrize("name", ["prompt_template", "few_shot", "instruction_search",
                                  "soft_prompt", "prefix", "lora", "lora_r8", "full",
                                  "lora+soft_prompt"])
def test_one_request_equals_the_evaluation_path(backend, task, adapters, served, name):
    engine, by_name = served
    adapter, s = adapters[name], by_name[name]
    expected = label_scores(backend, adapter, task)  # adjusted, per row's variant for a hybrid
    got = engine.classify([ClassifyRequest(s, e.input, variant=e.extra.get("client"))
                           for e in task.examples])
    raw = np.array([[r.logprobs[label] for label in task.labels] for r in got])
    if name == "lora+soft_prompt":  # each variant's rows adjust with their own input side
        adjusted = raw
    else:
        adjusted = adapter.adjust(raw)
    np.testing.assert_allclose(adjusted, expected, atol=1e-4)
    assert [r.label for r in got] == [task.labels[i] for i in expected.argmax(axis=1)]
    verbal = adapter.continuations(task) if hasattr(adapter, "continuations") else None
    assert all(r.completion_tokens == len(backend.encode(verbal[task.labels.index(r.label)]))
               for r in got)


def test_calibration_changes_the_label_not_the_logprobs(served):
    engine, by_name = served
    s = by_name["prompt_template"]
    r = engine.classify([ClassifyRequest(s, TEXTS[0])])[0]
    raw = np.array([r.logprobs[label] for label in s.labels])
    adjusted = raw - np.logaddexp.reduce(raw) - np.log([0.7, 0.3])
    assert r.label == s.labels[int(adjusted.argmax())]


def test_bgmv_lora_logits_match_peft_unmerged(backend, served, tmp_path):
    from peft import PeftModel

    engine, by_name = served
    ids = torch.tensor([backend.encode("the cat sat on the mat")] * 3)
    engine.banks.use([by_name["lora"].slot, 0, by_name["lora_r8"].slot])
    with torch.no_grad():
        ours = engine.banks.view(input_ids=ids).logits
    for row, name in ((0, "lora"), (2, "lora_r8")):
        folder = tmp_path / name
        save_adapter(served_adapter := _adapter_of(served, name), folder, {})
        assert served_adapter is not None
        peft = PeftModel.from_pretrained(copy.deepcopy(backend.model), str(folder)).eval()
        with torch.no_grad():
            theirs = peft(input_ids=ids[:1]).logits[0]
        torch.testing.assert_close(ours[row], theirs, atol=1e-5, rtol=0)
    with torch.no_grad():
        plain = backend.model(input_ids=ids[:1]).logits[0]
    torch.testing.assert_close(ours[1], plain, atol=1e-6, rtol=0)  # slot 0: the base


def _adapter_of(served, name):
    engine, by_name = served
    return _ADAPTERS[name]


_ADAPTERS: dict = {}


@pytest.fixture(autouse=True, scope="module")
def _remember(adapters):
    _ADAPTERS.update(adapters)


def test_lora_adds_only_its_factors_and_never_copies_the_base(task, tmp_path):
    backend = tiny_backend()
    base_ptrs = {p.data_ptr() for p in backend.model.parameters()}
    base_bytes = sum(p.nbytes for p in backend.model.parameters())
    engine = BatchEngine(backend)
    loaded = []
    for seed, r in enumerate((2, 4, 8)):
        folder = tmp_path / f"lora{seed}"
        save_adapter(lora(backend, task, r, seed), folder, {})
        loaded.append(engine.load(folder, f"l{seed}"))
        from safetensors.torch import load_file
        weights = load_file(str(folder / "adapter_model.safetensors"))
        assert loaded[-1].nbytes == sum(t.nbytes for t in weights.values())
    view = engine.banks.view
    assert {p.data_ptr() for p in view.parameters()} == base_ptrs  # the same tensors
    assert sum(p.nbytes for p in view.parameters()) == base_bytes
    assert not any("Banked" in type(m).__name__ for m in backend.model.modules())  # untouched
    per_layer = [(layer.A.shape, layer.B.shape) for layer in engine.banks.layers.values()]
    assert all(a[:2] == (4, 8) and b[0] == 4 and b[2] == 8 for a, b in per_layer)  # 3 + slot 0
    assert engine.banks.nbytes == sum(layer.A.nbytes + layer.B.nbytes
                                      for layer in engine.banks.layers.values())
    slot = loaded[1].slot
    engine.unload(loaded[1])
    again = engine.load(tmp_path / "lora1", "again")  # a freed slot is reused
    assert again.slot == slot


def test_soft_prompt_and_prefix_key_values_are_computed_once_at_load(backend, served):
    engine, by_name = served
    side = by_name["soft_prompt"].sides[None]
    assert side.n_virtual == 4 and side.virtual[0][0].shape == (1, 2, 4, 8)
    assert by_name["soft_prompt"].nbytes == sum(k.nbytes + v.nbytes for k, v in side.virtual) + \
        sum(k.nbytes + v.nbytes for kv, _ in side.prefixes.values() for k, v in kv)
    assert by_name["full"].nbytes >= sum(p.nbytes for p in backend.model.parameters())


# -- generation --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gen():
    """A sharper tiny model (clear arg-maxes) and generation adapters of every kind over it."""
    backend = sharp_tiny_backend()
    task = generation_task()
    engine = BatchEngine(backend, max_batch=4)
    adapters = {"prompt_template": prompt_adapter(task), "soft_prompt": soft_prompt(backend, task, 3, 1),
                "prefix": prefix(backend, task, 2, 2), "lora": lora(backend, task, 4, 3),
                "full": full(backend, task, 4)}
    served = {name: engine.add(a, name) for name, a in adapters.items()}
    return backend, engine, adapters, served


def test_greedy_rows_of_a_mixed_batch_equal_alone_and_the_existing_generate(gen):
    backend, engine, adapters, served = gen
    reqs = [GenerateRequest(s, text=t, max_tokens=6, temperature=0)
            for s in served.values() for t in ("the cat", "a dog ran in the park")]
    reqs.append(GenerateRequest(engine.base_served, prompt="the cat sat", max_tokens=6,
                                temperature=0))
    mixed = engine.generate(reqs)
    for req, got in zip(reqs, mixed):
        alone = engine.generate([req])[0]
        assert (got.text, got.tokens, got.finish_reason) == \
            (alone.text, alone.tokens, alone.finish_reason)
        np.testing.assert_allclose(got.token_logprobs, alone.token_logprobs, atol=1e-4)
    for name, adapter in adapters.items():
        bound = adapter.bind(backend)
        prompts = [adapter.prompt(e) for e in generation_task().examples]
        expected = generate(bound, prompts, max_new_tokens=6, stop=adapter.stop)
        got = engine.generate([GenerateRequest(served[name], text=e.input, max_tokens=6,
                                               temperature=0)
                               for e in generation_task().examples])
        assert [g.text.strip() for g in got] == expected, name
    base = generate(backend, [Prompt("", "the cat sat")], max_new_tokens=6, stop=())
    assert mixed[-1].text.strip() == base[0]


def test_sampling_is_reproducible_with_a_seed(gen):
    backend, engine, _, served = gen
    req = lambda seed: GenerateRequest(served["lora"], text="the cat", max_tokens=8,  # noqa
                                       temperature=1.5, top_p=0.9, seed=seed)
    a, b, c = engine.generate([req(7), req(7), req(8)])
    assert a.text == b.text and a.tokens == b.tokens
    alone = engine.generate([req(7)])[0]
    assert alone.tokens == a.tokens
    texts = {r.text for r in engine.generate([req(s) for s in range(6)])}
    assert len(texts) > 1  # seeds differ, so do samples


def test_echo_with_no_tokens_scores_the_prompt_like_a_plain_forward(gen):
    backend, engine, _, served = gen
    ids = backend.encode("the cat sat on the mat")
    r = engine.generate([GenerateRequest(engine.base_served, prompt="the cat sat on the mat",
                                         max_tokens=0, echo=True, logprobs=1)])[0]
    assert r.text == "" and r.completion_tokens == 0 and r.finish_reason == "length"
    with torch.no_grad():
        logp = torch.log_softmax(backend.model(torch.tensor([ids])).logits[0].double(), -1)
    expected = [logp[i - 1, ids[i]].item() for i in range(1, len(ids))]
    assert r.prompt_token_logprobs[0] is None
    np.testing.assert_allclose(r.prompt_token_logprobs[1:], expected, atol=1e-5)
    assert "".join(r.prompt_token_strs) == "the cat sat on the mat"
    assert r.prompt_tokens == len(ids)


def test_stop_strings_streaming_top_logprobs_and_cancel(gen):
    backend, engine, _, served = gen
    free = engine.generate([GenerateRequest(engine.base_served, prompt="the cat",
                                            max_tokens=10, temperature=0)])[0]
    assert free.finish_reason in ("length", "stop") and len(free.text) > 2
    stop = free.text[2:4]
    pieces = []
    r = engine.generate([GenerateRequest(engine.base_served, prompt="the cat", max_tokens=10,
                                         temperature=0, stop=(stop,), logprobs=3,
                                         on_token=pieces.append)])[0]
    assert r.finish_reason == "stop" and r.text == free.text[:free.text.find(stop)]
    assert "".join(pieces) == r.text
    assert all(1 <= len(top) <= 3 for top in r.top_logprobs)  # ids may decode alike
    assert all(abs(max(top.values()) - lp) < 1e-6 for top, lp in zip(r.top_logprobs,
                                                                      r.token_logprobs))
    calls = []
    cancelled = engine.generate([GenerateRequest(engine.base_served, prompt="the cat",
                                                 max_tokens=10, temperature=0,
                                                 cancelled=lambda: calls.append(1) or
                                                 len(calls) > 3)])[0]
    assert cancelled.finish_reason == "cancelled" and cancelled.completion_tokens == 3


def test_temperature_zero_is_greedy_and_rows_leave_as_they_finish(gen):
    backend, engine, _, served = gen
    short = GenerateRequest(engine.base_served, prompt="the cat", max_tokens=1, temperature=0)
    long = GenerateRequest(engine.base_served, prompt="the cat", max_tokens=8, temperature=0)
    a, b = engine.generate([short, long])
    assert a.completion_tokens == 1 and b.tokens[:1] == a.tokens
    assert b.completion_tokens == 8 or b.finish_reason == "stop"


def test_rows_join_a_running_batch_and_equal_alone(gen):
    backend, engine, _, served = gen  # engine.max_batch == 4
    kinds = list(served.values())
    reqs = [GenerateRequest(kinds[i % len(kinds)], text=t, max_tokens=2 + 3 * (i % 3),
                            temperature=0, echo=(i == 4), logprobs=1)
            for i, t in enumerate(["the cat", "a dog ran in the park", "great film", "the mat",
                                   "I hated it", "a bad film", "four"])]
    alone = [engine.generate([r])[0] for r in reqs]
    late = [GenerateRequest(served["lora"], text="the park", max_tokens=5, temperature=0),
            GenerateRequest(engine.base_served, prompt="two plus", max_tokens=3, temperature=0,
                            echo=True)]
    late_alone = [engine.generate([r])[0] for r in late]
    finished, asked = [], []
    for r in reqs + late:
        r.on_done = lambda result, r=r: finished.append(r)

    handed = []  # the room left when each late request was handed over

    def admit(room):
        asked.append(room)
        if len(asked) in (2, 3) and late:
            handed.append(room)
            return [late.pop(0)]
        return []

    got = engine.generate(reqs, admit=admit)
    assert len(got) == len(reqs) + 2 and len(finished) == len(reqs) + 2
    for a, b in zip(got, alone + late_alone):
        assert (a.text, a.tokens, a.finish_reason) == (b.text, b.tokens, b.finish_reason)
        np.testing.assert_allclose(a.token_logprobs, b.token_logprobs, atol=1e-4)
        if b.prompt_token_logprobs is not None:
            np.testing.assert_allclose(a.prompt_token_logprobs[1:], b.prompt_token_logprobs[1:],
                                       atol=1e-4)
    assert len(handed) == 2 and all(room < engine.max_batch for room in handed)  # joined a
    # running batch
    assert finished.index(reqs[0]) < finished.index(reqs[2])  # 2 tokens before 8: left first

"""The OpenAI API of `tailor serve`, driven with the official `openai` client on 127.0.0.1."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import openai
import pytest
import torch

from helpers import tiny_backend
from serve.conftest import KEY

SENT = "a great film"


def reference_echo(text: str) -> tuple[list[str], list[float | None]]:
    """The prompt's tokens and log p of each after the ones before it: one plain forward."""
    be = tiny_backend()
    ids = be.encode(text)
    with torch.no_grad():
        logp = torch.log_softmax(be.model(torch.tensor([ids])).logits[0].double(), -1)
    return ([be.tokenizer.decode([t]) for t in ids],
            [None] + [float(logp[j - 1, ids[j]]) for j in range(1, len(ids))])


def eval_reference(folder, text: str):
    """What `tailor eval` predicts for one row, and the raw label log-likelihoods."""
    from tailorlm.data.task import Example
    from tailorlm.engine.evaluate import label_scores
    from tailorlm.engine.scoring import score_labels
    from tailorlm.methods.artifact import load_adapter, load_card

    card = load_card(folder)["task"]
    from tailorlm.data.task import Task

    task = Task(name="t", kind="classification", examples=[Example(input=text, target="")],
                labels=card["labels"], verbalizer=card["verbalizer"])
    be, adapter = tiny_backend(), load_adapter(folder)
    adjusted = label_scores(be, adapter, task)
    raw = score_labels(adapter.bind(be), [adapter.prompt(task.examples[0])],
                       adapter.continuations(task))
    return task.labels[int(adjusted.argmax())], dict(zip(task.labels, raw[0]))


def test_completion_greedy_is_deterministic_and_has_usage(client):
    a = client.completions.create(model="tiny", prompt="the cat sat", max_tokens=6, temperature=0)
    b = client.completions.create(model="tiny", prompt="the cat sat", max_tokens=6, temperature=0)
    assert a.choices[0].text == b.choices[0].text and a.choices[0].text
    assert a.usage.prompt_tokens == len(tiny_backend().encode("the cat sat"))
    assert a.usage.completion_tokens == 6 and a.usage.total_tokens == a.usage.prompt_tokens + 6
    assert a.choices[0].finish_reason == "length" and a.model == "tiny"


def test_seeded_sampling_repeats_and_n_gives_n_choices(client):
    kw = dict(model="tiny", prompt="the cat", max_tokens=8, temperature=1.0, seed=7)
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    assert a.choices[0].text == b.choices[0].text
    two = client.completions.create(**kw, n=2)
    assert [c.index for c in two.choices] == [0, 1]
    assert two.choices[0].text == a.choices[0].text  # choice i samples with seed + i
    assert two.usage.completion_tokens == 16


def test_echo_logprobs_scores_the_prompt_like_a_plain_forward(client):
    """Remote label scoring (tier a): max_tokens=0, echo=True, logprobs=1."""
    text = "the cat sat on the mat"
    r = client.completions.create(model="tiny", prompt=text, max_tokens=0, echo=True,
                                  logprobs=1, temperature=0)
    lp = r.choices[0].logprobs
    tokens, ref = reference_echo(text)
    assert r.choices[0].text == text and lp.tokens == tokens and "".join(lp.tokens) == text
    assert lp.token_logprobs[0] is None
    np.testing.assert_allclose(lp.token_logprobs[1:], ref[1:], atol=1e-4)
    assert lp.text_offset == [sum(map(len, tokens[:j])) for j in range(len(tokens))]
    assert r.usage.completion_tokens == 0 and r.usage.prompt_tokens == len(tokens)


def test_generated_logprobs_and_offsets(client):
    r = client.completions.create(model="tiny", prompt="the cat", max_tokens=4, logprobs=2,
                                  temperature=0)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == 4 and "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset[0] == len("the cat")
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert value <= 0 and token in top and max(top.values()) == pytest.approx(value)


def test_chat_and_chat_logprobs(client):
    r = client.chat.completions.create(model="tiny", messages=[
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        max_completion_tokens=5, temperature=0, logprobs=True, top_logprobs=3)
    c = r.choices[0]
    assert c.message.role == "assistant" and r.object == "chat.completion"
    assert r.usage.completion_tokens == 5 and len(c.logprobs.content) == 5
    for t in c.logprobs.content:  # tokens that decode alike (half characters) share one entry
        values = [x.logprob for x in t.top_logprobs]
        assert 1 <= len(values) <= 3 and values == sorted(values, reverse=True)
        assert t.logprob <= values[0] + 1e-6
    assert "".join(t.token for t in c.logprobs.content) == c.message.content


def test_streaming_completion_equals_the_whole_answer(client):
    whole = client.completions.create(model="tiny", prompt="the cat", max_tokens=8,
                                      temperature=0)
    chunks = list(client.completions.create(model="tiny", prompt="the cat", max_tokens=8,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == \
        whole.choices[0].finish_reason
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_chat(client):
    kw = dict(model="tiny", messages=[{"role": "user", "content": "the cat"}], max_tokens=6,
              temperature=0)
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_stream_ends_with_done(server):
    req = urllib.request.Request(server.url + "/completions", data=json.dumps(
        {"model": "tiny", "prompt": "the cat", "max_tokens": 3, "stream": True}).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    body = urllib.request.urlopen(req, timeout=30).read().decode()
    events = [e for e in body.split("\n\n") if e]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)


@pytest.mark.parametrize("name,model", [("sentiment", "sentiment@production"),
                                        ("sentiment-lora", "sentiment-lora"),
                                        ("sentiment-soft", "sentiment-soft:1")])
def test_classification_adapter_answers_tailor_evals_label(client, adapter_folders, name,
                                                           model):
    for text in (SENT, "boring and dull"):
        label, raw = eval_reference(adapter_folders[name], text)
        r = client.completions.create(model=model, prompt=text)
        c = r.choices[0]
        assert c.text == label and c.finish_reason == "stop"
        got = c.logprobs.top_logprobs[0]
        assert set(got) == set(raw)
        for lab in raw:
            assert got[lab] == pytest.approx(raw[lab], abs=1e-4)
        assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
        chat = client.chat.completions.create(model=model, messages=[
            {"role": "system", "content": "ignored"}, {"role": "user", "content": text}])
        assert chat.choices[0].message.content == label
        tops = {t.token: t.logprob for t in chat.choices[0].logprobs.content[0].top_logprobs}
        assert tops == pytest.approx(got, abs=1e-9)


def test_calibrated_version_labels_by_adjusted_scores(client, adapter_folders):
    label, _ = eval_reference(adapter_folders["sentiment-v2"], SENT)
    assert client.completions.create(model="sentiment@staging", prompt=SENT).choices[0].text \
        == label


def test_generation_adapters_decode_their_rendered_input(client):
    for model in ("echo-gen", "echo-prefix@production"):
        a = client.completions.create(model=model, prompt="the cat", max_tokens=5, temperature=0)
        b = client.chat.completions.create(model=model, messages=[
            {"role": "user", "content": "the cat"}], max_tokens=5, temperature=0)
        assert a.choices[0].text == b.choices[0].message.content
        assert "\n" not in a.choices[0].text  # the adapter's own stop string
        assert a.usage.prompt_tokens > len(tiny_backend().encode("the cat"))  # its template


def test_models_list_names_the_base_and_every_reference(client):
    models = {m.id: m for m in client.models.list().data}
    assert models["tiny"].model_extra["kind"] == "generation"
    for ref in ("sentiment", "sentiment:1", "sentiment:2", "sentiment@production",
                "sentiment@staging", "sentiment-lora@production", "echo-prefix"):
        assert models[ref].model_extra["parent"] == "tiny" and models[ref].owned_by
    assert models["sentiment"].model_extra["root"] == "sentiment:2"
    assert models["sentiment@production"].model_extra["labels"] == ["negative", "positive"]
    assert client.models.retrieve("sentiment@staging").id == "sentiment@staging"


def test_key_is_needed_everywhere_but_health(server):
    bad = openai.OpenAI(base_url=server.url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.completions.create(model="tiny", prompt="x")
    assert e.value.body["code"] == "invalid_api_key"
    # every route the app has, and one it does not, refuse without the key
    app = server.app.fastapi
    paths = {r.path.replace("{model_id}", "tiny") for r in app.routes} | {"/nope"}
    for path in sorted(paths):
        req = urllib.request.Request(server.base + path, method="GET")
        try:
            status = urllib.request.urlopen(req, timeout=10).status
        except urllib.error.HTTPError as err:
            status = err.code
            if status == 401:
                assert json.loads(err.read())["error"]["code"] == "invalid_api_key"
        assert status == (200 if path == "/health" else 401), path


def test_metrics_count_requests_by_adapter(server, client):
    client.completions.create(model="sentiment-lora", prompt=SENT)
    req = urllib.request.Request(server.base + "/metrics",
                                 headers={"Authorization": f"Bearer {KEY}"})
    text = urllib.request.urlopen(req, timeout=10).read().decode()
    assert 'tailor_requests_total{adapter="sentiment-lora:1",route="completions",status="200"}' \
        in text
    for name in ("tailor_request_seconds_bucket", "tailor_batch_rows_bucket",
                 "tailor_queue_depth", "tailor_resident_adapters", "tailor_resident_bytes",
                 "tailor_time_to_first_token_seconds"):
        assert name in text
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values["tailor_resident_bytes"] > 0 and values["tailor_resident_adapters"] >= 1


def test_stop_strings_cut_whole_and_streamed_answers_alike(client):
    kw = dict(model="tiny", prompt="the cat", max_tokens=20, temperature=0)
    full = client.completions.create(**kw).choices[0].text
    assert len(full) > 6
    stop = full[3:6]  # a string the answer holds: the answer ends before it
    whole = client.completions.create(**kw, stop=[stop, "never appears"])
    assert whole.choices[0].text == full[:full.index(stop)]
    assert whole.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        **kw, stop=[stop, "never appears"], stream=True) if c.choices)
    assert streamed == whole.choices[0].text


def test_many_prompts_and_n_index_their_choices(client):
    kw = dict(model="tiny", max_tokens=4, temperature=1.0, seed=3)
    r = client.completions.create(prompt=["the cat", "a dog"], n=2, **kw)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    for p, prompt in enumerate(["the cat", "a dog"]):
        alone = client.completions.create(prompt=prompt, n=2, **kw)
        assert [c.text for c in r.choices[2 * p:2 * p + 2]] == [c.text for c in alone.choices]
    stream = list(client.completions.create(prompt="the cat", n=2, stream=True, **kw))
    texts = {i: "".join(c.choices[0].text for c in stream if c.choices and
                        c.choices[0].index == i) for i in (0, 1)}
    alone = client.completions.create(prompt="the cat", n=2, **kw)
    assert [texts[0], texts[1]] == [c.text for c in alone.choices]
    labels = client.completions.create(model="sentiment", prompt=["a great film", "I hated it"],
                                       n=2)
    assert [c.index for c in labels.choices] == [0, 1, 2, 3]
    assert labels.choices[0].text == labels.choices[1].text


def test_streamed_classification_sends_the_label(client):
    whole = client.chat.completions.create(model="sentiment-lora", messages=[
        {"role": "user", "content": "a great film"}])
    chunks = list(client.chat.completions.create(model="sentiment-lora", messages=[
        {"role": "user", "content": "a great film"}], stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and chunks[-1].usage == whole.usage

"""Adapters come and go without a restart: alias moves, the LRU cap, leases, --adapter folders."""

from __future__ import annotations

import threading
import time

import openai
import pytest

from serve.conftest import KEY, make_app
from serve.live import LiveServer


@pytest.fixture
def own_registry(tmp_path, adapter_folders):
    """A registry of its own (the tests move its aliases): `x` v1 = prompt_template,
    v2 = lora, production -> 1; `g` v1 = echo-gen, v2 = echo-prefix, production -> 1."""
    from tailorlm.registry import Registry

    root = tmp_path / "registry"
    with Registry(root) as reg:
        reg.push(adapter_folders["sentiment"], "x", alias="production")
        reg.push(adapter_folders["sentiment-lora"], "x")
        reg.push(adapter_folders["echo-gen"], "g", alias="production")
        reg.push(adapter_folders["echo-prefix"], "g")
    return root


def served(client, model, prompt="a great film", **kw):
    raw = client.completions.with_raw_response.create(model=model, prompt=prompt, **kw)
    return raw.headers["x-tailor-served"], raw.parse()


def test_alias_move_is_served_within_a_second(own_registry):
    from tailorlm.registry import Registry

    with LiveServer(make_app(own_registry)) as s:
        client = openai.OpenAI(base_url=s.url, api_key=KEY, max_retries=0)
        version, before = served(client, "x@production")
        assert version == "x:1"
        served(client, "x:2")  # resident already: the test times the alias, not a load
        with Registry(own_registry) as reg:
            reg.alias("x", "production", 2, expect=1)
        moved = time.monotonic()
        while True:
            version, after = served(client, "x@production")
            if version == "x:2":
                break
            assert time.monotonic() - moved < 1.0, "the moved alias was not served within 1 s"
            time.sleep(0.05)
        assert time.monotonic() - moved < 1.0
        # the same answer as naming the version itself
        _, direct = served(client, "x:2")
        assert after.choices[0].logprobs.top_logprobs == direct.choices[0].logprobs.top_logprobs
        assert before.choices[0].logprobs.top_logprobs != direct.choices[0].logprobs.top_logprobs


def test_a_running_request_finishes_on_the_version_it_started_with(own_registry):
    from tailorlm.registry import Registry

    with LiveServer(make_app(own_registry)) as s:
        client = openai.OpenAI(base_url=s.url, api_key=KEY, max_retries=0)
        kw = dict(prompt="the cat", max_tokens=40, temperature=0)
        _, v1 = served(client, "g:1", **kw)
        stream = client.completions.create(model="g@production", stream=True, **kw)
        pieces = [next(stream)]
        with Registry(own_registry) as reg:
            reg.alias("g", "production", 2)
        time.sleep(0.6)  # past the lookup's lifetime
        pieces += list(stream)
        text = "".join(c.choices[0].text for c in pieces if c.choices)
        assert text == v1.choices[0].text
        assert served(client, "g@production", **kw)[0] == "g:2"


def resident_sizes(registry_root, names) -> dict[str, int]:
    """Each adapter's resident bytes (Served.nbytes: its weights and the key/value caches its
    first request fills) as the engine counts them, measured on a server with room for all."""
    app = make_app(registry_root)
    with LiveServer(app) as s:
        client = openai.OpenAI(base_url=s.url, api_key=KEY, max_retries=0)
        for name in names:
            served(client, name)
        return {e.served.name.split(":")[0]: e.served.nbytes
                for e in app.tailor.cache._entries.values()}


def test_lru_keeps_resident_adapters_under_the_cap(registry_root, adapter_folders):
    sizes = resident_sizes(registry_root, ("sentiment-lora", "sentiment-soft"))
    assert sorted(sizes) == ["sentiment-lora", "sentiment-soft"] and all(sizes.values())
    cap_mb = (max(sizes.values()) + min(sizes.values()) / 2) / 1e6  # room for one, not both
    app = make_app(registry_root, max_resident_mb=cap_mb)
    cache = app.tailor.cache
    with LiveServer(app) as s:
        client = openai.OpenAI(base_url=s.url, api_key=KEY, max_retries=0)
        first = served(client, "sentiment-lora")[1]
        assert cache.resident == ["sentiment-lora:1"]
        served(client, "sentiment-soft")
        assert cache.resident == ["sentiment-soft:1"]  # the least recently used went
        assert cache.resident_bytes <= cap_mb * 1e6
        again = served(client, "sentiment-lora")[1]  # loaded again, the same answer
        assert again.choices[0].logprobs.top_logprobs == first.choices[0].logprobs.top_logprobs
        assert cache.resident == ["sentiment-lora:1"]


def test_leased_adapters_are_not_evicted_mid_request(registry_root):
    app = make_app(registry_root, max_resident_mb=1e-6)  # nothing fits: all evicted when free
    cache = app.tailor.cache
    with LiveServer(app) as s:
        client = openai.OpenAI(base_url=s.url, api_key=KEY, max_retries=0)
        stream = client.completions.create(model="echo-prefix", prompt="the cat", max_tokens=30,
                                           temperature=0, stream=True)
        next(stream)
        assert "echo-prefix:1" in cache.resident  # over the cap, but leased
        list(stream)
        served(client, "sentiment-soft")  # a free adapter is evicted as soon as it is free
        deadline = time.time() + 5
        while cache.resident and time.time() < deadline:
            time.sleep(0.05)
        assert cache.resident == []


def test_adapter_folders_given_at_start(registry_root, adapter_folders):
    app = make_app(None, adapters={"router": adapter_folders["sentiment-lora"]})
    with LiveServer(app) as s:
        client = openai.OpenAI(base_url=s.url, api_key=KEY, max_retries=0)
        version, r = served(client, "router")
        assert version == "router" and r.choices[0].text in ("positive", "negative")
        assert {m.id for m in client.models.list().data} == {"tiny", "router"}
        with pytest.raises(openai.NotFoundError):  # no registry: references are unknown
            client.completions.create(model="sentiment", prompt="x")


def test_concurrent_first_requests_load_an_adapter_once(registry_root):
    app = make_app(registry_root)
    loads = []
    engine = app.tailor.cache.engine
    real = engine.load
    engine.load = lambda *a: loads.append(a) or real(*a)
    with LiveServer(app) as s:
        client = openai.OpenAI(base_url=s.url, api_key=KEY, max_retries=0)
        threads = [threading.Thread(target=served, args=(client, "sentiment-soft"))
                   for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert len(loads) == 1


def test_damaged_adapters_fail_alone_and_good_traffic_goes_on(tmp_path, adapter_folders):
    import shutil

    bad_json = tmp_path / "bad-json"
    bad_json.mkdir()
    (bad_json / "adapter.json").write_text("{")
    bad_weights = tmp_path / "bad-weights"
    shutil.copytree(adapter_folders["sentiment-lora"], bad_weights)
    for f in bad_weights.rglob("*.safetensors"):
        f.write_bytes(b"not a safetensors file")
    app = make_app(None, adapters={"good": adapter_folders["sentiment-soft"],
                                   "bad-json": bad_json, "bad-weights": bad_weights})
    with LiveServer(app) as s:
        client = openai.OpenAI(base_url=s.url, api_key=KEY, max_retries=0)
        first = served(client, "good")[1].choices[0].text
        for _ in range(5):
            for name in ("bad-json", "bad-weights"):
                with pytest.raises(openai.UnprocessableEntityError) as e:
                    client.completions.create(model=name, prompt="a great film")
                assert e.value.body["code"] == "unsupported_for_model"
            assert served(client, "good")[1].choices[0].text == first

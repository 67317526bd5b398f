"""Serve-test fixtures: tiny adapters of four kinds in a temp registry, and a live server.

Adapters are fitted once per session on the tiny model (tests/helpers.py `tiny_backend`, the
same weights the server loads, so the cards' base sha256 match):

    sentiment        prompt_template, classification   (two versions: alias `production` on 1)
    sentiment-lora   lora r=1, classification
    sentiment-soft   soft_prompt, classification
    echo-gen         prompt_template, generation (input_output template)
    echo-prefix      prefix, generation
"""

from __future__ import annotations

import pytest

from helpers import sentiment_task, tiny_backend
from registry.adapters import fit_folder
from tailorlm.data.task import Example, Task

KEY = "test-key-123"


def generation_task() -> Task:
    rows = [("the cat", "sat on the mat"), ("a dog", "ran in the park"),
            ("a great film", "I loved it"), ("a bad film", "I hated it")]
    return Task(name="tiny-gen", kind="generation",
                examples=[Example(input=a, target=b, references=(b,)) for a, b in rows])


@pytest.fixture(scope="session")
def adapter_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_adapters")
    backend = tiny_backend()
    task = sentiment_task(4)
    gen = generation_task()
    return {
        "sentiment": fit_folder("prompt_template", root / "pt", backend, task=task),
        "sentiment-v2": fit_folder("prompt_template", root / "pt2", backend, task=task,
                                   calibrate="on"),
        "sentiment-lora": fit_folder("lora", root / "lora", backend, task=task),
        "sentiment-soft": fit_folder("soft_prompt", root / "soft", backend, task=task),
        "echo-gen": fit_folder("prompt_template", root / "gen", backend, task=gen,
                               template="input_output"),
        "echo-prefix": fit_folder("prefix", root / "prefix", backend, task=gen,
                                  template="input_output"),
    }


@pytest.fixture(scope="session")
def registry_root(tmp_path_factory, adapter_folders):
    from tailorlm.registry import Registry

    root = tmp_path_factory.mktemp("serve_registry")
    with Registry(root) as reg:
        reg.push(adapter_folders["sentiment"], "sentiment", alias="production")
        reg.push(adapter_folders["sentiment-v2"], "sentiment", alias="staging")
        for name in ("sentiment-lora", "sentiment-soft", "echo-gen", "echo-prefix"):
            reg.push(adapter_folders[name], name, alias="production")
    return root


def make_app(registry_root, key=KEY, adapters=None, **limits):
    from tailorlm.serve.app import create_app
    from tailorlm.serve.config import ServeConfig

    return create_app(tiny_backend(), base_name="tiny", config=ServeConfig(**limits),
                      registry_root=registry_root, adapters=adapters, api_key=key)


@pytest.fixture(scope="module")
def server(registry_root):
    from serve.live import LiveServer

    with LiveServer(make_app(registry_root)) as s:
        yield s


@pytest.fixture
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=60)

"""The one adapter card (CARD.md): build_card's schema, parts' cards, and older cards read."""

import json

from helpers import sentiment_task, tiny_backend
from tailorlm import __version__
from tailorlm.methods.artifact import build_card, card_base_model, load_card, save_adapter
from tailorlm.methods.prompt_adapter import PromptAdapter
from tailorlm.methods.templates import CLASSIFICATION

KEYS = {"format_version", "method", "config", "task", "base_model", "data", "metrics", "costs",
        "recipe", "tailorlm_version", "created"}


class Config:
    def to_dict(self):
        return {"template": "text_label"}


def adapter(task):
    a = PromptAdapter("prompt_template", None, task.with_examples([]),
                      CLASSIFICATION["text_label"])
    a.config = Config()
    return a


def test_build_card_is_the_agreed_schema(tmp_path):
    backend = tiny_backend()
    backend.variant = "GGUF Q4_1 dequantized to float32"
    task = sentiment_task(3)
    train, test = task.with_examples(task.examples[:4]), task.with_examples(task.examples[4:])
    a = adapter(task)
    card = build_card(a, backend, train, train=train, test=test, metrics={"accuracy": 0.5},
                      costs={"fit_seconds": 1.5}, seed=3, k=2, plan={"seeds": 1})
    folder = save_adapter(a, tmp_path / "a", card)
    saved = load_card(folder)
    assert set(saved) == KEYS  # no serving: a text prompt needs nothing to be served
    assert saved["format_version"] == 1 and saved["method"] == "prompt_template"
    assert saved["config"] == {"template": "text_label"} and saved["tailorlm_version"] == __version__
    assert saved["task"] == {"name": "tiny-sentiment", "kind": "classification",
                             "labels": ["negative", "positive"], "verbalizer": task.verbalizer,
                             "description": task.description}
    assert saved["base_model"] == {"name": "tiny", "identity": "test/tiny-llama",
                                   "sha256": "0" * 64,
                                   "variant": "GGUF Q4_1 dequantized to float32",
                                   "dtype": "float32", "source": "(memory)"}
    assert saved["data"] == {"train_sha256": train.fingerprint(), "val_sha256": None,
                             "test_sha256": test.fingerprint(), "n_train": 4, "n_val": 0,
                             "n_test": 2}
    assert saved["metrics"] == {"accuracy": 0.5} and saved["costs"] == {"fit_seconds": 1.5}
    assert saved["recipe"] == {"method": "prompt_template", "config": {"template": "text_label"},
                               "seed": 3, "k": 2, "plan": {"seeds": 1}}
    assert saved["created"].endswith("Z")
    assert json.loads((folder / "adapter.json").read_text())["method"] == "prompt_template"


def test_a_card_written_before_format_version_1_is_still_read():
    old = {"model": "smollm2-135m", "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
           "base_model_sha256": "ab" * 32, "base_model_source": "/x", "dtype": "float32"}
    assert card_base_model(old) == {"name": "smollm2-135m",
                                    "identity": "HuggingFaceTB/SmolLM2-135M-Instruct",
                                    "sha256": "ab" * 32, "dtype": "float32", "source": "/x",
                                    "variant": None}
    new = {"base_model": {"name": "m", "sha256": "c"}}
    assert card_base_model(new) is new["base_model"]

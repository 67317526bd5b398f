"""Tiny adapters of every kind, built from random state in milliseconds (no training), for the
mixed engine's tests: what matters there is that each kind computes what it computes alone."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from helpers import sentiment_task
from tailorlm.data.task import Example, Task
from tailorlm.methods import get_method
from tailorlm.methods.hybrid import HybridAdapter, hybrid_spec
from tailorlm.methods.prompt_adapter import PromptAdapter
from tailorlm.methods.templates import resolve

LORA_MODULES = ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]


def generation_task() -> Task:
    rows = [Example(input=t, target="ok") for t in ("the cat", "a dog ran", "great film")]
    return Task(name="tiny-gen", kind="generation", examples=rows)


def client_sentiment() -> Task:
    """sentiment_task with a `client` column (acme / globex / none) for hybrid variants."""
    task = sentiment_task(4)
    clients = ["acme", "globex", None]
    rows = [dataclasses.replace(e, extra={"client": clients[i % 3]} if clients[i % 3] else {})
            for i, e in enumerate(task.examples)]
    return task.with_examples(rows)


def prompt_adapter(task: Task, method: str = "prompt_template", **kw) -> PromptAdapter:
    cfg = get_method(method).config() if method != "instruction_search" else None
    return PromptAdapter(method, cfg, task.with_examples([]), resolve("default", task), **kw)


def soft_prompt(backend, task: Task, n: int, seed: int):
    """n vectors at the scale of the model's own embeddings."""
    from tailorlm.methods import soft_prompt as sp

    g = torch.Generator().manual_seed(seed)
    embed = backend.model.get_input_embeddings().weight
    vectors = torch.randn(n, embed.shape[1], generator=g) * float(embed.detach().std())
    return sp.SoftPromptAdapter(sp.NAME, sp.SoftPromptConfig(n_virtual=n), task.with_examples([]),
                                resolve("default", task), prompt_embeddings=vectors,
                                peft_config=sp.peft_config(backend, n))


def prefix(backend, task: Task, n: int, seed: int):
    from tailorlm.methods import prefix as pf
    from tailorlm.methods.virtual_prefix import model_dims

    d = model_dims(backend.model)
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(n, 2 * d["layers"] * d["kv_heads"] * d["head_dim"], generator=g)
    return pf.PrefixAdapter(pf.NAME, pf.PrefixConfig(n_virtual=n), task.with_examples([]),
                            resolve("default", task), prefix=values,
                            peft_config=pf.peft_config(backend, n))


def lora(backend, task: Task, r: int, seed: int, modules=LORA_MODULES, std: float = 0.3):
    from tailorlm.methods import lora as lo

    cfg = lo.LoraConfig(r=r, alpha=2 * r, target_modules=list(modules))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = lo.wrap(lo.frozen_view(backend.model), lo.peft_config(cfg, backend.identity))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, std)
    return lo.LoraAdapter(lo.NAME, cfg, task.with_examples([]), resolve("default", task),
                          identity=backend.identity, peft_model=model.eval(),
                          base_id=id(backend.model))


def full(backend, task: Task, seed: int):
    from tailorlm.methods import full as fu

    model = copy.deepcopy(backend.model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return fu.FullAdapter(fu.NAME, fu.FullConfig(), task.with_examples([]),
                          resolve("default", task), model=model.eval(),
                          tokenizer=backend.tokenizer)


def hybrid(backend, task: Task, seed: int):
    """lora+soft_prompt with a fallback soft prompt and one variant ("acme") of its own."""
    spec = hybrid_spec("lora+soft_prompt")
    cfg = spec.config.from_dict({"variant_field": "client"})
    report = {"weight": {"fit_seconds": 0.0}, "fallback": {"fit_seconds": 0.0},
              "variants": {"acme": {"fit_seconds": 0.0}}}
    return HybridAdapter(spec.name, cfg, lora(backend, task, 4, seed),
                         soft_prompt(backend, task, 3, seed + 1),
                         {"acme": soft_prompt(backend, task, 5, seed + 2)}, report)


def classifiers(backend, task: Task) -> dict:
    """One adapter of every kind for the classification task, by a name of its own."""
    template = resolve("default", task)
    instructed = dataclasses.replace(template, instruction="Decide the sentiment.")
    return {
        "prompt_template": prompt_adapter(task, bias=np.log(np.array([0.7, 0.3]))),
        "few_shot": prompt_adapter(task, "few_shot", demos=task.examples[:2]),
        "instruction_search": dataclasses.replace(prompt_adapter(task, "instruction_search"),
                                                  template=instructed),
        "soft_prompt": soft_prompt(backend, task, 4, 1),
        "prefix": prefix(backend, task, 3, 2),
        "lora": lora(backend, task, 4, 3),
        "lora_r8": lora(backend, task, 8, 4, modules=["q_proj", "k_proj", "gate_proj"]),
        "full": full(backend, task, 5),
        "lora+soft_prompt": hybrid(backend, task, 6),
    }

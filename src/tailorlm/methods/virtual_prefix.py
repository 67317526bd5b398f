"""What soft prompts and prefixes share: trained key/values that every prompt starts from.

Both methods put n virtual positions before any text and leave the base model untouched:

    soft_prompt   P (n, hidden) ─► frozen model ─► key/values per layer (1, kv_heads, n, head_dim)
    prefix        the key/values per layer are the parameters themselves

The engine starts every query from that cache (`Backend.virtual_prefix`, engine/scoring.py), and
the text that follows sits at positions n, n+1, ..., as if n real tokens came first. Training
builds the cache from the parameters with gradients, once per batch for one row, repeats it for
the batch's rows (a view of the same graph, so the gradient of every row reaches the parameters)
and asks `lm_loss.target_loss` for the loss on the targets after it.

Everything here but the loss is what a saved soft prompt or prefix needs to be loaded and used;
the loss imports its training code when it first runs, so loading one never imports training.
This module also holds what the two share on disk (PEFT's adapter folder: adapter_config.json and
adapter_model.safetensors with one tensor, `prompt_embeddings`; docs: shared/notes
peft-adapter-format.md 4.3) and how their initial values are chosen from real tokens.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from tailorlm.data.task import Task
from tailorlm.errors import TailorError
from tailorlm.methods.templates import Template
from tailorlm.models.backend import Backend

if TYPE_CHECKING:  # the training loop's batch; importing this module must not import the loop
    from tailorlm.engine.train import Batch

CONFIG_NAME = "adapter_config.json"  # PEFT's file names (peft.utils.constants)
WEIGHTS_NAME = "adapter_model.safetensors"
TENSOR_KEY = "prompt_embeddings"
INIT_MODES = ("labels", "text", "vocab")


def check_fields(n_virtual, init: str, init_text: str) -> None:
    """The validation soft_prompt and prefix share, with messages that say how to fix."""
    if not isinstance(n_virtual, int) or isinstance(n_virtual, bool) or n_virtual < 1:
        raise TailorError(f"n_virtual must be a whole number of at least 1 (the number of virtual "
                          f"tokens; 10-20 is a good start), not {n_virtual!r}")
    if init not in INIT_MODES:
        raise TailorError(f"init must be one of {', '.join(INIT_MODES)}, not {init!r}: 'labels' "
                          "starts from the label words, 'text' from init_text, 'vocab' from "
                          "random vocabulary tokens")
    if not isinstance(init_text, str):
        raise TailorError(f"init_text must be a string, not {init_text!r}")
    if init == "text" and not init_text.strip():
        raise TailorError("init: text needs init_text, the words the virtual tokens start as "
                          "(e.g. init_text: 'Classify the sentiment of this review'); or use "
                          "init: labels")


def init_token_ids(backend: Backend, task: Task, template: Template, init: str, init_text: str,
                   n: int, seed: int) -> list[int]:
    """n real token ids whose embeddings (or key/values) the virtual tokens start from.

    labels: the label verbalizations' tokens as the template writes them (" positive"), in label
            order, cycled to length n (Lester et al. 2021: class-label init beats random);
    text:   init_text's tokens, repeated and cut to length n (PEFT's TEXT init);
    vocab:  n tokens drawn uniformly from the vocabulary without special tokens, seeded.
    A task with no labels (generation) falls back from labels to vocab.
    """
    ids: list[int] = []
    if init == "labels":
        for words in template.continuations(task):
            ids += backend.encode(words)
    elif init == "text":
        ids = backend.encode(init_text)
    if ids:
        return [ids[i % len(ids)] for i in range(n)]
    vocab = backend.model.get_input_embeddings().weight.shape[0]
    special = set(getattr(backend.tokenizer, "all_special_ids", []) or [])
    allowed = torch.tensor([i for i in range(min(vocab, len(backend.tokenizer)))
                            if i not in special])
    g = torch.Generator().manual_seed(seed)
    return allowed[torch.randint(len(allowed), (n,), generator=g)].tolist()


@torch.no_grad()
def token_embeddings(model, ids: list[int]) -> torch.Tensor:
    """(n, hidden) float32: the rows the model's own embedding layer gives these ids (with any
    scaling the layer applies, e.g. Gemma's sqrt(hidden))."""
    embed = model.get_input_embeddings()
    return embed(torch.tensor(ids, device=embed.weight.device)).float().clone()


def model_dims(model) -> dict:
    """The shapes the virtual prefix needs: layers, heads, key/value heads, head and hidden size."""
    c = model.config.get_text_config(decoder=True)
    heads = c.num_attention_heads
    return {"layers": c.num_hidden_layers, "heads": heads,
            "kv_heads": getattr(c, "num_key_value_heads", None) or heads,
            "head_dim": getattr(c, "head_dim", None) or c.hidden_size // heads,
            "hidden": c.hidden_size}


@contextmanager
def frozen(model):
    """The base model with requires_grad off on every parameter, restored as it was on exit.

    The gradient still flows through the frozen model to the virtual tokens; only the optimizer
    never sees (and autograd never stores a .grad for) the base weights.
    """
    before = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in before:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in before:
            p.requires_grad_(flag)


def loss_after_prefix(model, cache, n_virtual: int, batch: Batch) -> tuple[torch.Tensor, int]:
    """Target loss of a right-padded batch that continues a one-row virtual cache.

    The cache is repeated for the batch's B rows in place (repeat_interleave keeps its graph), the
    mask covers the n virtual positions and the batch, and the batch's tokens sit at n, n+1, ...
    """
    from tailorlm.engine.lm_loss import target_loss  # training only: loading never needs it

    B, T = batch.input_ids.shape
    cache.batch_repeat_interleave(B)
    device = batch.input_ids.device
    mask = torch.cat([torch.ones((B, n_virtual), dtype=batch.attention_mask.dtype, device=device),
                      batch.attention_mask], dim=1)  # (B, n + T)
    positions = torch.arange(n_virtual, n_virtual + T, device=device)[None].expand(B, T)
    return target_loss(model, batch.input_ids, mask, batch.target_mask, position_ids=positions,
                       cache=cache)


def write_peft(directory, peft_config, tensor: torch.Tensor) -> None:
    """PEFT's adapter folder: the config as PEFT writes it, and the one tensor (metadata pt)."""
    directory = Path(directory)
    peft_config.save_pretrained(str(directory))
    save_file({TENSOR_KEY: tensor.detach().float().contiguous().cpu()},
              str(directory / WEIGHTS_NAME), metadata={"format": "pt"})


def read_peft(directory, peft_type: str) -> tuple[dict, torch.Tensor]:
    """(adapter_config dict, prompt_embeddings) from a PEFT folder; safetensors only."""
    directory = Path(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        other = [p.name for p in directory.glob("adapter_model.*")]
        hint = (f" ({', '.join(other)} is a pickle: tailorlm reads safetensors only; convert it "
                f"with PEFT's save_pretrained(safe_serialization=True))" if other else "")
        raise TailorError(f"{directory} has no {WEIGHTS_NAME}{hint}; re-create the adapter")
    try:
        config = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
        tensor = load_file(str(weights))[TENSOR_KEY]
    except (OSError, ValueError, KeyError) as e:
        raise TailorError(f"{directory} is a damaged adapter folder ({e}); re-create the adapter")
    if config.get("peft_type") != peft_type:
        raise TailorError(f"{directory / CONFIG_NAME} holds a {config.get('peft_type')} adapter, "
                          f"not {peft_type}; load it with its own method")
    return config, tensor

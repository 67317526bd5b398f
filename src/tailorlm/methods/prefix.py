"""prefix: prefix tuning (Li & Liang 2021) / P-tuning v2 (Liu et al. 2022): trained key/values
in every layer, which every token attends to as if n tokens came before the text.

    layer l attention:  softmax(q [K_l ; k]^T / sqrt(d)) [V_l ; v]
                        K_l, V_l: (kv_heads, n, head_dim), trained; k, v: the text's own

Soft prompts train only the input of layer 0; a prefix trains what every layer reads, so it steers
more with as few positions (n_virtual 10 by default). The model's weights do not change.
`reparameterize` trains them through PEFT's `prefix_projection` MLP (Li & Liang: steadier):

    E (n, hidden) ─► Linear(hidden, hidden) ─► tanh ─► Linear(hidden, layers*2*kv_heads*head_dim)

Only its output is kept: after training the prefix is one tensor either way. The start is real
tokens' key/values (the label words by default; Li & Liang: better than random with little data),
or, reparameterized, their embeddings as E.

Saved in PEFT's format: PREFIX_TUNING, `prompt_embeddings` (n, layers * 2 * kv_heads * head_dim),
per token [layer 0 keys, layer 0 values, layer 1 keys, ...], each kv_heads x head_dim. For
grouped-query attention PEFT's config says token_dim = kv_heads * head_dim and num_attention_heads =
kv_heads (peft.utils.other._prepare_prompt_learning_config), and the text after the prefix gets
positions n, n+1, ...; this module builds the same cache, so PEFT's logits equal ours. Written
with prefix_projection false, since the file holds the projected prefix: PEFT loads it for
inference or further training alike. vLLM and LoRAX cannot serve prefixes (shared/notes 4.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from tailorlm.data.task import Task
from tailorlm.errors import TailorError
from tailorlm.methods import virtual_prefix as vp
from tailorlm.methods.contract import MethodSpec
from tailorlm.methods.index import register
from tailorlm.methods.templates import Template, resolve
from tailorlm.methods.tuned import TrainFields, TunedAdapter
from tailorlm.models.backend import Backend

NAME = "prefix"


@dataclass
class PrefixConfig(TrainFields):
    # Far above fine-tuning rates, as for a soft prompt (free values, frozen model), but not tuned
    # here: a third of soft_prompt's 3e-2, since attention reads these values directly rather
    # than through a normalisation and a projection, so the same step moves the output more.
    lr: float = 1e-2
    min_epochs: int = 5  # free vectors learn slowly: no fit shorter than this (TrainFields)
    n_virtual: int = 10  # virtual positions in every layer
    reparameterize: bool = False  # train through an MLP (PEFT's prefix_projection)
    init: str = "labels"  # labels | text | vocab: which real tokens' key/values start the prefix
    init_text: str = ""  # for init: text

    def validate(self) -> None:
        super().validate()
        vp.check_fields(self.n_virtual, self.init, self.init_text)
        if not isinstance(self.reparameterize, bool):
            raise TailorError(f"reparameterize must be true or false, not {self.reparameterize!r}")


def prefix_cache(model, flat: torch.Tensor) -> DynamicCache:
    """The one-row cache PEFT builds from `prompt_embeddings` (n, layers*2*kv_heads*head_dim).

    Per layer l: keys = flat[:, 2l], values = flat[:, 2l+1], each (1, kv_heads, n, head_dim),
    as peft_model.get_prompt's view + permute([2, 0, 3, 1, 4]) + split lays them out.
    Differentiable: training builds it from the parameters.
    """
    d = vp.model_dims(model)
    n = flat.shape[0]
    kv = flat.view(n, 2 * d["layers"], d["kv_heads"], d["head_dim"]).permute(1, 2, 0, 3)
    kv = kv.to(model.get_input_embeddings().weight.dtype)[:, None]  # (2L, 1, kv_heads, n, hd)
    return DynamicCache([(kv[2 * i], kv[2 * i + 1]) for i in range(d["layers"])],
                        config=model.config)


@torch.no_grad()
def flatten_cache(model, cache) -> torch.Tensor:
    """The inverse of `prefix_cache` for one row: (n, layers*2*kv_heads*head_dim) float32."""
    parts = []
    for layer in cache.layers:
        parts += [layer.keys[0].permute(1, 0, 2), layer.values[0].permute(1, 0, 2)]  # (n, kvh, hd)
    n = parts[0].shape[0]
    return torch.stack(parts, dim=1).reshape(n, -1).float().clone()


class PrefixEncoder(torch.nn.Module):
    """The trained weights: the prefix itself, or (reparameterized) an embedding and its MLP."""

    def __init__(self, start: torch.Tensor, out_dim: int = 0):
        super().__init__()
        # (n, out): the prefix itself; or, with out_dim, (n, hidden) embeddings for the MLP
        self.embedding = torch.nn.Parameter(start.float().clone())
        self.transform = None
        if out_dim:
            hidden = start.shape[1]
            self.transform = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.Tanh(),
                                                 torch.nn.Linear(hidden, out_dim))

    def forward(self) -> torch.Tensor:  # (n, layers*2*kv_heads*head_dim)
        if self.transform is None:
            return self.embedding
        return self.transform(self.embedding)


class PrefixTrainable:
    """What engine.train updates: the encoder's weights, in front of the frozen model."""

    def __init__(self, model, encoder: PrefixEncoder):
        self.model, self.encoder = model, encoder

    def parameters(self):
        return list(self.encoder.parameters())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.encoder.state_dict().items()}

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        self.encoder.load_state_dict(sd)

    def train(self, mode: bool) -> None:
        self.encoder.train(mode)

    def loss(self, batch):
        flat = self.encoder()
        return vp.loss_after_prefix(self.model, prefix_cache(self.model, flat), flat.shape[0],
                                    batch)


@dataclass
class PrefixAdapter(TunedAdapter):
    prefix: torch.Tensor | None = None  # (n_virtual, layers*2*kv_heads*head_dim) float32
    peft_config: dict = field(default_factory=dict)  # adapter_config.json, as PEFT writes it
    trained_params: int = 0  # what the optimizer updated: more than the prefix when reparameterized

    def bind(self, backend: Backend) -> Backend:
        d = vp.model_dims(backend.model)
        want = 2 * d["layers"] * d["kv_heads"] * d["head_dim"]
        if self.prefix.shape[1] != want:
            base = self.peft_config.get("base_model_name_or_path")
            raise TailorError(f"this prefix was trained on {base} ({self.prefix.shape[1]} values "
                              f"per position), not on {backend.identity} ({want}); use it with "
                              f"its own base model")
        flat = self.prefix.to(backend.device)
        return backend.with_virtual_prefix(
            lambda: (prefix_cache(backend.model, flat), flat.shape[0]))

    @property
    def trainable_params(self) -> int:
        return self.trained_params or self.prefix.numel()

    def save_files(self, directory) -> None:
        from peft import PrefixTuningConfig  # slow to import; only saving needs it

        vp.write_peft(directory, PrefixTuningConfig(**self.peft_config), self.prefix)

    def state(self) -> dict:
        return {**self.task_state(), "trained_params": self.trainable_params}


def peft_config(backend: Backend, n_virtual: int) -> dict:
    """PEFT's PrefixTuningConfig fields for this model, with grouped-query attention's sizes."""
    d = vp.model_dims(backend.model)
    kv_dim = d["kv_heads"] * d["head_dim"]
    return {"task_type": "CAUSAL_LM", "num_virtual_tokens": n_virtual, "token_dim": kv_dim,
            "num_layers": d["layers"], "num_attention_heads": d["kv_heads"],
            "num_transformer_submodules": 1, "encoder_hidden_size": kv_dim,
            "prefix_projection": False, "base_model_name_or_path": backend.identity,
            "inference_mode": True}


@torch.no_grad()
def initial_encoder(backend: Backend, task: Task, config: PrefixConfig, seed: int,
                    template: Template | None = None) -> PrefixEncoder:
    model = backend.model
    template = template or resolve(config.template if config.template != "auto" else "default",
                                   task)
    ids = vp.init_token_ids(backend, task, template, config.init, config.init_text,
                            config.n_virtual, seed)
    if config.reparameterize:
        d = vp.model_dims(model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the MLP's initial weights
            encoder = PrefixEncoder(vp.token_embeddings(model, ids),
                                    out_dim=2 * d["layers"] * d["kv_heads"] * d["head_dim"])
    else:  # the key/values the model computes for the tokens at positions 0..n-1
        out = model.get_decoder()(input_ids=torch.tensor([ids], device=backend.device),
                                  use_cache=True)
        encoder = PrefixEncoder(flatten_cache(model, out.cache))
    return encoder.to(backend.device)


def fit(backend: Backend, train: Task, val: Task | None, config: PrefixConfig, *,
        seed: int = 0, work_dir=None, resume: bool = False,
        metric: str | None = None) -> PrefixAdapter:
    # fitting code (it imports the training loop): only a fit imports it, never a load or bind
    from tailorlm.methods.trainable import choose_template, fit_trainable

    template = choose_template(backend, config, train, val, seed, metric).template
    saved = peft_config(backend, config.n_virtual)
    task = train.with_examples([])

    def start():
        encoder = initial_encoder(backend, train, config, seed, template)
        n_trained = sum(p.numel() for p in encoder.parameters())

        def to_adapter(template) -> PrefixAdapter:
            with torch.no_grad():
                flat = encoder().detach().float().clone()
            return PrefixAdapter(NAME, config, task, template, prefix=flat, peft_config=saved,
                                 trained_params=n_trained)

        return PrefixTrainable(backend.model, encoder), to_adapter

    with vp.frozen(backend.model):
        adapter, _ = fit_trainable(backend, train, val, config, start, seed=seed,
                                   work_dir=work_dir, resume=resume, metric=metric)
    return adapter


def from_state(config: PrefixConfig, state: dict, directory) -> PrefixAdapter:
    saved, tensor = vp.read_peft(directory, "PREFIX_TUNING")
    layers, token_dim = saved.get("num_layers"), saved.get("token_dim")
    if (not isinstance(layers, int) or not isinstance(token_dim, int)
            or tuple(tensor.shape) != (config.n_virtual, layers * 2 * token_dim)):
        raise TailorError(f"{directory}: prompt_embeddings has shape {tuple(tensor.shape)}, "
                          f"expected ({config.n_virtual}, num_layers * 2 * token_dim) from "
                          f"adapter_config.json; re-create the adapter")
    task, template, train_result = TunedAdapter.parts_from_state(state)
    keep = ("task_type", "num_virtual_tokens", "token_dim", "num_layers", "num_attention_heads",
            "num_transformer_submodules", "encoder_hidden_size", "prefix_projection",
            "base_model_name_or_path", "inference_mode")
    return PrefixAdapter(NAME, config, task, template, train_result, prefix=tensor.float(),
                         peft_config={k: saved[k] for k in keep if k in saved},
                         trained_params=int(state.get("trained_params", 0)))


register(MethodSpec(NAME, PrefixConfig, fit, from_state, family="soft prompt",
                      train_cost=3.0))

"""soft_prompt: prompt tuning (Lester et al. 2021, "The Power of Scale for Parameter-Efficient
Prompt Tuning"): n trained vectors that a model, itself unchanged, reads before the text.

    input embeddings:  [P_1 ... P_n][e(x_1) ... e(x_T)]     P: (n, hidden), the only weights trained
    loss:              -log p(y | P, x)  on the target tokens y (methods/trainable.py)

The vectors live in the input-embedding space, so they can start as real tokens' embeddings: the
label words by default ("labels", which Lester et al. found best), your `init_text`, or random
vocabulary tokens. Since P is fixed after training, its key/values are computed once and every
query continues from them (the engine's virtual prefix): a 20-token soft prompt costs a 20-token
forward per evaluation, not 20 more tokens per query.

Saved in PEFT's format (PROMPT_TUNING, tensor `prompt_embeddings` (n, hidden)), which PEFT loads
with `PeftModel.from_pretrained`; vLLM serves it only as `prompt_embeds` (shared/notes 4.6).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tailorlm.data.task import Task
from tailorlm.errors import TailorError
from tailorlm.methods import virtual_prefix as vp
from tailorlm.methods.contract import MethodSpec
from tailorlm.methods.index import register
from tailorlm.methods.templates import Template, resolve
from tailorlm.methods.tuned import TrainFields, TunedAdapter
from tailorlm.models.backend import Backend

NAME = "soft_prompt"


@dataclass
class SoftPromptConfig(TrainFields):
    # Far above fine-tuning rates: a few thousand free vectors, no pretrained weights to damage,
    # and small gradients after a whole frozen model. Lester et al. used 0.3 with Adafactor;
    # 3e-2 is what PEFT's prompt-tuning examples use with AdamW.
    lr: float = 3e-2
    min_epochs: int = 5  # free vectors learn slowly: no fit shorter than this (TrainFields)
    n_virtual: int = 20  # virtual tokens: more = more capacity and a longer prefix per query
    init: str = "labels"  # labels | text | vocab: which real tokens' embeddings P starts as
    init_text: str = ""  # for init: text, e.g. "Classify the sentiment of this movie review"

    def validate(self) -> None:
        super().validate()
        vp.check_fields(self.n_virtual, self.init, self.init_text)


def virtual_cache(model, prompt: torch.Tensor):
    """(cache, n): the key/values of the n vectors read at positions 0..n-1, for one row.

    Runs the decoder only (no LM head); with gradients when called with them (training).
    """
    n = prompt.shape[0]
    dtype = model.get_input_embeddings().weight.dtype
    out = model.get_decoder()(inputs_embeds=prompt[None].to(dtype),
                              position_ids=torch.arange(n, device=prompt.device)[None],
                              use_cache=True)
    return out.cache, n


class SoftPromptTrainable:
    """What engine.train updates: the (n, hidden) vectors, in float32, before the frozen model."""

    def __init__(self, model, init: torch.Tensor):
        self.model = model
        self.prompt = torch.nn.Parameter(init.float().clone())  # (n, hidden)

    def parameters(self):
        return [self.prompt]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {vp.TENSOR_KEY: self.prompt.detach().clone()}

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.prompt.copy_(sd[vp.TENSOR_KEY])

    def train(self, mode: bool) -> None:
        pass  # no dropout on the prompt; the base model stays as it is (eval)

    def loss(self, batch):
        cache, n = virtual_cache(self.model, self.prompt)  # one row, with grad
        return vp.loss_after_prefix(self.model, cache, n, batch)


@dataclass
class SoftPromptAdapter(TunedAdapter):
    prompt_embeddings: torch.Tensor | None = None  # (n_virtual, hidden) float32
    peft_config: dict = field(default_factory=dict)  # adapter_config.json, as PEFT writes it

    def bind(self, backend: Backend) -> Backend:
        P = self.prompt_embeddings
        hidden = vp.model_dims(backend.model)["hidden"]
        if P.shape[1] != hidden:
            base = self.peft_config.get("base_model_name_or_path")
            raise TailorError(f"this soft prompt was trained on {base} (hidden size {P.shape[1]}),"
                              f" not on {backend.identity} (hidden size {hidden}); use it with "
                              f"its own base model")
        P = P.to(backend.device)
        return backend.with_virtual_prefix(lambda: virtual_cache(backend.model, P))

    @property
    def trainable_params(self) -> int:
        return self.prompt_embeddings.numel()

    def save_files(self, directory) -> None:
        from peft import PromptTuningConfig  # slow to import; only saving needs it

        vp.write_peft(directory, PromptTuningConfig(**self.peft_config), self.prompt_embeddings)

    def state(self) -> dict:
        return self.task_state()


def peft_config(backend: Backend, n_virtual: int) -> dict:
    """PEFT's PromptTuningConfig fields for this model: what `from_pretrained` needs to load it.

    `RANDOM` init is the portable choice: PEFT's TEXT init wants a tokenizer path even when
    loading, and the init does not matter once the trained vectors are loaded.
    """
    dims = vp.model_dims(backend.model)
    return {"task_type": "CAUSAL_LM", "num_virtual_tokens": n_virtual, "token_dim": dims["hidden"],
            "num_layers": dims["layers"], "num_attention_heads": dims["heads"],
            "num_transformer_submodules": 1, "prompt_tuning_init": "RANDOM",
            "base_model_name_or_path": backend.identity, "inference_mode": True}


def initial_prompt(backend: Backend, task: Task, config: SoftPromptConfig, seed: int,
                   template: Template | None = None) -> torch.Tensor:
    template = template or resolve(config.template if config.template != "auto" else "default",
                                   task)
    ids = vp.init_token_ids(backend, task, template, config.init, config.init_text,
                            config.n_virtual, seed)
    return vp.token_embeddings(backend.model, ids)  # (n, hidden)


def fit(backend: Backend, train: Task, val: Task | None, config: SoftPromptConfig, *,
        seed: int = 0, work_dir=None, resume: bool = False,
        metric: str | None = None) -> SoftPromptAdapter:
    # fitting code (it imports the training loop): only a fit imports it, never a load or bind
    from tailorlm.methods.trainable import choose_template, fit_trainable

    template = choose_template(backend, config, train, val, seed, metric).template
    init = initial_prompt(backend, train, config, seed, template)
    saved = peft_config(backend, config.n_virtual)
    task = train.with_examples([])

    def start():
        trainable = SoftPromptTrainable(backend.model, init)
        return trainable, lambda template: SoftPromptAdapter(
            NAME, config, task, template, prompt_embeddings=trainable.prompt.detach().clone(),
            peft_config=saved)

    with vp.frozen(backend.model):
        adapter, _ = fit_trainable(backend, train, val, config, start, seed=seed,
                                   work_dir=work_dir, resume=resume, metric=metric)
    return adapter


def from_state(config: SoftPromptConfig, state: dict, directory) -> SoftPromptAdapter:
    saved, tensor = vp.read_peft(directory, "PROMPT_TUNING")
    if tuple(tensor.shape) != (config.n_virtual, saved.get("token_dim")):
        raise TailorError(f"{directory}: prompt_embeddings has shape {tuple(tensor.shape)}, "
                          f"expected ({config.n_virtual}, {saved.get('token_dim')}); "
                          "re-create the adapter")
    task, template, train_result = TunedAdapter.parts_from_state(state)
    keep = ("task_type", "num_virtual_tokens", "token_dim", "num_layers", "num_attention_heads",
            "num_transformer_submodules", "prompt_tuning_init", "base_model_name_or_path",
            "inference_mode")
    return SoftPromptAdapter(NAME, config, task, template, train_result,
                             prompt_embeddings=tensor.float(),
                             peft_config={k: saved[k] for k in keep if k in saved})


register(MethodSpec(NAME, SoftPromptConfig, fit, from_state, family="soft prompt",
                      train_cost=3.0))

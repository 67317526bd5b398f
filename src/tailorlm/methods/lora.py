"""lora: low-rank adapters beside the frozen linear layers (Hu et al. 2021, arXiv:2106.09685).

Every targeted linear layer W (out x in) stays frozen; a low-rank update trains beside it:

    h = W x + (alpha / r) * B (A x)        A: (r, in), random;  B: (out, r), zeros at the start

so the adapted model starts out as the base. Only A and B train: for SmolLM2-135M at r=8 on the
seven projections of every layer, 2.4M of 134.5M parameters (1.8%); the artifact is ~10 MB.

PEFT does the work (injecting, saving, loading, merging); this module wires it to the engine. The
artifact is a PEFT adapter folder that PEFT, vLLM and LoRAX load as it is, written to their rules
(shared/notes/peft-adapter-format.md 4.4-4.5): bias "none", no DoRA, no modules_to_save,
`base_model_name_or_path` = the base's hub id. Any rank r >= 1 trains; vLLM serves a rank up to
the `--max-lora-rank` it is started with, one of 8, 16, ..., 512, so the card records the smallest
that fits (`serving.max_lora_rank`: 8 for r=4, 32 for r=24; none above 512):

    <dir>/adapter_config.json  adapter_model.safetensors   (+ adapter.json, card.json)

The base Backend's module is never changed, because a comparison runs several methods on it: LoRA
wraps a copy whose frozen weights share the base's memory (PEFT only reads them), and `merge`,
which does write into the weights, works on a full copy.

Two ways to compute with a fitted adapter:

    bind(backend)            merged: a view of the base whose adapted layers hold W + (alpha/r) B A
                             (new tensors; every other weight is the base's own memory). Runs as
                             fast as the base: PEFT's unmerged layers cost two extra small matmuls
                             per layer and their Python dispatch, forward and backward (a hybrid's
                             input side trains through it). Costs the adapted layers' weights once
                             per adapter (0.4 GB for SmolLM2-135M's seven projections in float32).
    bind_unmerged(backend)   PEFT's layers beside the shared base weights: no weight is copied,
                             so binding is light (what serving many adapters over one base needs).
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import peft
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer

from tailorlm.data.task import Task
from tailorlm.errors import TailorError
from tailorlm.methods.contract import MethodSpec
from tailorlm.methods.index import register
from tailorlm.methods.tuned import TrainFields, TunedAdapter
from tailorlm.models.backend import Backend

NAME = "lora"
# The values vLLM's --max-lora-rank takes; it serves every adapter of rank <= the value given.
SERVING_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def max_lora_rank(r: int) -> int | None:
    """The smallest --max-lora-rank vLLM serves a rank-r LoRA with; None above 512."""
    return next((m for m in SERVING_RANKS if m >= r), None)

ATTENTION_AND_MLP = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
ADAPTER_NAME = "default"  # PEFT strips it from the saved tensor names


@dataclass
class LoraConfig(TrainFields):
    # 1e-3, above the usual 2e-4: B starts at zero, and a few dozen examples give only tens of
    # optimizer steps, in which 2e-4 barely moves the model off the base. Small data fits in few
    # steps; lower it (2e-4..5e-4) for thousands of examples or when validation loss jumps about.
    lr: float = 1e-3
    r: int = 8  # rank of each update: 8 is plenty for one task; 16-64 for harder generation
    alpha: int = 16  # the update is scaled by alpha / r: 2.0 here
    dropout: float = 0.05  # on the input of A, while training only
    # Layer names (suffixes) to adapt, or "all-linear" (every linear layer but the LM head).
    target_modules: list[str] | str = field(default_factory=lambda: list(ATTENTION_AND_MLP))

    def validate(self) -> None:
        super().validate()
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise TailorError(f"r must be a whole number >= 1 (the rank of each update), not "
                              f"{self.r!r}; r: 8 suits most tasks")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) \
                or self.alpha <= 0:
            raise TailorError(f"alpha must be a number above 0 (the update is scaled by alpha/r; "
                              f"2*r is usual), not {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            raise TailorError(f"dropout is a probability: give 0 <= dropout < 1 (0.05 is usual), "
                              f"not {self.dropout!r}")
        if isinstance(self.target_modules, str) and self.target_modules != "all-linear":
            self.target_modules = [m.strip() for m in self.target_modules.split(",") if m.strip()]
        if not (self.target_modules == "all-linear" or (
                isinstance(self.target_modules, list) and self.target_modules
                and all(isinstance(m, str) and m for m in self.target_modules))):
            raise TailorError(f"target_modules must be a list of layer names (e.g. "
                              f"{','.join(ATTENTION_AND_MLP)}) or 'all-linear', "
                              f"not {self.target_modules!r}")


def peft_config(config: LoraConfig, identity: str) -> peft.LoraConfig:
    """PEFT's config for our options, restricted to what vLLM and LoRAX accept."""
    return peft.LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
                           target_modules=copy.copy(config.target_modules), bias="none",
                           use_dora=False, modules_to_save=None, task_type="CAUSAL_LM",
                           base_model_name_or_path=identity)


def frozen_view(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` whose parameters are new, frozen Parameters over the same memory.

    PEFT swaps modules inside the copy's tree and freezes its parameters; the original keeps its
    modules and flags, and its weights cost no memory twice. Nothing may write into the copy's
    weights: merging uses `copy.deepcopy` instead.
    """
    memo = {id(p): torch.nn.Parameter(p.detach(), requires_grad=False)
            for p in model.parameters()}  # tied weights: one Parameter, one entry, still tied
    return copy.deepcopy(model, memo)


def merged_view(base: torch.nn.Module, peft_model: PeftModel) -> torch.nn.Module:
    """A frozen view of `base` whose LoRA-adapted linear layers hold W + (alpha/r) B A.

    Only the adapted layers' weights are new tensors (summed in float32, stored in W's dtype, as
    PEFT's merge does); everything else is the base's memory, so `base` itself is never written.
    """
    model = frozen_view(base)
    with torch.no_grad():
        for name, layer in peft_model.base_model.model.named_modules():
            if isinstance(layer, LoraLayer) and ADAPTER_NAME in layer.lora_A:
                linear = model.get_submodule(name)  # the plain nn.Linear at the same path
                W = linear.weight
                merged = W.float() + layer.get_delta_weight(ADAPTER_NAME).float()  # (out, in)
                linear.weight = torch.nn.Parameter(merged.to(W.dtype), requires_grad=False)
    return model.eval()


def wrap(base: torch.nn.Module, cfg: peft.LoraConfig) -> PeftModel:
    """`base` (a copy: PEFT changes it in place) with fresh LoRA layers, seeded by the caller."""
    cfg = copy.deepcopy(cfg)
    # PEFT overwrites the name with the module's own (none for ours), warning if one was set.
    identity, cfg.base_model_name_or_path = cfg.base_model_name_or_path, None
    try:
        model = peft.get_peft_model(base, cfg)
    except ValueError as e:
        if "not found in the base model" in str(e) or "Target module" in str(e):
            raise TailorError(f"target_modules {cfg.target_modules} match no layer of this model: "
                              f"name its linear layers (e.g. q_proj,v_proj) or use all-linear"
                              ) from None
        raise
    model.peft_config[ADAPTER_NAME].base_model_name_or_path = identity
    return model


@dataclass
class LoraAdapter(TunedAdapter):
    identity: str = ""  # the base's hub id, written into adapter_config.json
    directory: Path | None = None  # a loaded adapter's folder: its weights are read at bind
    peft_model: PeftModel | None = field(default=None, repr=False)  # the fitted or bound model
    base_id: int | None = None  # id() of the base module peft_model wraps a view of

    merged_model: torch.nn.Module | None = field(default=None, repr=False)  # bind()'s model
    merged_base_id: int | None = None  # id() of the base module merged_model shares weights with

    def bind(self, backend: Backend) -> Backend:
        """The base computing with the merged weights W + (alpha/r) B A: as fast as the base."""
        if self.merged_model is None or self.merged_base_id != id(backend.model):
            self.merged_model = merged_view(backend.model, self._peft_over(backend))
            self.merged_base_id = id(backend.model)
        return backend.with_model(self.merged_model)

    def bind_unmerged(self, backend: Backend) -> Backend:
        """PEFT's LoRA layers over the base's own weights: nothing copied, a little slower."""
        # The transformers model inside PeftModel holds the injected layers and keeps the
        # transformers forward signature (cache=, logits_to_keep=) the engine calls.
        return backend.with_model(self._peft_over(backend).base_model.model.eval())

    def _peft_over(self, backend: Backend) -> PeftModel:
        """This adapter's PeftModel over a view of `backend`'s model (built once per base)."""
        if self.peft_model is None or self.base_id != id(backend.model):
            self.peft_model = self._wrap_weights(frozen_view(backend.model))
            self.base_id = id(backend.model)
        return self.peft_model

    def merge(self, backend: Backend) -> torch.nn.Module:
        """The base with B A folded into each W: a plain transformers model, no PEFT layers."""
        merged = self._wrap_weights(copy.deepcopy(backend.model)).merge_and_unload()
        return merged.eval()

    def _wrap_weights(self, base: torch.nn.Module) -> PeftModel:
        """`base` with this adapter's LoRA weights: from memory if held, else from the folder."""
        if self.peft_model is not None:
            model = wrap(base, self.peft_model.peft_config[ADAPTER_NAME])
            weights = peft.get_peft_model_state_dict(self.peft_model, save_embedding_layers=False)
            peft.set_peft_model_state_dict(model, weights)
        else:
            model = PeftModel.from_pretrained(base, self.directory)  # reads the .safetensors
        return model.eval()

    def save_files(self, directory) -> None:
        directory = Path(directory)
        if self.peft_model is None:  # loaded and never bound: the folder's files are the weights
            for name in (CONFIG_FILE, WEIGHTS_FILE):
                shutil.copyfile(self.directory / name, directory / name)
            return
        # PEFT also writes a README.md; only its two load-bearing files are kept.
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            self.peft_model.save_pretrained(tmp, save_embedding_layers=False)
            for name in (CONFIG_FILE, WEIGHTS_FILE):
                os.replace(Path(tmp) / name, directory / name)

    @property
    def trainable_params(self) -> int:
        if self.peft_model is not None:
            return sum(p.numel() for n, p in self.peft_model.named_parameters() if "lora_" in n)
        return int(self.train_result.get("trainable_params", 0))

    @property
    def serving(self) -> dict:
        """What vLLM needs to serve it (methods/contract.py `serving_of`): --max-lora-rank."""
        return {"max_lora_rank": max_lora_rank(self.config.r)}

    def state(self) -> dict:
        return {**self.task_state(), "identity": self.identity}


def fit(backend: Backend, train: Task, val: Task | None, config: LoraConfig, *, seed: int = 0,
        work_dir=None, resume: bool = False, metric: str | None = None) -> LoraAdapter:
    # fitting code (it imports the training loop): only a fit imports it, never a load or bind
    from tailorlm.methods.module_trainable import ModuleTrainable, optimizer_bytes
    from tailorlm.methods.trainable import fit_trainable

    task = train.with_examples([])

    def start():  # each trial of the fit protocol (methods/trainable.py): the same seeded A
        with torch.random.fork_rng():  # A's random init, seeded without touching the global RNG
            torch.manual_seed(seed)
            model = wrap(frozen_view(backend.model), peft_config(config, backend.identity))
        return ModuleTrainable(model.base_model.model), lambda template: LoraAdapter(
            NAME, config, task, template, identity=backend.identity, peft_model=model,
            base_id=id(backend.model))  # only the lora_A/lora_B require grad

    adapter, trainable = fit_trainable(backend, train, val, config, start, seed=seed,
                                       work_dir=work_dir, resume=resume, metric=metric)
    adapter.train_result.update(trainable_params=trainable.n_params,
                                optimizer_bytes=optimizer_bytes(trainable.n_params))
    return adapter


def from_state(config: LoraConfig, state: dict, directory=None) -> LoraAdapter:
    if directory is None or not (Path(directory) / WEIGHTS_FILE).is_file():
        raise TailorError(f"{directory} has no {WEIGHTS_FILE}: a LoRA adapter folder needs it "
                          f"(weights are read as safetensors only); re-save the adapter")
    task, template, train_result = TunedAdapter.parts_from_state(state)
    return LoraAdapter(NAME, config, task, template, train_result, identity=state["identity"],
                       directory=Path(directory))


def export_merged(adapter: LoraAdapter, backend: Backend, out_dir) -> Path:
    """Write the merged model as a transformers folder (safetensors + tokenizer), atomically."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise TailorError(f"{out_dir} exists and is not empty: choose a new folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out_dir.name}-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the model folder it becomes is an ordinary one
    try:
        adapter.merge(backend).save_pretrained(tmp)  # transformers 5 writes safetensors only
        backend.tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


register(MethodSpec(NAME, LoraConfig, fit, from_state, side="weight", family="fine tuning",
                      train_cost=4.5, shared_fit=True))

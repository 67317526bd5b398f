"""full: fine-tune every weight of the model, the baseline parameter-efficient methods answer to.

    theta <- AdamW(theta, grad of the target-token loss)     for every theta: embeddings,
                                                             attention, MLP, norms, LM head

It can fit anything the other methods can, at the highest cost: training holds the tuned copy
(4 bytes per parameter in float32), its gradients (4) and AdamW's two moments (8), about 16 bytes
per parameter, 2.2 GB for SmolLM2-135M on top of the base; and the artifact is a whole model.

The artifact is a transformers model folder, written beside adapter.json and card.json, that
`AutoModelForCausalLM.from_pretrained(folder)` and any server load as they are:

    <dir>/config.json  generation_config.json  model.safetensors  tokenizer files

The base Backend's module is never changed: training works on a deep copy.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tailorlm.data.task import Task
from tailorlm.errors import TailorError
from tailorlm.methods.artifact import ADAPTER_FILE, CARD_FILE
from tailorlm.methods.contract import MethodSpec
from tailorlm.methods.index import register
from tailorlm.methods.tuned import TrainFields, TunedAdapter
from tailorlm.models.backend import Backend

NAME = "full"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class FullConfig(TrainFields):
    # 2e-5: every weight moves, embeddings and head included, so a step 50x smaller than LoRA's
    # already changes the model as much; higher rates on a few dozen examples overwrite what the
    # base knew (catastrophic forgetting) and overfit within an epoch.
    lr: float = 2e-5


@dataclass
class FullAdapter(TunedAdapter):
    directory: Path | None = None  # a loaded adapter's folder: the model is read from it at bind
    model: torch.nn.Module | None = field(default=None, repr=False)  # the tuned copy
    tokenizer: object = field(default=None, repr=False)  # saved beside the weights

    def bind(self, backend: Backend) -> Backend:
        if self.model is None:
            from transformers import AutoModelForCausalLM

            try:
                self.model = AutoModelForCausalLM.from_pretrained(
                    self.directory, dtype=backend.dtype, use_safetensors=True,
                    local_files_only=True)
            except (OSError, ValueError) as e:
                raise TailorError(f"cannot load the fine-tuned model in {self.directory}: "
                                  f"{str(e).splitlines()[0]}; re-create the adapter") from None
        return backend.with_model(self.model.eval())

    def save_files(self, directory) -> None:
        directory = Path(directory)
        if self.model is None:  # loaded and never bound: copy the model folder as it is
            for f in self.directory.iterdir():
                if f.is_file() and f.name not in (ADAPTER_FILE, CARD_FILE):
                    shutil.copyfile(f, directory / f.name)
            return
        self.model.save_pretrained(directory)  # transformers 5 writes safetensors only
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(directory)

    @property
    def trainable_params(self) -> int:
        if self.model is not None:
            return sum(p.numel() for p in self.model.parameters())
        return int(self.train_result.get("trainable_params", 0))

    def state(self) -> dict:
        return self.task_state()


def fit(backend: Backend, train: Task, val: Task | None, config: FullConfig, *, seed: int = 0,
        work_dir=None, resume: bool = False, metric: str | None = None) -> FullAdapter:
    # fitting code (it imports the training loop): only a fit imports it, never a load or bind
    from tailorlm.methods.module_trainable import ModuleTrainable, optimizer_bytes
    from tailorlm.methods.trainable import fit_trainable

    task = train.with_examples([])

    def start():
        # A deep copy, trained in float32: the loop keeps master weights in float32 and only
        # computes in bfloat16 under autocast. It goes back to the base's dtype to compute like
        # the base. Each trial of the fit protocol starts from a new copy of the base.
        model = copy.deepcopy(backend.model).float().requires_grad_(True)
        return ModuleTrainable(model), lambda template: FullAdapter(
            NAME, config, task, template, model=model, tokenizer=backend.tokenizer)

    adapter, trainable = fit_trainable(backend, train, val, config, start, seed=seed,
                                       work_dir=work_dir, resume=resume, metric=metric)
    adapter.model.to(backend.dtype).eval()
    adapter.train_result.update(trainable_params=trainable.n_params,
                                optimizer_bytes=optimizer_bytes(trainable.n_params))
    return adapter


def from_state(config: FullConfig, state: dict, directory=None) -> FullAdapter:
    if directory is None or not (Path(directory) / WEIGHTS_FILE).is_file():
        raise TailorError(f"{directory} has no {WEIGHTS_FILE}: a full fine-tune's folder holds "
                          f"the whole model as safetensors; re-save the adapter")
    task, template, train_result = TunedAdapter.parts_from_state(state)
    return FullAdapter(NAME, config, task, template, train_result, directory=Path(directory))


# train_cost measured: docs/benchmarks.md, "Waste out of the demo's fits"
register(MethodSpec(NAME, FullConfig, fit, from_state, side="weight", family="fine tuning",
                      train_cost=7.0))

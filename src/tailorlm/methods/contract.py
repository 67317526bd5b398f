"""The method contract: what every method, trained or not, gives the rest of tailorlm.

    spec = get_method("few_shot")
    config = spec.config.from_dict({"n_demos": 4})   # validates; errors say how to fix
    adapter = spec.fit(backend, train, val, config, seed=0, work_dir=None, resume=False)
    adapter.bind(backend) -> Backend               # the model to run: base, LoRA-wrapped, tuned,
                                                   # or with a virtual prefix (soft prompt, prefix)
    adapter.prompt(example) -> Prompt             # what the model reads (engine/prompt.py)
    adapter.continuations(task) -> [" positive", ...]   # the label texts scored after the prompt
    adapter.adjust(logprobs) -> scores              # e.g. contextual calibration; identity by default
    save_adapter(adapter, folder)  -> adapter.json, card.json, + adapter.save_files(folder)
    load_adapter(folder)           -> spec.from_state(config, state, folder)
    adapter.groups(task)           optional: [(name, part, indices)] for an adapter that routes
                                   examples to parts with their own binding (a hybrid's variants);
                                   the engine evaluates each part on its indices

Nothing outside `methods/` asks which method it holds: the engine calls these and nothing else.
Prompt methods change the text around the input and bind to the base unchanged. Methods that
learn bind to a backend that computes differently: LoRA and full fine-tuning swap the module;
soft prompts and prefixes give the backend a virtual prefix, the key/values every prompt starts
from, which the engine already shares across queries like a fixed instruction.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Literal, Protocol

import numpy as np

from tailorlm.data.task import Example, Task
from tailorlm.engine.prompt import Prompt
from tailorlm.errors import TailorError
from tailorlm.models.backend import Backend


class Adapter(Protocol):
    method: str
    config: Any

    def bind(self, backend: Backend) -> Backend: ...

    def save_files(self, directory) -> None: ...

    def prompt(self, example: Example) -> Prompt: ...

    def continuations(self, task: Task) -> list[str]: ...

    def adjust(self, logprobs: np.ndarray) -> np.ndarray: ...

    @property
    def stop(self) -> tuple[str, ...]: ...

    @property
    def trainable_params(self) -> int: ...

    def state(self) -> dict: ...


@dataclass(frozen=True)
class MethodSpec:
    name: str
    config: type  # a MethodConfig dataclass
    fit: Callable[..., Adapter]  # fit(backend, train, val, config, *, seed, work_dir, resume)
    from_state: Callable[..., Adapter]  # (config, state, folder) -> Adapter, for load_adapter
    # "weight": changes how the model computes (lora, full); "input": changes what it reads
    # (prompt methods, soft prompts, prefixes). A hybrid WEIGHT+INPUT puts one on top of the other.
    side: Literal["weight", "input"] = "input"
    # What a report groups it under: "prompt" (text only: works against an API-only model),
    # "soft prompt" (learned vectors fed to a frozen model), "fine tuning" (new weights), "hybrid".
    family: Literal["prompt", "soft prompt", "fine tuning", "hybrid"] = "prompt"
    # Seconds to train on a token relative to evaluating one (forward + backward + optimizer),
    # for sizing comparisons to a time budget (compare/budget.py); 0 = nothing is trained.
    train_cost: float = 0.0

    @property
    def needs_weights(self) -> bool:
        """Whether it needs the model's weights (to train, or to bind a prefix or a delta):
        everything but text prompts. Such methods refuse a remote backend (`check_backend`)."""
        return self.family != "prompt"


class MethodConfig:
    """Mixin for method configs: `from_dict` rejects unknown keys; `validate` checks values."""

    def validate(self) -> None:  # overridden where values need checks
        pass

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_dict(cls, values: dict | None) -> "MethodConfig":
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise TailorError(f"unknown option(s) {', '.join(unknown)} for {cls.__name__}; "
                              f"valid options: {', '.join(sorted(names))}")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def choose(name: str, value: Any, allowed: tuple) -> None:
    """Raise the one-line error for a value outside `allowed`."""
    if value not in allowed:
        raise TailorError(f"{name} must be one of {', '.join(map(str, allowed))}, not {value!r}")


def check_backend(spec: MethodSpec, backend) -> None:
    """The one line a method that needs weights gives a backend behind an API."""
    if spec.needs_weights and getattr(backend, "where", "local") == "remote":
        raise TailorError(f"{spec.name} needs the model's weights, and {backend.name} is a remote "
                          "endpoint (text only): run it on a local model, or use a prompt method "
                          "(prompt_template, few_shot, instruction_search)")

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
    groups_of(adapter, task)       [(name, part, indices)]: the parts that serve the examples,
                                   each with its own binding (a hybrid's variants); one group,
                                   the adapter itself on every index, for an adapter without parts
    serving_of(adapter)            what a server needs to load it, for the card: {} by default;
                                   {"max_lora_rank": 8} where a LoRA is inside (vLLM's flag)

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

from tailorlm.data.task import Example, Task, example_id  # noqa: F401 (re-exported)
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
    # The zero-shot baseline every report shows and every method's gain is measured against.
    zero_shot_reference: bool = False
    # What break-even is measured against: the method with the highest priority present in a
    # comparison (few_shot 2, prompt_template 1); 0 = never the reference.
    break_even_reference: int = 0
    # The adapter before any fitting, for a method that has one (text prompts: the task's default
    # template, uncalibrated): what compare/budget.py's probe times (`zero_shot_adapter`).
    unfitted: Callable[[Task], "Adapter"] | None = None
    # Passes over the judged rows a method that trains nothing scores to choose its prompt,
    # beyond the shared template search, given its config (compare/budget.py sizes plans with
    # it); None: the budget's default for a prompt method.
    choice_passes: Callable[[Any], float] | None = None
    # The train_cost of each part that fits on its own, for a method made of parts (a hybrid:
    # its weight side, then its input side); () = the method is one part of `train_cost`.
    part_costs: tuple[float, ...] = ()
    # Whether it reads a column that names each row's variant (data.variant_field: a hybrid's
    # per-client input sides); a plan with a variant field and no such method is refused.
    reads_variants: bool = False
    # Whether a fit of it is kept in memory for a hybrid whose part is the same fit, and the
    # other way round (methods/fit_memo.py): a LoRA's few MB, not a full fine-tune's model copy.
    shared_fit: bool = False
    # The methods its parts are fitted as, in `side_costs` order (a hybrid: its weight side's,
    # then its input side's); () = the method is its own one part.
    parts: tuple[str, ...] = ()

    @property
    def side_costs(self) -> tuple[float, ...]:
        """The train_cost of each part that fits on its own: (train_cost,) for one method."""
        return self.part_costs or (self.train_cost,)

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

    @classmethod
    def option_names(cls) -> set[str]:
        """The bare option names `from_dict` takes (what a plan's shared options may set)."""
        return {f.name for f in dataclasses.fields(cls)}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def parts(self) -> tuple["MethodConfig", ...]:
        """The configs of the parts that fit on their own, in `MethodSpec.side_costs` order:
        (self,) for one method; a hybrid's weight side, then its input side."""
        return (self,)


def choose(name: str, value: Any, allowed: tuple) -> None:
    """Raise the one-line error for a value outside `allowed`."""
    if value not in allowed:
        raise TailorError(f"{name} must be one of {', '.join(map(str, allowed))}, not {value!r}")


# -- what compare/ may ask of any adapter, with defaults (so it never probes an adapter itself) --
#
# Optional adapter members, each used through the function below it:
#   adapter.held_out        ids (example_id) of training rows it held out for validation: not
#                           fitted on; none by default
#   adapter.reworded(t)     the fitted adapter read through another wording (prompt sensitivity)
#   adapter.demos           fixed demonstrations; adapter.reordered(order) reorders them
#   adapter.bias            a label bias (contextual calibration), refitted for each new wording
#   adapter.train_result    what the fit recorded of its training (methods/trainable.py)


def train_report(adapter) -> dict:
    """What the fit recorded of its training: tokens seen, seconds, the chosen lr and epochs, a
    hybrid's parts (methods/trainable.py `fit_trainable`); {} for an adapter that trains nothing."""
    return dict(getattr(adapter, "train_result", None) or {})


def zero_shot_adapter(task: Task) -> "Adapter":
    """The zero-shot reference method's adapter before any fitting (`MethodSpec.unfitted`): what
    a budget probe times, asked of the registered methods, never built by name."""
    from tailorlm.methods.index import METHODS

    for spec in METHODS.values():
        if spec.zero_shot_reference and spec.unfitted is not None:
            return spec.unfitted(task)
    raise TailorError("no registered method offers an unfitted zero-shot adapter "
                      "(MethodSpec.unfitted)")


def held_out_ids(adapter) -> set[str]:
    return set(getattr(adapter, "held_out", None) or ())


def fitted_rows(adapter, train: Task) -> Task:
    """The rows of `train` the adapter was fitted on (trained on, or chosen from), without the
    rows it held out for validation: where the train-test gap is measured."""
    held = held_out_ids(adapter)
    return train.with_examples([e for e in train.examples if example_id(e) not in held])


def held_out_rows(adapter, train: Task) -> Task:
    """The rows of `train` the adapter held out for validation (empty when none)."""
    held = held_out_ids(adapter)
    return train.with_examples([e for e in train.examples if example_id(e) in held])


def wording_variants(adapter, templates, n_orders: int, seed: int) -> dict[str, Any]:
    """The adapter as fitted, read through each template, and (with fixed demonstrations) in
    `n_orders` other demonstration orders; only "as fitted" where it has no wording to change."""
    out = {"as fitted": adapter}
    if not hasattr(adapter, "reworded"):
        return out
    for template in templates:
        out[template.name] = adapter.reworded(template)
    demos = getattr(adapter, "demos", None) or []
    if len(demos) > 1 and hasattr(adapter, "reordered"):
        rng = np.random.default_rng(seed)
        for i in range(n_orders):
            out[f"order_{i + 1}"] = adapter.reordered(list(rng.permutation(len(demos))))
    return out


def recalibrated(adapter, backend: Backend, task: Task):
    """A calibrated adapter with its label bias refitted (as fitting it would have done, e.g. for
    a new wording); any other adapter unchanged."""
    if getattr(adapter, "bias", None) is None:
        return adapter
    from tailorlm.engine.evaluate import label_scores
    from tailorlm.methods.calibration import content_free_examples, label_bias

    raw = adapter.with_bias(None)
    cf = task.with_examples(content_free_examples())
    return raw.with_bias(label_bias(label_scores(backend, raw, cf)))

# -- optional Adapter methods, declared once: the engine and compare/ call these functions, never
#    hasattr. An adapter offers `groups(task)` or `serving` only where it differs from the default.

def groups_of(adapter: Adapter, task: Task) -> list[tuple[str, Adapter, list[int]]]:
    """(name, part, indices into task.examples) per part that serves some of the examples.

    An adapter made of parts with their own binding (a hybrid: one input side per variant)
    defines `groups(task)`; any other adapter is one group of every example, named by its method.
    """
    own = getattr(adapter, "groups", None)
    if own is not None:
        return own(task)
    return [(adapter.method, adapter, list(range(len(task.examples))))]


def serving_of(adapter: Adapter) -> dict:
    """What serving the adapter needs beyond the base model, for its card's `serving` key: e.g.
    {"max_lora_rank": 8}, the `--max-lora-rank` vLLM must be started with. {} for text prompts."""
    return dict(getattr(adapter, "serving", None) or {})


def check_backend(spec: MethodSpec, backend) -> None:
    """The one line a method that needs weights gives a backend behind an API."""
    if spec.needs_weights and getattr(backend, "where", "local") == "remote":
        raise TailorError(f"{spec.name} needs the model's weights, and {backend.name} is a remote "
                          "endpoint (text only): run it on a local model, or use a prompt method "
                          "(prompt_template, few_shot, instruction_search)")

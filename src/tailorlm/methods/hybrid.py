"""Hybrids, WEIGHT+INPUT (`lora+soft_prompt`, `full+few_shot`, ...): fine-tune once, prompt-tune
per variant.

"Fine tune on your proprietary data, prompt tune for context, tone or task variations":

    weight side (lora | full)            fitted once, on all the training rows   ─► model W
    input side  (soft_prompt | prefix | few_shot | prompt_template)
                                         fitted on top of the frozen W, once per value of
                                         `variant_field` (a client, a product line, a task) on
                                         that variant's rows, and once on all rows (the fallback)

    predict(x) = input[variant(x)] over W       input = the fallback when x's variant is unknown

Adding a variant later (`add_variant`) fits only its input side: seconds and kilobytes for a soft
prompt, where one LoRA per variant would cost a LoRA fit and its megabytes each. The fit records,
per variant, its rows, fit seconds, bytes on disk and validation score; the hybrid's totals; and
`one_lora_per_variant_bytes`, n_variants x the weight side's artifact bytes: what one weight-side
adapter per variant would weigh instead (one LoRA per variant for lora+..., one whole model per
variant for full+...).

Why the fallback is an input side fitted on all rows, not W alone: the input side is what W was
not trained to do without, e.g. a soft prompt's context or few-shot demonstrations; one fitted on
every variant is the best guess for an unseen one, and keeps the prompt format the variants use.
Rows without the variant field train W and the fallback only.

Folder (every part is an ordinary adapter folder that `load_adapter` reads on its own):

    <dir>/adapter.json  card.json
    <dir>/weight/               the weight side (a PEFT LoRA folder, or a transformers model folder)
    <dir>/variants/<value>/     one input side per variant (the value, made safe for a file name)
    <dir>/fallback/             the input side fitted on all rows

How the engine runs it: a soft prompt or prefix lives on the bound backend
(`Backend.virtual_prefix`), and the engine binds once per evaluation; so a hybrid offers
`groups(task)`, one (variant, adapter, example indices) per variant present, and the engine
evaluates each group with its own binding and stitches the predictions back in order
(engine/evaluate.py). `bind` alone binds the weight side and `prompt` routes by variant: right for
text-only input sides, not for virtual prefixes, which need `groups`.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tailorlm.data.task import Example, Task
from tailorlm.engine.cost import dir_bytes
from tailorlm.engine.evaluate import quick_score
from tailorlm.engine.prompt import Prompt
from tailorlm.errors import TailorError
from tailorlm.methods import fit_memo
from tailorlm.methods.contract import MethodConfig, MethodSpec, serving_of
from tailorlm.methods.index import METHODS
from tailorlm.models.backend import Backend

FALLBACK = "(fallback)"  # the group name of examples whose variant has no input side of its own
SIDES = ("weight", "input")


@dataclass
class HybridConfig(MethodConfig):
    """{"weight": {...}, "input": {...}, "variant_field": str | None}.

    `from_dict` also takes `weight.OPTION` / `input.OPTION`, and a bare OPTION, which goes to every
    side that has it (`epochs: 3` trains both sides for 3 epochs; `lr` differs a lot between sides,
    so set `weight.lr` and `input.lr` apart). Unless told otherwise, the input side reads the
    weight side's template: the prompt the fine-tuned weights learned to answer after.
    """

    weight: Any = None  # the weight side's config (a dict is validated into it)
    input: Any = None  # the input side's config
    variant_field: str | None = None  # the column that names a row's variant; None = one input side
    weight_spec: ClassVar[MethodSpec]
    input_spec: ClassVar[MethodSpec]

    def validate(self) -> None:
        if not isinstance(self.weight, MethodConfig):
            self.weight = self.weight_spec.config.from_dict(self.weight)
        if not isinstance(self.input, MethodConfig):
            self.input = self.input_spec.config.from_dict(self.input)
        if self.variant_field is not None and (not isinstance(self.variant_field, str)
                                               or not self.variant_field.strip()):
            raise TailorError(f"variant_field must be a column name (e.g. client), not "
                              f"{self.variant_field!r}")

    @classmethod
    def option_names(cls) -> set[str]:
        """A bare option goes to every side that has it (from_dict), so each side's names."""
        return ({"variant_field"} | cls.weight_spec.config.option_names()
                | cls.input_spec.config.option_names())

    @classmethod
    def from_dict(cls, values: dict | None) -> HybridConfig:
        values = dict(values or {})
        parts = {side: dict(values.pop(side, None) or {}) for side in SIDES}
        variant_field = values.pop("variant_field", None)
        specs = {"weight": cls.weight_spec, "input": cls.input_spec}
        names = {side: {f.name for f in fields(specs[side].config)} for side in SIDES}
        dotted = {k: v for k, v in values.items() if k.partition(".")[0] in SIDES and "." in k}
        for key, value in values.items():  # bare options first, so a side's own one wins
            if key in dotted:
                continue
            sides = [side for side in SIDES if key in names[side]]
            if not sides:
                valid = [f"{side}.{n}" for side in SIDES for n in sorted(names[side])]
                raise TailorError(f"unknown option {key} for {cls.__name__}; valid options: "
                                  f"variant_field, {', '.join(valid)}")
            for side in sides:
                parts[side][key] = value
        for key, value in dotted.items():
            side, _, option = key.partition(".")
            parts[side][option] = value
        weight = cls.weight_spec.config.from_dict(parts["weight"])
        if "template" in names["input"] and "template" not in parts["input"] \
                and hasattr(weight, "template"):
            parts["input"]["template"] = weight.template  # the prompt the weights learned
        return cls(weight=weight, input=parts["input"], variant_field=variant_field)

    def to_dict(self) -> dict:
        return {"weight": self.weight.to_dict(), "input": self.input.to_dict(),
                "variant_field": self.variant_field}

    def parts(self) -> tuple[MethodConfig, ...]:
        return (self.weight, self.input)


@functools.cache
def hybrid_spec(name: str) -> MethodSpec:
    """The spec of `WEIGHT+INPUT`, built from the two registered methods' specs."""
    parts = name.split("+")
    if len(parts) != 2 or not all(parts):
        raise TailorError(f"{name!r}: a hybrid joins two methods, WEIGHT+INPUT, e.g. "
                          f"lora+soft_prompt")
    for part in parts:
        if part not in METHODS:
            raise TailorError(f"unknown method {part!r} in {name!r}; available: "
                              f"{', '.join(sorted(METHODS))}")
    weight, input_ = (METHODS[p] for p in parts)
    by_side = {side: [n for n, s in sorted(METHODS.items()) if s.side == side] for side in SIDES}
    if weight.side != "weight" and input_.side == "weight":
        raise TailorError(f"{name!r}: the weight-side method comes first: write "
                          f"{input_.name}+{weight.name}")
    if weight.side != "weight":
        raise TailorError(f"{name!r}: a hybrid starts with a weight-side method "
                          f"({', '.join(by_side['weight'])}), not {weight.name}")
    if input_.side != "input":
        raise TailorError(f"{name!r}: a hybrid ends with an input-side method "
                          f"({', '.join(by_side['input'])}), not {input_.name}")
    config = type(f"{type_name(weight)}+{type_name(input_)}", (HybridConfig,),
                  {"weight_spec": weight, "input_spec": input_, "__module__": __name__})
    return MethodSpec(name, config, fit, from_state, side="weight", family="hybrid",
                      train_cost=weight.train_cost + input_.train_cost,
                      part_costs=(weight.train_cost, input_.train_cost), reads_variants=True,
                      parts=(weight.name, input_.name))


def type_name(spec: MethodSpec) -> str:
    return spec.config.__name__


# -- the adapter -------------------------------------------------------------------------------

@dataclass
class Stacked:
    """An input-side adapter over a weight-side one: what one variant's queries run through."""

    weight: Any
    input: Any

    @property
    def method(self) -> str:
        return f"{self.weight.method}+{self.input.method}"

    def bind(self, backend: Backend) -> Backend:
        return self.input.bind(self.weight.bind(backend))

    def prompt(self, example: Example) -> Prompt:
        return self.input.prompt(example)

    def continuations(self, task: Task) -> list[str]:
        return self.input.continuations(task)

    def adjust(self, logprobs: np.ndarray) -> np.ndarray:
        return self.input.adjust(logprobs)

    @property
    def stop(self) -> tuple[str, ...]:
        return self.input.stop

    @property
    def trainable_params(self) -> int:
        return self.weight.trainable_params + self.input.trainable_params


@dataclass
class HybridAdapter:
    method: str
    config: HybridConfig
    weight: Any  # the weight side's adapter
    fallback: Any  # the input side fitted on all rows
    variants: dict[str, Any] = field(default_factory=dict)  # variant value -> input side
    train_result: dict = field(default_factory=dict)  # per part: rows, seconds, bytes, scores

    def variant_of(self, example: Example) -> str | None:
        value = example.extra.get(self.config.variant_field) if self.config.variant_field \
            else None
        return None if value is None else str(value)

    def route(self, example: Example):
        """The input side that reads `example`: its variant's, or the fallback."""
        return self.variants.get(self.variant_of(example), self.fallback)

    def groups(self, task: Task) -> list[tuple[str, Stacked, list[int]]]:
        """(variant, stacked adapter, indices into task.examples) per variant present, in order
        of first appearance; unknown variants form one FALLBACK group."""
        members: dict[str, list[int]] = {}
        for i, e in enumerate(task.examples):
            v = self.variant_of(e)
            members.setdefault(v if v in self.variants else FALLBACK, []).append(i)
        return [(name, Stacked(self.weight, self.variants.get(name, self.fallback)), idx)
                for name, idx in members.items()]

    @property
    def held_out(self) -> list[str]:
        """The weight side's held-out rows (methods/contract.py)."""
        return getattr(self.weight, "held_out", None) or []

    def reworded(self, template):
        """Every input side read with other wording (prompt sensitivity, compare/)."""
        return replace(self, fallback=self.fallback.reworded(template),
                       variants={v: a.reworded(template) for v, a in self.variants.items()})

    def bind(self, backend: Backend) -> Backend:
        return self.weight.bind(backend)  # input sides that bind (virtual prefixes): groups()

    def prompt(self, example: Example) -> Prompt:
        return self.route(example).prompt(example)

    def continuations(self, task: Task) -> list[str]:
        return self.fallback.continuations(task)

    def adjust(self, logprobs: np.ndarray) -> np.ndarray:
        return self.fallback.adjust(logprobs)

    @property
    def stop(self) -> tuple[str, ...]:
        return self.fallback.stop

    @property
    def serving(self) -> dict:  # what serving the weight side needs (a LoRA's max rank)
        return serving_of(self.weight)

    @property
    def trainable_params(self) -> int:
        inputs = [self.fallback, *self.variants.values()]
        return self.weight.trainable_params + sum(a.trainable_params for a in inputs)

    def save_files(self, directory) -> None:
        from tailorlm.methods.artifact import save_adapter

        directory = Path(directory)
        parts = [("weight", Path("weight"), self.weight, self.train_result["weight"]),
                 ("fallback", Path("fallback"), self.fallback, self.train_result["fallback"])]
        parts += [(v, Path("variants", folder_name(v)), a, self.train_result["variants"][v])
                  for v, a in self.variants.items()]
        for role, rel, adapter, report in parts:
            save_adapter(adapter, directory / rel, {"part_of": self.method, "part": role})
            report["bytes"] = dir_bytes(directory / rel)
        self.train_result.update(totals(self.train_result))

    def state(self) -> dict:
        return {"variants": {v: folder_name(v) for v in self.variants},
                "train_result": self.train_result}


def folder_name(value: str) -> str:
    """A file name for a variant value: itself when safe, else a safe form plus a short hash."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", value).strip("._")[:40] or "variant"
    if safe == value:
        return safe
    return f"{safe}-{hashlib.sha256(value.encode()).hexdigest()[:8]}"


def totals(report: dict) -> dict:
    """The hybrid's totals from its parts' reports: tokens, params, bytes, the cost of a variant."""
    parts = [report["weight"], report["fallback"], *report["variants"].values()]
    # what one more variant costs: the variants' mean (the fallback, on all rows, costs more)
    inputs = list(report["variants"].values()) or [report["fallback"]]
    out = {"tokens_seen": sum(p.get("tokens_seen", 0) for p in parts),
           "train_seconds": sum(p.get("train_seconds", 0.0) for p in parts),  # across resumes
           "trainable_params": sum(p.get("trainable_params", 0) for p in parts),
           # parts train one after another: the optimizer's peak is the largest part's
           "optimizer_bytes": max(p.get("optimizer_bytes", 0) for p in parts),
           "n_variants": len(report["variants"]),
           "add_variant_seconds": float(np.mean([p["fit_seconds"] for p in inputs]))}
    if all("bytes" in p for p in parts):
        n = max(len(report["variants"]), 1)
        out.update(total_bytes=sum(p["bytes"] for p in parts),
                   weight_bytes=report["weight"]["bytes"],
                   add_variant_bytes=int(np.mean([p["bytes"] for p in inputs])),
                   one_lora_per_variant_bytes=n * report["weight"]["bytes"])
    return out


# -- fitting -----------------------------------------------------------------------------------

def split_variants(task: Task | None, variant_field: str | None) -> dict[str, list[Example]]:
    """Examples by the string value of their `variant_field` column, values sorted."""
    groups: dict[str, list[Example]] = {}
    if task is None or variant_field is None:
        return groups
    for e in task.examples:
        value = e.extra.get(variant_field)
        if value is not None:
            groups.setdefault(str(value), []).append(e)
    return dict(sorted(groups.items()))


def fit(backend: Backend, train: Task, val: Task | None, config: HybridConfig, *, seed: int = 0,
        work_dir=None, resume: bool = False, metric: str | None = None) -> HybridAdapter:
    weight_spec, input_spec = type(config).weight_spec, type(config).input_spec
    name = f"{weight_spec.name}+{input_spec.name}"
    by_variant = split_variants(train, config.variant_field)
    if config.variant_field and not by_variant:  # checked before the long weight-side fit
        columns = sorted({k for e in train.examples for k in e.extra})
        raise TailorError(f"no training row has a {config.variant_field!r} column (other columns:"
                          f" {', '.join(columns) or 'none'}); check --variant-field")
    val_by_variant = split_variants(val, config.variant_field)
    sub = (lambda *p: Path(work_dir, *p)) if work_dir else (lambda *p: None)  # noqa: E731

    # the same LoRA fitted on its own in this comparison is taken, not fitted again
    started = time.perf_counter()
    weight, reused = fit_memo.fit(weight_spec, backend, train, val, config.weight, seed=seed,
                                  metric=metric, work_dir=sub("weight"), resume=resume)
    seconds = reused.seconds if reused is not None else time.perf_counter() - started
    report = {"weight": {**getattr(weight, "train_result", {}), "fit_seconds": seconds,
                         "trainable_params": weight.trainable_params, "n_train": len(train)}}
    if reused is not None:  # its cost is still the hybrid's: what fitting it alone costs
        report["weight"]["reused"] = True
        report.update(reused_seconds=reused.seconds, reused_peak_mb=reused.peak_mb)
    bound = weight.bind(backend)
    input_config = reading_weights(config.input, weight)
    fallback, report["fallback"] = fit_input(backend, bound, weight, input_spec, input_config,
                                             train, val, seed=seed, work_dir=sub("fallback"),
                                             resume=resume, variant=None, metric=metric)
    variants, report["variants"] = {}, {}
    for value, examples in by_variant.items():
        v_val = val_by_variant.get(value)
        variants[value], report["variants"][value] = fit_input(
            backend, bound, weight, input_spec, input_config, train.with_examples(examples),
            val.with_examples(v_val) if v_val else None, seed=seed,
            work_dir=sub("variants", folder_name(value)), resume=resume, variant=value,
            metric=metric)
    report.update(totals(report))
    return HybridAdapter(name, config, weight, fallback, variants, report)


def reading_weights(config, weight):
    """The input side's config, its `template: auto` pinned to the template the weight side
    trained through (the prompt search's choice: the prompt the weights learned to answer)."""
    template = getattr(weight, "template", None)
    if getattr(config, "template", None) != "auto" or template is None:
        return config
    pinned = {k: getattr(template, k) for k in ("name", "query", "answer", "instruction",
                                                "separator", "answer_space")}
    return replace(config, template=pinned)


def fit_input(backend: Backend, bound: Backend, weight, spec: MethodSpec, config, train: Task,
              val: Task | None, *, seed: int, work_dir, resume: bool,
              variant: str | None, metric: str | None = None) -> tuple[Any, dict]:
    """One input side fitted over the bound weight side, and its report."""
    started = time.perf_counter()
    try:
        adapter = spec.fit(bound, train, val, config, seed=seed, work_dir=work_dir, resume=resume,
                           metric=metric)
    except TailorError as e:
        if variant is None:
            raise
        raise TailorError(f"variant {variant!r} ({len(train)} rows): {e}") from None
    trained = getattr(adapter, "train_result", {})
    report = {"n_train": len(train), "n_val": len(val) if val is not None else 0,
              "fit_seconds": time.perf_counter() - started, "trainable_params": adapter.trainable_params,
              "tokens_seen": trained.get("tokens_seen", 0),
              "train_seconds": trained.get("train_seconds", 0.0),
              "optimizer_bytes": trained.get("optimizer_bytes", 0)}
    if val is not None and len(val):
        report["val_score"] = quick_score(backend, Stacked(weight, adapter), val, metric)
    return adapter, report


def add_variant(backend: Backend, adapter_dir, variant, train: Task, val: Task | None = None, *,
                seed: int = 0, work_dir=None, resume: bool = False,
                replace: bool = False) -> HybridAdapter:
    """Fit an input side for one new variant and write it into a saved hybrid's folder.

    Only the new input side trains; the weight side's folder is not touched. `train` holds the
    variant's rows: rows of other variants are left out, rows without the column are kept. The
    variant folder is written atomically, then adapter.json (which commits it) and card.json.
    """
    from tailorlm.methods.artifact import (card_base_model, load_adapter, load_card, part_card,
                                           save_adapter, update_adapter)

    directory = Path(adapter_dir)
    hybrid = load_adapter(directory)
    if not isinstance(hybrid, HybridAdapter):
        raise TailorError(f"{directory} holds a {hybrid.method} adapter; variants are added to "
                          f"hybrids (WEIGHT+INPUT, e.g. lora+soft_prompt)")
    card = load_card(directory)
    base = card_base_model(card)
    if base["sha256"] not in (None, backend.sha256):
        raise TailorError(f"{directory} was made on {base['identity']} (sha256 "
                          f"{base['sha256'][:12]}), not on this model "
                          f"({backend.sha256[:12]}): load its own base model")
    variant, field_ = str(variant), hybrid.config.variant_field
    if field_ is None:
        raise TailorError(f"{directory} was fitted without a variant_field, so it has no "
                          f"variants; fit it again with one (--variant-field)")
    if variant in hybrid.variants and not replace:
        raise TailorError(f"{directory} already has variant {variant!r}; pass replace=True to "
                          f"fit it again")
    keep = [e for e in train.examples if e.extra.get(field_) is None
            or str(e.extra[field_]) == variant]
    if not keep:
        raise TailorError(f"no training row belongs to variant {variant!r} (column {field_!r})")
    val_rows = [e for e in (val.examples if val is not None else [])
                if e.extra.get(field_) is None or str(e.extra[field_]) == variant]
    spec = type(hybrid.config).input_spec
    adapter, report = fit_input(backend, hybrid.weight.bind(backend), hybrid.weight, spec,
                                reading_weights(hybrid.config.input, hybrid.weight),
                                train.with_examples(keep),
                                val.with_examples(val_rows) if val_rows else None, seed=seed,
                                work_dir=work_dir, resume=resume, variant=variant)
    rel = Path("variants", folder_name(variant))
    save_adapter(adapter, directory / rel, part_card(card, hybrid.method, variant))
    report["bytes"] = dir_bytes(directory / rel)
    hybrid.variants[variant] = adapter
    hybrid.train_result["variants"][variant] = report
    hybrid.train_result.update(totals(hybrid.train_result))
    costs = {**card.get("costs", {}), **hybrid_costs(hybrid.train_result)}
    update_adapter(hybrid, directory, {"costs": costs})
    return hybrid


def hybrid_costs(report: dict) -> dict:
    """What a card and a result row show of a hybrid beyond any method's costs."""
    keys = ("variants", "n_variants", "total_bytes", "weight_bytes", "add_variant_seconds",
            "add_variant_bytes", "one_lora_per_variant_bytes", "tokens_seen", "trainable_params")
    return {k: report[k] for k in keys if k in report}


def from_state(config: HybridConfig, state: dict, directory) -> HybridAdapter:
    from tailorlm.methods.artifact import load_adapter

    directory = Path(directory)
    spec = hybrid_spec(f"{type(config).weight_spec.name}+{type(config).input_spec.name}")
    weight = load_adapter(directory / "weight")
    fallback = load_adapter(directory / "fallback")
    variants = {v: load_adapter(directory / "variants" / folder)
                for v, folder in state["variants"].items()}
    for part in (weight, fallback, *variants.values()):
        if part.method not in spec.name.split("+"):
            raise TailorError(f"{directory} holds a {part.method} part in a {spec.name} "
                              f"adapter; re-create the adapter")
    return HybridAdapter(spec.name, config, weight, fallback, variants, state["train_result"])

"""A comparison plan: the shared protocol, and the methods with only what differs for each.

    task: support_routing            # or data: {train: ..., test: ..., val: ...} (+ field names)
    model: smollm2-135m              # or URL#NAME: an OpenAI-compatible endpoint (api: below)
    seeds: 3                         # a count (0, 1, 2) or a list
    budget_minutes: 30               # auto values are sized to it; the runner keeps to it
    train: {k: auto, curve: auto, epochs: auto, lr_search: auto, refit: auto}   # shared by every
                                     # method that has the option; auto: sized to the budget
    eval: {max_test: auto, sensitivity: auto, metric: null, tie_level: 0.95}
    costs: {cpu_hour_usd: 0.10, ...} # prices for the cost projection (defaults: COSTS)
    methods:
      - prompt_template
      - lora: {r: 16}                # diff-only: the method's own defaults for the rest
                                     # (none listed: DEFAULT_METHODS, + IF_IT_FITS where the
                                     # budget holds them)

Overrides are dotted paths into the same tree: typed values from code or the CLI's flags
(`{"train.k": 64, "methods": ["lora"]}`), and text from the command line, each read once as YAML
(`train.k=64 seeds=3 eval.max_test=null methods.lora.r=16`). Every key is checked against the
tree, so a typo says which keys exist instead of being ignored; an option for a method the plan
does not run is an error, not a method silently added. Shared keys reach every method that has
the option: `train.epochs` and `train.batch_size` the learning methods, `data.variant_field` (the
column that names a row's variant) the hybrids, and a plan without one refuses it.

`auto` values are resolved against the data and the machine by `compare/budget.py` once the
model is loaded; `load_plan` only reads and checks.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tailorlm.errors import TailorError

AUTO = "auto"


class _Loader(yaml.SafeLoader):
    """YAML as people write it: `1e-5` is a number (PyYAML follows YAML 1.1, which wants
    `1.0e-5`, and would hand a learning rate over as the text "1e-5")."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)[eE][-+]?\d+$"), list("-+0123456789."))


def read_yaml(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506: a SafeLoader
DEFAULT_METHODS = ["prompt_template", "few_shot", "soft_prompt", "lora", "full",
                   "lora+soft_prompt"]  # every family: prompt, soft prompt, fine tuning, hybrid
# The default plan also lists these, run only where the budget holds them without giving up
# anything it buys the others (seeds, k, the curve, test rows, the fit protocol): the sizing
# leaves them out otherwise (compare/budget.py, plan.yaml `resolved.left_out`). A plan that
# lists its methods runs what it lists.
IF_IT_FITS = ["instruction_search"]

# Prices the cost projection uses unless a plan says otherwise (USD). A 2-vCPU cloud VM is about
# $0.10/h, an H100 about $2.50/h on demand; API prices are a small hosted model's per-token list
# price. They are inputs, not measurements: put your own in `costs:`.
COSTS = {"cpu_hour_usd": 0.10, "gpu_hour_usd": 2.50,
         "api_usd_per_1m_input_tokens": 0.15, "api_usd_per_1m_output_tokens": 0.60,
         "queries_per_day": 10_000}

DATA_KEYS = ("train", "test", "val", "text_field", "label_field", "input_field", "target_field",
             "kind", "description", "verbalizer", "variant_field")
SHARED = {"train": ("epochs", "batch_size", "refit"),
          "data": ("variant_field",)}  # -> methods' options
TREE = {  # every key a plan may hold, and its default
    "task": None, "data": {k: None for k in DATA_KEYS}, "model": "smollm2-135m",
    "dtype": "float32", "seeds": 3, "budget_minutes": 30,
    # epochs: early stopping's cap; lr_search: try three lrs (auto | true | false); refit: on
    # every row after the choice (auto | true | false); auto: where the budget allows
    # (compare/budget.py's protocol ladder)
    "train": {"k": AUTO, "curve": AUTO, "epochs": AUTO, "batch_size": None,
              "lr_search": AUTO, "refit": AUTO},
    # tie_level: a method ties the best unless the best wins in this share of paired resamples
    "eval": {"max_test": AUTO, "sensitivity": AUTO, "train_score": True, "metric": None,
             "tie_level": 0.95},
    "costs": dict(COSTS), "methods": DEFAULT_METHODS + IF_IT_FITS,
    # model: URL#NAME (an OpenAI-compatible endpoint): the key's variable, hard caps, requests
    # in flight, and the scoring tier (auto: the best the endpoint offers; models/remote.py)
    "api": {"key_env": None, "max_usd": None, "max_calls": None, "concurrency": 4,
            "tier": "auto"},
}


@dataclass
class MethodEntry:
    method: str
    config: dict = field(default_factory=dict)  # only what differs from the method's defaults


@dataclass
class Plan:
    tree: dict  # the checked tree, `auto` values still in it
    methods: list[MethodEntry]
    source: str = "default plan"
    optional: list[str] = field(default_factory=list)  # IF_IT_FITS, where the default lists them

    def get(self, dotted: str):
        node = self.tree
        for part in dotted.split("."):
            node = node[part]
        return node

    @property
    def seeds(self) -> list[int]:
        seeds = self.tree["seeds"]
        return list(range(seeds)) if isinstance(seeds, int) else list(seeds)

    def to_dict(self) -> dict:
        tree = copy.deepcopy(self.tree)
        tree["methods"] = [{m.method: m.config} if m.config else m.method for m in self.methods]
        return tree


def default_plan(overrides: list[str] = (), values: dict | None = None) -> Plan:
    return build_plan({}, overrides, "default plan", values)


def load_plan(path: str | Path, overrides: list[str] = (), values: dict | None = None) -> Plan:
    path = Path(path)
    if not path.is_file():
        raise TailorError(f"plan {path} not found; the examples are in configs/examples/")
    try:
        raw = read_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" line {where.line + 1}" if where else ""
        raise TailorError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise TailorError(f"{path}: a plan is a mapping (task:, methods:, ...), not "
                          f"{type(raw).__name__}")
    return build_plan(raw, overrides, str(path), values)


def build_plan(raw: dict, overrides: list[str], source: str, values: dict | None = None) -> Plan:
    """`raw` (a plan file's mapping), then `values` ({dotted key: typed value}), then the text
    `overrides` (KEY=VALUE); within each, a method's options after the method list they refer to."""
    tree = _merge(copy.deepcopy(TREE), raw, "")
    items = list((values or {}).items()) + [parse_override(item) for item in overrides]
    for key, value, _ in sorted(((k, v, _is_option(k)) for k, v in items), key=lambda x: x[2]):
        _set(tree, key, value)
    methods = [_entry(m, source) for m in tree["methods"]]
    if not methods:
        raise TailorError(f"{source}: methods: is empty; list at least one method")
    names = [m.method for m in methods]
    if len(set(names)) != len(names):
        raise TailorError(f"{source}: a method is listed twice ({', '.join(names)}); give one "
                          "entry per method")
    listed = "methods" in raw or any(key == "methods" for key, _ in items)
    optional = [] if listed else [m for m in IF_IT_FITS if m in names]
    plan = Plan(tree, methods, source, optional)
    check(plan)
    return plan


def prompt_only(plan: Plan) -> tuple[Plan, list[str]]:
    """The plan with only its text-prompt methods (family "prompt": they need no weights, so
    they work against a model behind an API), and the names it dropped."""
    from tailorlm.methods import METHODS, get_method

    kept = [m for m in plan.methods if get_method(m.method).family == "prompt"]
    dropped = [m.method for m in plan.methods if m not in kept]
    if not kept:
        usable = sorted(n for n, spec in METHODS.items() if spec.family == "prompt")
        raise TailorError(f"--api-only: none of this plan's methods ({', '.join(dropped)}) works "
                          f"through an API; add a prompt method ({', '.join(usable)})")
    slim = Plan(dict(plan.tree), kept, plan.source,
                [m for m in plan.optional if m in {e.method for e in kept}])
    slim.tree["methods"] = slim.to_dict()["methods"]
    return slim, dropped


def check(plan: Plan) -> None:
    """Values a plan can get wrong, each with how to fix it; methods' options are checked too."""
    from tailorlm.methods import get_method

    t, src = plan.tree, plan.source
    seeds = t["seeds"]
    if isinstance(seeds, bool) or not (
            (isinstance(seeds, int) and seeds >= 1)
            or (isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds))):
        raise TailorError(f"{src}: seeds is a count (3) or a list of whole numbers ([0, 1, 2]), "
                          f"not {seeds!r}")
    _positive(t["budget_minutes"], "budget_minutes", src, number=True)
    for key in ("k", "epochs", "batch_size"):
        if t["train"][key] not in (AUTO, None):
            _positive(t["train"][key], f"train.{key}", src)
    for key in ("lr_search", "refit"):
        if t["train"][key] not in (AUTO, True, False):
            raise TailorError(f"{src}: train.{key} is auto (where the budget allows), true or "
                              f"false, not {t['train'][key]!r}")
    curve = t["train"]["curve"]
    if curve != AUTO and not (isinstance(curve, list) and all(
            isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in curve)):
        raise TailorError(f"{src}: train.curve is auto or a list of k values ([4, 16, 64]; [] for "
                          f"none), not {curve!r}")
    for key in ("max_test", "sensitivity"):
        value = t["eval"][key]
        if value not in (AUTO, None) and not (isinstance(value, int) and value >= 0):
            raise TailorError(f"{src}: eval.{key} is auto, null (all) or a count, not {value!r}")
    level = t["eval"]["tie_level"]
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise TailorError(f"{src}: eval.tie_level is a share of resamples between 0 and 1 "
                          f"(0.95), not {level!r}")
    check_metric(plan, t["data"]["kind"])
    for key, value in t["costs"].items():
        _positive(value, f"costs.{key}", src, number=True, zero=True)
    variant_field = t["data"]["variant_field"]
    if variant_field is not None and not any(
            get_method(m.method).reads_variants for m in plan.methods):
        raise TailorError(f"{src}: data.variant_field (--variant-field) splits the rows for a "
                          f"hybrid's input side, and this plan has no hybrid "
                          f"({', '.join(m.method for m in plan.methods)}): add one, e.g. "
                          "lora+soft_prompt, or drop it")
    for entry in plan.methods:
        spec = get_method(entry.method)
        try:
            spec.config.from_dict(method_config(plan, entry))
        except TailorError as e:
            raise TailorError(f"{src}: methods.{entry.method}: {e}") from None


def check_metric(plan: Plan, kind: str | None) -> None:
    """eval.metric is a metric's name, of the task's kind when the kind is known."""
    if plan.tree["eval"]["metric"] is not None:
        try:
            check_metric_name(plan.tree["eval"]["metric"], kind, "eval.metric")
        except TailorError as e:
            raise TailorError(f"{plan.source}: {e}") from None


def check_metric_name(name: str, kind: str | None, what: str = "--metric") -> None:
    """`name` is a metric (engine/metrics.py) that scores `kind` tasks (any kind when None)."""
    from tailorlm.engine.metrics import METRICS

    kinds = {k: [m for m, metric in METRICS.items() if metric.kind == k]
             for k in ("classification", "generation")}
    if kind in kinds and name in METRICS and METRICS[name].kind != kind:
        raise TailorError(f"{what} {name!r} scores {METRICS[name].kind}, and this is a {kind} "
                          f"task; valid: {', '.join(kinds[kind])}")
    if kind in kinds and name not in METRICS:
        raise TailorError(f"unknown {what} {name!r}; valid for {kind}: {', '.join(kinds[kind])}")
    if name not in METRICS:
        raise TailorError(f"unknown {what} {name!r}; valid: "
                          + "; ".join(f"{', '.join(v)} ({k})" for k, v in kinds.items()))


def check_data(plan: Plan) -> None:
    """A plan may leave the data to the command line; running one needs it."""
    t = plan.tree
    if not t["task"] and not (t["data"]["train"] and t["data"]["test"]):
        raise TailorError(f"{plan.source}: say which data: task: NAME (built-in), or data: "
                          "{train: FILE, test: FILE} (or --task / --train --test)")


def method_config(plan: Plan, entry: MethodEntry) -> dict:
    """The entry's options over the plan's shared options (`SHARED`), for methods that have them."""
    from tailorlm.methods import get_method

    spec = get_method(entry.method)
    shared = {k: v for group, keys in SHARED.items() for k, v in plan.tree[group].items()
              if k in keys and v not in (AUTO, None)}
    names = spec.config.option_names()  # a hybrid's: each side's (it hands them on)
    return {**{k: v for k, v in shared.items() if k in names}, **entry.config}


def _entry(item, source: str) -> MethodEntry:
    if isinstance(item, str):
        return MethodEntry(item.strip())
    if isinstance(item, dict) and len(item) == 1:
        (name, config), = item.items()
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise TailorError(f"{source}: methods.{name}: options are a mapping "
                              f"({{r: 16}}), not {config!r}")
        return MethodEntry(str(name), dict(config))
    raise TailorError(f"{source}: each methods: entry is a name (lora) or one name with its "
                      f"options ({{lora: {{r: 16}}}}), not {item!r}")


def _merge(tree: dict, raw: dict, where: str) -> dict:
    for key, value in raw.items():
        path = f"{where}{key}"
        if key not in tree:
            raise TailorError(f"unknown plan key {path!r}; valid keys here: "
                              f"{', '.join(sorted(tree))}")
        if key == "costs" and isinstance(value, dict):
            unknown = sorted(set(value) - set(COSTS))
            if unknown:
                raise TailorError(f"unknown cost {unknown[0]!r}; valid: {', '.join(COSTS)}")
        if isinstance(tree[key], dict) and key != "costs":
            if not isinstance(value, dict):
                raise TailorError(f"plan key {path!r} is a mapping (keys: "
                                  f"{', '.join(sorted(tree[key]))}), not {value!r}")
            _merge(tree[key], value, path + ".")
        elif isinstance(tree[key], dict):
            tree[key].update(value)
        else:
            tree[key] = value
    return tree


def parse_override(item: str) -> tuple[str, object]:
    """`a.b=VALUE` -> ("a.b", VALUE read as YAML: 64 -> int, null -> None, [4, 16] -> list)."""
    key, eq, text = item.partition("=")
    if not (eq and key):
        raise TailorError(f"override {item!r}: write KEY=VALUE, e.g. train.k=64 or seeds=3")
    try:
        return key, read_yaml(text)
    except yaml.YAMLError:
        return key, text


def _is_option(key: str) -> bool:
    return key.startswith("methods.")


def _set(tree: dict, key: str, value) -> None:
    """One typed value at a dotted key; `methods.NAME.OPTION` into that method's entry."""
    parts = key.split(".")
    if parts[0] == "methods" and len(parts) >= 3:
        name, option = parts[1], ".".join(parts[2:])
        for i, m in enumerate(tree["methods"]):
            entry = m if isinstance(m, dict) else {m: {}}
            if name in entry:
                tree["methods"][i] = {name: {**(entry[name] or {}), option: value}}
                return
        names = [m if isinstance(m, str) else next(iter(m), "?") for m in tree["methods"]]
        raise TailorError(f"{key}={value!r}: {name} is not among this plan's methods "
                          f"({', '.join(map(str, names))}); add it (--methods, or methods: in "
                          "the plan) or drop the option")
    if parts[0] == "methods" and len(parts) == 2:
        raise TailorError(f"override {key!r}: a method option is methods.METHOD.OPTION (e.g. "
                          "methods.lora.r=16)")
    if key == "methods":
        value = [m.strip() for m in value.split(",")] if isinstance(value, str) else value
        if isinstance(value, list):  # a name keeps the options the plan gave that method
            given = {next(iter(m)): m for m in tree["methods"] if isinstance(m, dict) and m}
            value = [given.get(m, m) if isinstance(m, str) else m for m in value]
    nested = value
    for part in reversed(parts[1:]):
        nested = {part: nested}
    _merge(tree, {parts[0]: nested}, "")


def _positive(value, name: str, src: str, *, number: bool = False, zero: bool = False) -> None:
    kinds = (int, float) if number else (int,)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and (
        value >= 0 if zero else value > 0)
    if not ok:
        what = "a number" if number else "a whole number"
        raise TailorError(f"{src}: {name} must be {what} {'>= 0' if zero else '> 0'}, "
                          f"not {value!r}")

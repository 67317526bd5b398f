"""A comparison plan: the shared protocol, and the methods with only what differs for each.

    task: support_routing            # or data: {train: ..., test: ..., val: ...} (+ field names)
    model: smollm2-135m              # or URL#NAME: an OpenAI-compatible endpoint (api: below)
    seeds: 3                         # a count (0, 1, 2) or a list
    budget_minutes: 30               # auto values are sized to it; the runner keeps to it
    train: {k: auto, curve: auto, epochs: auto}   # shared by every method that has the option
    eval: {max_test: auto, sensitivity: auto, metric: null}
    costs: {cpu_hour_usd: 0.10, ...} # prices for the cost projection (defaults: COSTS)
    methods:
      - prompt_template
      - lora: {r: 16}                # diff-only: the method's own defaults for the rest

Overrides on the command line are dotted paths into the same tree, values read as YAML:
`train.k=64 seeds=3 eval.max_test=null methods.lora.r=16`. Every key is checked against the
tree, so a typo says which keys exist instead of being ignored.

`auto` values are resolved against the data and the machine by `compare/budget.py` once the
model is loaded; `load_plan` only reads and checks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tailorlm.errors import TailorError

AUTO = "auto"
DEFAULT_METHODS = ["prompt_template", "few_shot", "soft_prompt", "lora", "full",
                   "lora+soft_prompt"]  # every family: prompt, soft prompt, fine tuning, hybrid

# Prices the cost projection uses unless a plan says otherwise (USD). A 2-vCPU cloud VM is about
# $0.10/h, an H100 about $2.50/h on demand; API prices are a small hosted model's per-token list
# price. They are inputs, not measurements: put your own in `costs:`.
COSTS = {"cpu_hour_usd": 0.10, "gpu_hour_usd": 2.50,
         "api_usd_per_1m_input_tokens": 0.15, "api_usd_per_1m_output_tokens": 0.60,
         "queries_per_day": 10_000}

DATA_KEYS = ("train", "test", "val", "text_field", "label_field", "input_field", "target_field",
             "kind", "description", "verbalizer")
TREE = {  # every key a plan may hold, and its default
    "task": None, "data": {k: None for k in DATA_KEYS}, "model": "smollm2-135m",
    "dtype": "float32", "seeds": 3, "budget_minutes": 30,
    "train": {"k": AUTO, "curve": AUTO, "epochs": AUTO, "batch_size": None},
    "eval": {"max_test": AUTO, "sensitivity": AUTO, "train_score": True, "metric": None},
    "costs": dict(COSTS), "methods": list(DEFAULT_METHODS),
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


def default_plan(overrides: list[str] = ()) -> Plan:
    return build_plan({}, overrides, "default plan")


def load_plan(path: str | Path, overrides: list[str] = ()) -> Plan:
    path = Path(path)
    if not path.is_file():
        raise TailorError(f"plan {path} not found; the examples are in configs/examples/")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" line {where.line + 1}" if where else ""
        raise TailorError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise TailorError(f"{path}: a plan is a mapping (task:, methods:, ...), not "
                          f"{type(raw).__name__}")
    return build_plan(raw, overrides, str(path))


def build_plan(raw: dict, overrides: list[str], source: str) -> Plan:
    tree = _merge(copy.deepcopy(TREE), raw, "")
    for item in overrides:
        _override(tree, item)
    methods = [_entry(m, source) for m in tree["methods"]]
    if not methods:
        raise TailorError(f"{source}: methods: is empty; list at least one method")
    names = [m.method for m in methods]
    if len(set(names)) != len(names):
        raise TailorError(f"{source}: a method is listed twice ({', '.join(names)}); give one "
                          "entry per method")
    plan = Plan(tree, methods, source)
    check(plan)
    return plan


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
    curve = t["train"]["curve"]
    if curve != AUTO and not (isinstance(curve, list) and all(
            isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in curve)):
        raise TailorError(f"{src}: train.curve is auto or a list of k values ([4, 16, 64]; [] for "
                          f"none), not {curve!r}")
    for key in ("max_test", "sensitivity"):
        value = t["eval"][key]
        if value not in (AUTO, None) and not (isinstance(value, int) and value >= 0):
            raise TailorError(f"{src}: eval.{key} is auto, null (all) or a count, not {value!r}")
    for key, value in t["costs"].items():
        _positive(value, f"costs.{key}", src, number=True, zero=True)
    for entry in plan.methods:
        spec = get_method(entry.method)
        try:
            spec.config.from_dict(method_config(plan, entry))
        except TailorError as e:
            raise TailorError(f"{src}: methods.{entry.method}: {e}") from None


def check_data(plan: Plan) -> None:
    """A plan may leave the data to the command line; running one needs it."""
    t = plan.tree
    if not t["task"] and not (t["data"]["train"] and t["data"]["test"]):
        raise TailorError(f"{plan.source}: say which data: task: NAME (built-in), or data: "
                          "{train: FILE, test: FILE} (or --task / --train --test)")


def method_config(plan: Plan, entry: MethodEntry) -> dict:
    """The entry's options over the plan's shared training options (for methods that have them)."""
    import dataclasses

    from tailorlm.methods import get_method

    spec = get_method(entry.method)
    shared = {k: v for k, v in plan.tree["train"].items()
              if k in ("epochs", "batch_size") and v not in (AUTO, None)}
    if "+" in entry.method:  # a hybrid hands a bare option to each side that has it
        names = {f.name for side in (spec.config.weight_spec, spec.config.input_spec)
                 for f in dataclasses.fields(side.config)}
    else:
        names = {f.name for f in dataclasses.fields(spec.config)}
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


def _override(tree: dict, item: str) -> None:
    """`a.b=VALUE` into the tree; `methods.NAME.OPTION=VALUE` into that method's entry."""
    key, eq, text = item.partition("=")
    if not (eq and key):
        raise TailorError(f"override {item!r}: write KEY=VALUE, e.g. train.k=64 or seeds=3")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    parts = key.split(".")
    if parts[0] == "methods" and len(parts) >= 3:
        name, option = parts[1], ".".join(parts[2:])
        for i, m in enumerate(tree["methods"]):
            entry = m if isinstance(m, dict) else {m: {}}
            if name in entry:
                entry = {name: {**(entry[name] or {}), option: value}}
                tree["methods"][i] = entry
                return
        tree["methods"].append({name: {option: value}})
        return
    if parts[0] == "methods" and len(parts) == 1:
        value = [m.strip() for m in value.split(",")] if isinstance(value, str) else value
    nested: dict = value
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

"""What each method is and what its options do, read from the code that defines them.

`tailor methods [NAME]` prints this. Nothing here is a second copy that could drift:

    summary   the first paragraph of the method's module docstring (the module that defines fit)
    doc       the whole module docstring: what the method is, its formula, what it costs
    options   the config dataclass's fields, in order, each with
                default   the dataclass default (or what its default_factory makes)
                help      `field(metadata={"help": ...})` where given, else the comment on the
                          field's line, else the comment lines just above it; a subclass's field
                          without either keeps its base class's (a method's own `lr` comment
                          explains its default, TrainFields says what the option is)

A hybrid WEIGHT+INPUT has `variant_field` and its two sides' options, as `weight.OPTION` and
`input.OPTION` (the names `--set lora+soft_prompt.weight.r=16` takes).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import sys
import textwrap
import tokenize
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tailorlm.methods.index import METHODS, get_method


@dataclass(frozen=True)
class Option:
    name: str
    default: Any
    help: str
    owner: type  # the config class that declares it: the method's own, or a shared base


@dataclass(frozen=True)
class MethodInfo:
    name: str
    family: str  # prompt | soft prompt | fine tuning | hybrid (MethodSpec.family)
    side: str  # input | weight
    trains: bool  # False: nothing is trained (train_cost 0): choices on validation data only
    summary: str
    doc: str
    options: list[Option]


def describe(name: str) -> MethodInfo:
    """Everything `tailor methods NAME` shows about one method (or hybrid)."""
    spec = get_method(name)
    doc = inspect.cleandoc(sys.modules[spec.fit.__module__].__doc__ or "")
    summary = " ".join(doc.split("\n\n")[0].split())
    if summary.startswith(f"{name}: "):
        summary = summary[len(name) + 2:]
    if spec.family == "hybrid":
        config = spec.config
        own = [o for o in options(config) if o.name not in ("weight", "input")]
        sides = [dataclasses.replace(o, name=f"{side}.{o.name}")
                 for side, sub in (("weight", config.weight_spec), ("input", config.input_spec))
                 for o in options(sub.config)]
        opts = own + sides
    else:
        opts = options(spec.config)
    return MethodInfo(name, spec.family, spec.side, spec.train_cost > 0, summary, doc, opts)


def describe_all() -> list[MethodInfo]:
    """Every registered method: prompt methods first, then by how much of the model they change;
    within a family in the order the index registered them."""
    order = {"prompt": 0, "soft prompt": 1, "fine tuning": 2, "hybrid": 3}
    return [describe(n) for n in sorted(METHODS, key=lambda n: order.get(METHODS[n].family, 9))]


def options(config: type) -> list[Option]:
    """A config dataclass's options with their defaults and help."""
    helps = field_help(config)
    owners = {}
    for klass in reversed(config.__mro__):
        owners.update({name: klass for name in vars(klass).get("__annotations__", {})})
    out = []
    for f in dataclasses.fields(config):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        out.append(Option(f.name, default, f.metadata.get("help") or helps.get(f.name, ""),
                          owners.get(f.name, config)))
    return out


def field_help(config: type) -> dict[str, str]:
    """{field: its comment} over the class and its bases; the subclass's comment wins."""
    helps: dict[str, str] = {}
    for klass in reversed(config.__mro__):
        if dataclasses.is_dataclass(klass):
            helps.update({k: v for k, v in _class_comments(klass).items() if v})
    return helps


@lru_cache(maxsize=None)
def _class_comments(klass: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(klass))
    except (OSError, TypeError):  # a class made at run time (a hybrid's config) has no source
        return {}
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}
    lines = source.splitlines()
    body = ast.parse(source).body[0].body
    found = {}
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        text = comments.get(node.end_lineno, "")
        if not text:  # the comment block just above the field
            above, line = [], node.lineno - 1
            while line >= 1 and line in comments and lines[line - 1].lstrip().startswith("#"):
                above.insert(0, comments[line])
                line -= 1
            text = " ".join(above)
        found[node.target.id] = text
    return found

"""`tailor compare`: run methods side by side on your data and print quality next to cost."""

from __future__ import annotations

import sys
import time

import yaml

from tailorlm.cli.common import add_field_args, config_options, load_like, load_train

DEFAULT_METHODS = "prompt_template,few_shot"


def add_parser(commands) -> None:
    p = commands.add_parser(
        "compare", help="run methods side by side on a task",
        description="Fit each method on the training data (k per class if --k), evaluate on the "
        "test data, print a table and append one row per run to OUT/results.jsonl.")
    data = p.add_argument_group("data")
    data.add_argument("--task", help="a built-in task instead of --train/--test "
                      "(e.g. support_routing)")
    data.add_argument("--train", help="training file: .jsonl, .csv, .tsv, .parquet or hf:NAME:split")
    data.add_argument("--test", help="test file, same format")
    data.add_argument("--val", help="validation file for choices (default: carved from --train)")
    add_field_args(data)
    data.add_argument("--max-test", type=int, help="evaluate on the first N test rows only")
    run = p.add_argument_group("runs")
    run.add_argument("--model", default=None, help="catalog name, folder or hub id "
                     "(default smollm2-135m)")
    run.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"])
    run.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated method names")
    run.add_argument("--k", type=int, help="training examples per class (seeded by --seed)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--metric", help="accuracy, macro_f1, exact_match, rouge_l or chrf")
    run.add_argument("--set", action="append", default=[], metavar="METHOD.OPTION=VALUE",
                     help="a method option, e.g. few_shot.n_demos=8 (value parsed as YAML); "
                     "a hybrid's side: lora+soft_prompt.input.n_virtual=10")
    run.add_argument("--variant-field", help="hybrids (WEIGHT+INPUT): the column that names a "
                     "row's variant (e.g. client); one input side is fitted per value")
    p.add_argument("--out", required=True, help="folder for results.jsonl and adapters")
    p.set_defaults(run=run_command)


def method_configs(methods: list[str], settings: list[str]) -> dict[str, dict]:
    from tailorlm.errors import TailorError

    configs: dict[str, dict] = {m: {} for m in methods}
    for item in settings:
        key, eq, value = item.partition("=")
        method, dot, option = key.partition(".")
        if not (eq and dot and option):
            raise TailorError(f"--set {item!r}: write METHOD.OPTION=VALUE, e.g. few_shot.n_demos=8")
        if method not in configs:
            raise TailorError(f"--set {item!r}: {method!r} is not among --methods")
        configs[method][option] = yaml.safe_load(value)
    return configs


def load_data(args):
    from tailorlm.data.load import load_builtin_task
    from tailorlm.errors import TailorError

    if args.task:
        train, test = load_builtin_task(args.task)
        return train, test, None
    if not (args.train and args.test):
        raise TailorError("give --train and --test files, or a built-in --task")
    train = load_train(args.train, args)
    same = dict(kind=train.kind, labels=train.labels, verbalizer=train.verbalizer)
    test = load_like(args.test, args, **same)
    val = load_like(args.val, args, **same) if args.val else None
    return train, test, val


def run_command(args) -> int:
    from tailorlm.compare.report import table
    from tailorlm.compare.runner import Run, run_comparison
    from tailorlm.methods import get_method
    from tailorlm.models import DEFAULT_MODEL, load_backend

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    configs = method_configs(methods, args.set)
    for m in methods:  # every name and option checked before anything slow happens
        spec = get_method(m)
        if args.variant_field and "variant_field" in config_options(spec):
            configs[m].setdefault("variant_field", args.variant_field)
        spec.config.from_dict(configs[m])
    train, test, val = load_data(args)
    if args.max_test:
        test = test.with_examples(test.examples[:args.max_test])
    started = time.perf_counter()
    backend = load_backend(args.model or DEFAULT_MODEL, dtype=args.dtype)
    runs = [Run(m, configs[m], seed=args.seed, k=args.k) for m in methods]
    rows = run_comparison(backend, train, test, runs, args.out, metric=args.metric, val=val,
                          on_event=_progress(started))
    print(table(rows))
    print(f"results: {args.out}/results.jsonl")
    return 0


def _progress(started: float):
    def on_event(kind, i, n, run, row):
        elapsed = time.perf_counter() - started
        if kind == "start":
            print(f"[{i + 1}/{n}] {run.method}: fitting and evaluating ({elapsed:.0f}s elapsed)",
                  file=sys.stderr, flush=True)
        elif kind == "skip":
            print(f"[{i + 1}/{n}] {run.method}: already in results.jsonl, skipped",
                  file=sys.stderr, flush=True)
        else:
            print(f"[{i + 1}/{n}] {run.method}: {row['metric']} {row['score']:.3f} "
                  f"(fit {row['fit_seconds']:.0f}s, eval {row['eval_seconds']:.0f}s)",
                  file=sys.stderr, flush=True)
    return on_event



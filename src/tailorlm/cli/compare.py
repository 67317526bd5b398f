"""`tailor compare` and `tailor recommend`: the bake-off, and its answer under your constraints.

    tailor compare --train T.jsonl --test E.jsonl                     the default plan
    tailor compare --plan configs/examples/support_compare.yaml train.k=64 seeds=3
    tailor compare ... --api-only --max-train-minutes 10 --queries-per-day 50000
    tailor compare --endpoint http://127.0.0.1:8080/v1 --model gpt-small --api-key-env MY_KEY ...
    tailor recommend runs/sst2 --max-latency-ms 50                   no re-running

Flags are shorthands for plan keys (--k is train.k, --methods is methods, ...); they and the
KEY=VALUE overrides apply on top of --plan, or of the default plan.
"""

from __future__ import annotations

import sys
import time

from tailorlm.cli.common import add_field_args, parse_verbalizer


def add_parser(commands) -> None:
    p = commands.add_parser(
        "compare", help="run methods side by side on a task and recommend one",
        description="Run a comparison plan (default: every method family, sized to "
        "--budget-minutes), append each run to OUT/results.jsonl (an interrupted comparison "
        "resumes), and write OUT/report.{md,json,html} with the recommendation.")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="plan overrides, e.g. train.k=64 seeds=3 methods.lora.r=16")
    p.add_argument("--plan", help="a YAML plan (examples in configs/examples/)")
    data = p.add_argument_group("data (plan keys task, data.*)")
    data.add_argument("--task", help="a built-in task instead of --train/--test "
                      "(e.g. support_routing)")
    data.add_argument("--train", help="training file: .jsonl, .csv, .tsv, .parquet or "
                      "hf:NAME:split")
    data.add_argument("--test", help="test file, same format")
    data.add_argument("--val", help="validation file for choices (default: carved from --train)")
    add_field_args(data)
    run = p.add_argument_group("runs (plan keys)")
    run.add_argument("--model", help="catalog name, folder or hub id (default smollm2-135m)")
    run.add_argument("--dtype", choices=["float32", "bfloat16", "auto"])
    api = p.add_argument_group("a model behind an OpenAI-compatible API (plan keys model, api.*)")
    api.add_argument("--endpoint", help="the API's base URL (ending in /v1); --model is then the "
                     "endpoint's model name, and only text-prompt methods run")
    api.add_argument("--api-key-env", help="the environment variable that holds the API key")
    api.add_argument("--max-api-usd", type=float, help="stop calling the API past this spend")
    api.add_argument("--max-api-calls", type=int, help="stop calling the API past this many calls")
    run.add_argument("--methods", help="comma-separated method names (default: every family)")
    run.add_argument("--k", type=int, help="training examples per class (train.k)")
    run.add_argument("--curve", help="k values of the data-efficiency curve, e.g. 4,16,64; "
                     "none for no curve (train.curve)")
    run.add_argument("--seeds", type=int, help="number of seeds (seeds)")
    run.add_argument("--seed", type=int, help="one seed only (seeds: [SEED])")
    run.add_argument("--max-test", type=int, help="test rows, a stratified sample "
                     "(eval.max_test)")
    run.add_argument("--metric", help="classification: accuracy, macro_f1; generation: "
                     "exact_match, rouge_l, chrf (eval.metric)")
    run.add_argument("--budget-minutes", type=float, help="time budget the plan is sized to "
                     "(default 30)")
    run.add_argument("--set", action="append", default=[], metavar="METHOD.OPTION=VALUE",
                     help="an option of a method in the plan, e.g. few_shot.n_demos=8 (value "
                     "parsed as YAML; `tailor methods` lists them)")
    run.add_argument("--variant-field", help="hybrids (WEIGHT+INPUT): the column that names a "
                     "row's variant (e.g. client); one input side is fitted per value "
                     "(data.variant_field; refused when the plan has no hybrid)")
    add_constraint_args(p)
    p.add_argument("--out", required=True, help="folder for results.jsonl, adapters and reports")
    p.add_argument("--register", metavar="NAME", help="push the recommended adapter to the "
                   "registry as NAME:N with alias candidate")
    p.set_defaults(run=run_command)

    r = commands.add_parser(
        "recommend", help="re-read a finished comparison under new constraints",
        description="Rebuild OUT/report.{md,json,html} and the recommendation from the stored "
        "results, without running anything.")
    r.add_argument("out", help="a comparison folder (holds results.jsonl)")
    r.add_argument("--screenshot", metavar="PNG", help="also render report.html to a PNG with "
                   "headless Chromium")
    add_constraint_args(r)
    r.set_defaults(run=recommend_command)


def add_constraint_args(p) -> None:
    c = p.add_argument_group("constraints for the recommendation")
    c.add_argument("--api-only", action="store_true", help="the model is reached through an "
                   "API: only text prompts count (compare runs only the prompt methods)")
    c.add_argument("--sensitive-data", action="store_true", help="data may not leave this "
                   "machine: no remote endpoints")
    c.add_argument("--max-train-minutes", type=float)
    c.add_argument("--max-latency-ms", type=float, help="per query")
    c.add_argument("--max-memory-mb", type=float, help="peak memory of fit or evaluation")
    c.add_argument("--max-monthly-usd", type=float, help="fit + 30 days of queries")
    c.add_argument("--queries-per-day", type=float, help="query volume for the cost projection "
                   "(default 10,000)")


def constraints(args):
    from tailorlm.compare.recommend import Constraints

    return Constraints(api_only=args.api_only, sensitive_data=args.sensitive_data,
                       max_train_minutes=args.max_train_minutes,
                       max_latency_ms=args.max_latency_ms, max_memory_mb=args.max_memory_mb,
                       max_monthly_usd=args.max_monthly_usd,
                       queries_per_day=args.queries_per_day)


# flag -> plan key, for the flags whose value is the key's value as it is
FLAG_KEYS = {"task": "task", "train": "data.train", "test": "data.test", "val": "data.val",
             "text_field": "data.text_field", "label_field": "data.label_field",
             "input_field": "data.input_field", "target_field": "data.target_field",
             "kind": "data.kind", "variant_field": "data.variant_field", "model": "model",
             "dtype": "dtype", "k": "train.k", "seeds": "seeds", "max_test": "eval.max_test",
             "metric": "eval.metric", "budget_minutes": "budget_minutes"}


def flag_values(args) -> dict:
    """The flags given, as typed plan values ({dotted key: value})."""
    from tailorlm.errors import TailorError

    values = {key: getattr(args, attr) for attr, key in FLAG_KEYS.items()
              if getattr(args, attr) is not None}
    if args.description:
        values["data.description"] = args.description
    if args.verbalizer:
        values["data.verbalizer"] = parse_verbalizer(args.verbalizer)
    if args.seed is not None:
        values["seeds"] = [args.seed]
    if args.curve is not None:
        values["train.curve"] = _curve(args.curve)
    if args.methods:
        values["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if getattr(args, "endpoint", None):  # the model behind an OpenAI-compatible API: URL#NAME
        if not args.model:
            raise TailorError("--endpoint needs --model: the model name the endpoint serves")
        values["model"] = args.endpoint.rstrip("/") + "#" + args.model
    for attr, key in (("api_key_env", "api.key_env"), ("max_api_usd", "api.max_usd"),
                      ("max_api_calls", "api.max_calls")):
        if getattr(args, attr, None) is not None:
            values[key] = getattr(args, attr)
    return values


def set_overrides(items: list[str]) -> list[str]:
    """`--set METHOD.OPTION=VALUE` as the plan override `methods.METHOD.OPTION=VALUE`."""
    from tailorlm.errors import TailorError

    out = []
    for item in items:
        key, eq, _ = item.partition("=")
        method, dot, option = key.partition(".")
        if not (eq and method and dot and option):
            raise TailorError(f"--set {item!r}: write METHOD.OPTION=VALUE, e.g. few_shot.n_demos=8")
        out.append(f"methods.{item}")
    return out


def _curve(text: str) -> list[int]:
    from tailorlm.errors import TailorError

    if text.strip().lower() in ("none", ""):
        return []
    try:
        return [int(k) for k in text.split(",")]
    except ValueError:
        raise TailorError(f"--curve {text!r}: k values separated by commas (4,16,64), or none"
                          ) from None


def build(args):
    """The plan the flags and overrides describe; --api-only keeps its prompt methods."""
    from tailorlm.compare.plan import default_plan, load_plan, prompt_only

    overrides = set_overrides(args.set) + list(args.overrides)
    values = flag_values(args)
    plan = load_plan(args.plan, overrides, values) if args.plan else default_plan(overrides, values)
    if args.api_only:
        plan, dropped = prompt_only(plan)
        kept = ", ".join(m.method for m in plan.methods)
        print(f"--api-only: running only the prompt methods ({kept})"
              + (f"; not {', '.join(dropped)}, which need the model's weights" if dropped else ""),
              file=sys.stderr, flush=True)
    return plan


def run_command(args) -> int:
    from tailorlm.compare.bakeoff import load_data, run_plan
    from tailorlm.compare.report import summary_table
    from tailorlm.compare.summary import write_reports

    if args.register:  # a bad name fails now, not after the comparison
        from tailorlm.registry.names import check_name

        check_name(args.register)
    plan = build(args)
    load_data(plan)  # a bad file or metric fails here, with its line, before the model loads
    run_plan(plan, args.out, on_event=_progress(time.perf_counter()),
             on_note=lambda line: print(line, file=sys.stderr, flush=True))
    summary = write_reports(args.out, constraints(args))  # the reports under these constraints
    print(summary_table(summary))
    print(f"reports: {args.out}/report.md, report.html, report.json; "
          f"results: {args.out}/results.jsonl")
    if args.register:
        from tailorlm.registry import register_comparison

        version = register_comparison(args.out, args.register)
        print(f"registered: {version.ref} ({version.method}) @candidate")
    return 0


def recommend_command(args) -> int:
    from tailorlm.compare.report import summary_table
    from tailorlm.compare.summary import write_reports

    summary = write_reports(args.out, constraints(args))
    print(summary_table(summary))
    print(f"reports rewritten: {args.out}/report.md, report.html, report.json")
    if args.screenshot:
        from pathlib import Path

        from tailorlm.compare.screenshot import screenshot

        print(f"screenshot: {screenshot(Path(args.out) / 'report.html', args.screenshot)}")
    return 0


def _progress(started: float):
    def on_event(kind, i, n, run, row, seconds_left):
        elapsed = time.perf_counter() - started
        left = f", about {seconds_left / 60:.0f} min left" if seconds_left else ""
        name = f"[{i + 1}/{n}] {run.method} k={run.k} seed {run.seed}"
        if kind == "start":
            line = f"{name}: fitting and evaluating ({elapsed / 60:.1f} min elapsed{left})"
        elif kind == "skip":
            line = f"{name}: already in results.jsonl, skipped"
        elif kind in ("budget", "failed"):
            line = f"{name}: skipped, {row['reason']}" if kind == "budget" else \
                f"{name}: {row['reason']} (traceback in errors.log; rerun to retry)"
        else:
            line = (f"{name}: {row['metric']} {row['score']:.3f} (fit {row['fit_seconds']:.0f}s, "
                    f"eval {row['eval_seconds']:.0f}s{left})")
        print(line, file=sys.stderr, flush=True)
    return on_event

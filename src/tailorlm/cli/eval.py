"""`tailor eval`: score a saved adapter on a test file, with its own base model."""

from __future__ import annotations

import json

from tailorlm.cli.common import add_field_args, load_like


def add_parser(commands) -> None:
    p = commands.add_parser(
        "eval", help="evaluate a saved adapter on a test file",
        description="Load the adapter and the base model named in its card, score it on the test "
        "file (read with the adapter's label set) and print the score and per-query cost.")
    p.add_argument("--adapter", required=True, help="an adapter folder (tailor tune --out, or "
                   "OUT/adapters/<run> of tailor compare, or a hybrid's part)")
    p.add_argument("--test", required=True, help="test file: .jsonl, .csv, .tsv, .parquet or "
                   "hf:NAME:split")
    add_field_args(p.add_argument_group("data"))
    p.add_argument("--model", help="the base model, if not where the adapter's card says")
    p.add_argument("--metric", help="accuracy, macro_f1, exact_match, rouge_l or chrf")
    p.add_argument("--seed", type=int, default=0, help="for the bootstrap confidence interval")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--predictions", metavar="FILE", help="also write one JSON line per test "
                   "row: id, input, gold, predicted (and per-label scores)")
    p.set_defaults(run=run)


def run(args) -> int:
    from tailorlm.compare.tune import eval_report, load_tuned
    from tailorlm.engine.evaluate import evaluate
    from tailorlm.errors import TailorError
    from tailorlm.methods.artifact import load_card

    try:
        task = load_card(args.adapter)["task"]
    except (OSError, ValueError, KeyError):
        raise TailorError(f"{args.adapter} is not an adapter folder written by tailor tune or "
                          f"tailor compare (no readable card.json with its task)") from None
    test = load_like(args.test, args, kind=task["kind"], labels=task["labels"],
                     verbalizer=task["verbalizer"])
    adapter, backend, _ = load_tuned(args.adapter, model=args.model)
    result = evaluate(backend, adapter, test, metric=args.metric, seed=args.seed)
    report = eval_report(adapter, backend, result, args.adapter)
    if args.predictions:
        from tailorlm.engine.predictions import write_predictions

        report["predictions"] = str(write_predictions(args.predictions, test, result))
    if args.json:
        print(json.dumps(report))
        return 0
    lo, hi = report["score_ci"]
    latency = (f"latency p50 {report['latency_ms_p50']:.1f} ms, p95 "
               f"{report['latency_ms_p95']:.1f} ms (one at a time), "
               if report["latency_ms_p50"] is not None else "")
    print(f"{report['method']}: {report['metric']} {report['score']:.3f} (95% CI {lo:.3f}-"
          f"{hi:.3f}) on {report['n_eval']} examples; {latency}"
          f"{report['queries_per_second']:.1f} queries/s at batch {report['eval_batch_size']}; "
          f"{report['prompt_tokens_per_query']:.0f} prompt tokens per query")
    for name, part in report.get("variants", {}).items():
        if "score" in part:
            print(f"  {name}: {report['metric']} {part['score']:.3f} on {part['n_eval']}")
    return 0

"""`tailor tune`: fit one method on your data and keep it as an adapter folder."""

from __future__ import annotations

from tailorlm.cli.common import (add_field_args, config_options, load_like, load_train, parse_set,
                                size_text)

# Flags every learning method takes, as config options; given ones override --set.
COMMON = ("epochs", "batch_size", "lr")


def add_parser(commands) -> None:
    p = commands.add_parser(
        "tune", help="fit one method and save it as an adapter",
        description="Fit a method (or a hybrid WEIGHT+INPUT, e.g. lora+soft_prompt) on the "
        "training data and save the adapter, with a card of its provenance and costs, to --out.")
    p.add_argument("--method", required=True, help="a method name, or WEIGHT+INPUT "
                   "(e.g. lora+soft_prompt: LoRA once, a soft prompt per --variant-field value)")
    p.add_argument("--model", default=None, help="catalog name, folder or hub id "
                   "(default smollm2-135m)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"])
    data = p.add_argument_group("data")
    data.add_argument("--train", required=True, help="training file: .jsonl, .csv, .tsv, "
                      ".parquet or hf:NAME:split")
    data.add_argument("--val", help="validation file: early stopping, choices, and the card's "
                      "metrics (default: carved from --train, and no metrics)")
    add_field_args(data)
    data.add_argument("--variant-field", help="hybrids: the column that names a row's variant "
                      "(e.g. client); one input side is fitted per value")
    fit = p.add_argument_group("fit")
    fit.add_argument("--epochs", type=int)
    fit.add_argument("--batch-size", type=int)
    fit.add_argument("--lr", type=float)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--resume", action="store_true", help="continue from the checkpoints in "
                     "OUT/.work (after a finished fit: train nothing, write the adapter again)")
    fit.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                     help="a method option, e.g. r=16 (value parsed as YAML); a hybrid's side: "
                     "weight.r=16, input.n_virtual=10")
    p.add_argument("--metric", help="for the validation score: accuracy, macro_f1, exact_match, "
                   "rouge_l or chrf")
    p.add_argument("--out", required=True, help="the adapter folder to write")
    p.set_defaults(run=run)


def run(args) -> int:
    from tailorlm.compare.plan import check_metric_name
    from tailorlm.compare.tune import tune
    from tailorlm.errors import TailorError
    from tailorlm.methods import get_method
    from tailorlm.models import DEFAULT_MODEL, load_backend

    spec = get_method(args.method)
    options = dict(parse_set(item) for item in args.set)
    options.update({k: getattr(args, k) for k in COMMON if getattr(args, k) is not None})
    if args.variant_field:
        if "variant_field" not in config_options(spec):
            raise TailorError(f"--variant-field splits the data for a hybrid's input side; "
                              f"{args.method} is not a hybrid: use e.g. {args.method}+soft_prompt"
                              f" or lora+{args.method}")
        options["variant_field"] = args.variant_field
    spec.config.from_dict(options)  # options and data are checked before the model loads
    train = load_train(args.train, args)
    val = load_like(args.val, args, kind=train.kind, labels=train.labels,
                    verbalizer=train.verbalizer) if args.val else None
    if args.metric:
        check_metric_name(args.metric, train.kind)
    model = args.model or DEFAULT_MODEL
    backend = load_backend(model, dtype=args.dtype)
    tuned = tune(backend, args.method, train, args.out, val=val, config=options, seed=args.seed,
                 resume=args.resume, model=model, metric=args.metric)
    costs = tuned.card["costs"]
    quality = "".join(f", val {k} {v:.3f}" for k, v in tuned.card["metrics"].items()
                      if not k.endswith("_ci"))
    variants = (f", {costs['n_variants']} variants (+1 costs {costs['add_variant_seconds']:.1f}s,"
                f" {size_text(costs['add_variant_bytes'])}; one LoRA per variant "
                f"{size_text(costs['one_lora_per_variant_bytes'])})" if "n_variants" in costs else "")
    print(f"{args.method} -> {args.out}: fit {costs['fit_seconds']:.1f}s, "
          f"{costs['trainable_params']:,} trainable params, {size_text(tuned.artifact_bytes)}"
          f"{quality}{variants}")
    return 0


"""`tailor upgrade`: re-run a registered version's recipe on a new base model, and compare.

    tailor upgrade support-router@production --base gemma3-270m
    tailor upgrade support-router --all-aliases --base gemma3-270m --alias candidate

The new version is pushed with the old one as its parent; no alias moves unless --alias names
one. The before/after report is printed and written to OUT/upgrade.{md,json}.
"""

from __future__ import annotations

from tailorlm.cli.common import add_field_args


def add_parser(commands) -> None:
    p = commands.add_parser(
        "upgrade", help="re-fit a registered version on a new base model and compare",
        description="Re-run a version's recipe (method, config, seed, k) on --base with the data "
        "it was fitted on (kept in the registry, or --train/--test again), score old and new on "
        "the same test rows, and register the new version with the old one as its parent.")
    p.add_argument("ref", help="NAME@ALIAS, NAME:VERSION, NAME (latest), or NAME with "
                   "--all-aliases")
    p.add_argument("--base", required=True, help="the new base model (catalog name or folder)")
    p.add_argument("--all-aliases", action="store_true", help="every version an alias of NAME "
                   "points at")
    p.add_argument("--alias", help="point this alias at each new version (default: none moves)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"])
    p.add_argument("--out", help="folder for the new adapters and the report (default "
                   "$TAILORLM_HOME/upgrades/TIME)")
    data = p.add_argument_group("data, when the version keeps none")
    data.add_argument("--train", help="the training file the version was fitted from")
    data.add_argument("--test", help="test rows to score old and new on")
    add_field_args(data)
    p.add_argument("--registry", metavar="DIR", help="the registry folder (default: "
                   "$TAILORLM_REGISTRY, else $TAILORLM_HOME/registry)")
    p.set_defaults(run=run)


def run(args) -> int:
    from tailorlm.cli.common import load_like, load_train
    from tailorlm.compare.upgrade import upgrade
    from tailorlm.registry import Registry

    train = load_train(args.train, args) if args.train else None
    test = None
    if args.test:
        test = load_like(args.test, args, kind=train.kind, labels=train.labels,
                         verbalizer=train.verbalizer) if train else load_train(args.test, args)
    with Registry(args.registry) as reg:
        report = upgrade(args.ref, args.base, registry=reg, all_aliases=args.all_aliases,
                         alias=args.alias, train=train, test=test, out=args.out,
                         dtype=args.dtype)
    from pathlib import Path

    print((Path(report["out"]) / "upgrade.md").read_text(encoding="utf-8"), end="")
    print(f"report: {report['out']}/upgrade.md, upgrade.json")
    return 0

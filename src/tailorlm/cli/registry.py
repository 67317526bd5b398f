"""`tailor registry`: versions, aliases, rollback, lineage; each subcommand one call to Registry.

    tailor registry push runs/t/adapters/lora-k16-s0 --name support-router --alias staging
    tailor registry list [NAME]
    tailor registry show support-router@production
    tailor registry alias support-router production 3 [--expect 2]
    tailor registry rollback support-router production
    tailor registry history support-router [--alias production]
    tailor registry diff support-router:2 support-router:3
    tailor registry export support-router@production DIR [--merged]
    tailor registry verify | gc

The store is TAILORLM_HOME/registry unless --registry DIR or TAILORLM_REGISTRY says otherwise.
"""

from __future__ import annotations

import json

from tailorlm.cli.common import size_text


def add_registry_arg(p) -> None:
    p.add_argument("--registry", metavar="DIR", help="the registry folder (default: "
                   "$TAILORLM_REGISTRY, else $TAILORLM_HOME/registry)")


def open_registry(args):
    from tailorlm.registry import Registry

    return Registry(args.registry)


def add_parser(commands) -> None:
    p = commands.add_parser("registry", help="versioned adapters: push, aliases, rollback, "
                            "lineage, export",
                            description="Keep adapters as immutable versions with aliases "
                            "(moved with compare-and-swap, every move logged), lineage, export.")
    sub = p.add_subparsers(dest="registry_command", required=True, metavar="SUBCOMMAND")

    s = sub.add_parser("push", help="store an adapter folder as a new version")
    s.add_argument("folder", help="an adapter folder (tailor tune --out, or OUT/adapters/RUN)")
    s.add_argument("--name", required=True, help="e.g. support-router")
    s.add_argument("--alias", help="also point this alias at the new version")
    s.add_argument("--parent", metavar="REF", help="the version this one was re-fitted from")
    s.add_argument("--reason", default="", help="why (kept in the alias log)")
    s.set_defaults(run=push)

    s = sub.add_parser("list", help="names, versions, aliases, method, score, size")
    s.add_argument("name", nargs="?")
    s.set_defaults(run=list_)

    s = sub.add_parser("show", help="a version's card, lineage, metrics, costs, files")
    s.add_argument("ref", help="NAME, NAME:VERSION or NAME@ALIAS")
    s.add_argument("--json", action="store_true", help="print it as JSON")
    s.set_defaults(run=show)

    s = sub.add_parser("alias", help="point an alias at a version (compare-and-swap with "
                       "--expect)")
    s.add_argument("name")
    s.add_argument("alias")
    s.add_argument("version", help="a version number")
    s.add_argument("--expect", type=int, metavar="N", help="refuse unless the alias still "
                   "points at version N")
    s.add_argument("--reason", default="")
    s.set_defaults(run=alias)

    s = sub.add_parser("rollback", help="move an alias back to where it pointed before")
    s.add_argument("name")
    s.add_argument("alias")
    s.add_argument("--expect", type=int, metavar="N")
    s.add_argument("--reason", default="")
    s.set_defaults(run=rollback)

    s = sub.add_parser("history", help="every alias move: from, to, when, who, why")
    s.add_argument("name")
    s.add_argument("--alias")
    s.set_defaults(run=history)

    s = sub.add_parser("diff", help="config, data, base and metric differences of two versions")
    s.add_argument("a")
    s.add_argument("b")
    s.set_defaults(run=diff)

    s = sub.add_parser("export", help="write a version as a PEFT / transformers folder")
    s.add_argument("ref")
    s.add_argument("dest", metavar="DIR")
    s.add_argument("--merged", action="store_true", help="LoRA: merge it into its base model "
                   "and write a transformers model folder")
    s.set_defaults(run=export)

    s = sub.add_parser("verify", help="check every digest and the index's integrity")
    s.set_defaults(run=verify)
    s = sub.add_parser("gc", help="remove blobs no version references")
    s.set_defaults(run=gc)
    for s in sub.choices.values():
        add_registry_arg(s)


def push(args) -> int:
    with open_registry(args) as reg:
        v = reg.push(args.folder, args.name, alias=args.alias, parent=args.parent,
                     reason=args.reason)
        data = ", data rows kept" if reg.data(v) else ""
        print(f"{v.ref} ({v.method}, {size_text(v.size)}{data})"
              + (f" @{', @'.join(v.aliases)}" if v.aliases else ""))
    return 0


def list_(args) -> int:
    with open_registry(args) as reg:
        versions = reg.versions(args.name)
        if not versions:
            print("no versions" + (f" of {args.name}" if args.name else "") + f" in {reg.root}")
            return 0
        print(f"{'version':<28} {'method':<22} {'score':>8} {'size':>9}  aliases")
        for v in versions:
            metrics = {k: x for k, x in v.lineage.get("metrics", {}).items()
                       if isinstance(x, (int, float))}
            score = f"{next(iter(metrics.values())):.3f}" if metrics else "-"
            print(f"{v.ref:<28} {v.method:<22} {score:>8} {size_text(v.size):>9}  "
                  f"{', '.join(v.aliases)}")
    return 0


def show(args) -> int:
    with open_registry(args) as reg:
        v = reg.resolve(args.ref)
        info = {"ref": v.ref, "method": v.method, "created": v.created, "aliases": v.aliases,
                "parent": v.parent, "size": v.size, "manifest": v.manifest,
                "lineage": {k: x for k, x in v.lineage.items() if k != "comparison"},
                "comparison": _comparison(v.lineage.get("comparison")),
                "data_kept": {role: len(t) for role, t in reg.data(v).items()},
                "files": [{"path": p, "sha256": d, "size": s} for p, d, s in reg.files(v)],
                "card": v.card}
        if args.json:
            print(json.dumps(info, indent=2))
            return 0
        base = v.lineage.get("base", {})
        recipe = v.lineage.get("recipe", {})
        print(f"{v.ref}  {v.method}  created {v.created}  {size_text(v.size)}")
        print(f"  aliases: {', '.join(v.aliases) or '-'}   parent: {v.parent or '-'}")
        print(f"  base: {base.get('name')} ({base.get('identity')}, sha256 "
              f"{str(base.get('sha256'))[:12]}, {base.get('variant') or base.get('dtype')})")
        data = v.lineage.get("data", {})
        print(f"  data: train {str(data.get('train_sha256'))[:12]} ({data.get('n_train')} rows)"
              f", kept: {info['data_kept'] or 'no rows'}")
        print(f"  recipe: {recipe.get('method')} seed {recipe.get('seed')} k {recipe.get('k')}"
              f" config {json.dumps(recipe.get('config'), sort_keys=True)}")
        print(f"  metrics: {json.dumps(v.lineage.get('metrics', {}))}")
        print(f"  costs: {json.dumps(v.lineage.get('costs', {}))}")
        if info["comparison"]:
            print(f"  comparison: {json.dumps(info['comparison'])}")
        print(f"  files ({reg.path(v)}):")
        for p, d, s in reg.files(v):
            print(f"    {p:<44} {size_text(s):>9}  sha256 {d[:12]}")
    return 0


def _comparison(c: dict | None) -> dict | None:
    return None if not c else {k: x for k, x in c.items() if k not in ("plan", "config")}


def alias(args) -> int:
    with open_registry(args) as reg:
        before, after = reg.alias(args.name, args.alias, args.version, expect=args.expect,
                                  reason=args.reason)
        print(f"{args.name}@{args.alias}: {before or '-'} -> {after}")
    return 0


def rollback(args) -> int:
    with open_registry(args) as reg:
        before, after = reg.rollback(args.name, args.alias, expect=args.expect,
                                     reason=args.reason)
        print(f"{args.name}@{args.alias}: {before} -> {after} (rolled back)")
    return 0


def history(args) -> int:
    with open_registry(args) as reg:
        entries = reg.history(args.name, args.alias)
        if not entries:
            print(f"no alias moves of {args.name}")
        for e in entries:
            undo = f" (undoes move {e['undoes']})" if e["undoes"] else ""
            print(f"{e['id']:>4}  {e['time']}  {args.name}@{e['alias']}: "
                  f"{e['from_version'] or '-'} -> {e['to_version']}  by {e['user']}"
                  f"{': ' + e['reason'] if e['reason'] else ''}{undo}")
    return 0


def diff(args) -> int:
    with open_registry(args) as reg:
        rows = reg.diff(args.a, args.b)
        if not rows:
            print(f"{args.a} and {args.b} have the same lineage")
        for key, a, b in rows:
            print(f"{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return 0


def export(args) -> int:
    with open_registry(args) as reg:
        dest = reg.export(args.ref, args.dest, merged=args.merged)
        print(f"{reg.resolve(args.ref).ref} -> {dest} (every file checked against its sha256)")
    return 0


def verify(args) -> int:
    with open_registry(args) as reg:
        report = reg.verify()
        for problem in report["problems"]:
            print(f"problem: {problem}")
        print(f"{'ok' if report['ok'] else 'FAILED'}: {report['versions']} versions, "
              f"{report['blobs_checked']} blobs checked, {report['unreferenced_blobs']} "
              f"unreferenced (gc removes them)")
        return 0 if report["ok"] else 1


def gc(args) -> int:
    with open_registry(args) as reg:
        r = reg.gc()
        print(f"removed {r['blobs_removed']} blobs ({size_text(r['bytes_freed'])}), "
              f"{r['unfinished_writes']} unfinished writes, {r['checkouts_removed']} checkouts")
    return 0


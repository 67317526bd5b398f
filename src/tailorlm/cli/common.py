"""What several commands share: the data flags, reading task files, and `--set` values."""

from __future__ import annotations

import yaml


def add_field_args(group) -> None:
    """The flags that say how to read a task file's rows."""
    group.add_argument("--text-field")
    group.add_argument("--label-field")
    group.add_argument("--input-field", help="generation tasks: the input column")
    group.add_argument("--target-field", help="generation tasks: the target column")
    group.add_argument("--kind", choices=["classification", "generation"])
    group.add_argument("--description", default="", help="what to decide, for templates "
                       "(e.g. 'the sentiment of a movie review')")
    group.add_argument("--verbalizer", action="append", default=[], metavar="LABEL=WORDS",
                       help="the words the model should say for a label (repeatable)")


def field_options(args) -> dict:
    return dict(kind=args.kind, text_field=args.text_field, label_field=args.label_field,
                input_field=args.input_field, target_field=args.target_field,
                description=args.description)


def parse_verbalizer(items: list[str]) -> dict[str, str]:
    from tailorlm.errors import TailorError

    verbalizer = {}
    for item in items:
        label, eq, words = item.partition("=")
        if not eq:
            raise TailorError(f"--verbalizer {item!r}: write LABEL=WORDS")
        verbalizer[label] = words
    return verbalizer


def load_train(path: str, args):
    """The training task, read with the field flags and --verbalizer."""
    from tailorlm.data.load import load_task

    return load_task(path, verbalizer=parse_verbalizer(args.verbalizer) or None,
                     **field_options(args))


def load_like(path: str, args, *, kind: str, labels: list[str] | None,
              verbalizer: dict[str, str] | None):
    """Another split of a task, read with its training split's kind, label set and words."""
    from tailorlm.data.load import load_task

    fields = {**field_options(args), "kind": kind}
    if kind != "classification":
        labels = verbalizer = None
    return load_task(path, labels=labels or None, verbalizer=verbalizer or None, **fields)


def parse_set(item: str, flag: str = "--set") -> tuple[str, object]:
    """`OPTION=VALUE` with the value read as YAML (8 -> int, 1e-4 -> float, true -> bool,
    [a, b] -> list), as plans read it."""
    from tailorlm.compare.plan import read_yaml
    from tailorlm.errors import TailorError

    key, eq, value = item.partition("=")
    if not (eq and key):
        raise TailorError(f"{flag} {item!r}: write OPTION=VALUE, e.g. r=16")
    try:
        return key, read_yaml(value)
    except yaml.YAMLError:
        raise TailorError(f"{flag} {item!r}: the value is not valid YAML") from None


def config_options(spec) -> set[str]:
    """The option names of a method's config (a hybrid's include variant_field)."""
    import dataclasses

    return {f.name for f in dataclasses.fields(spec.config)}


def size_text(n: int) -> str:
    """Bytes as a person reads them: 512 B, 7.6 MB (powers of 1000)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"

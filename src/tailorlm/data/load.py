"""Reading a task from a file: JSON Lines, CSV, TSV, Parquet, or a Hugging Face dataset.

    train = load_task("train.jsonl")                      # {"text": ..., "label": ...} per line
    test = load_task("test.csv", labels=train.labels, verbalizer=train.verbalizer)
    load_task("hf:glue:sst2:train", text_field="sentence")   # needs tailorlm[datasets]

Every check runs here, before any model is loaded: a bad row stops the load with one TailorError
naming the file, the 1-based line (row, for Parquet and `hf:`) and what to change.

Fields. Classification: the text is `text`, else `sentence`, else `input` (chosen once, from the
first row; no other guessing), and the label `label`. Generation: `input`, `target`, optional
`references` (a list of strings; in CSV/TSV a JSON list in the cell). The kind is classification
if the first row has the label field, generation if it has input and target; `kind=` or a field
flag decides otherwise. Labels are strings ("0", "1" from integers); other columns go to `extra`.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path

from tailorlm.data.task import Example, Task
from tailorlm.data.verbalize import default_verbalizer
from tailorlm.errors import TailorError

# Built-in tasks live here, one folder each: train.jsonl, test.jsonl, task.json. Tests repoint it.
BUILTIN_ROOT = Path(__file__).parent / "builtin"

SUPPORTED = ".jsonl or .json (JSON Lines), .csv, .tsv, .parquet, or hf:NAME[:CONFIG]:SPLIT"
TEXT_FIELDS = ("text", "sentence", "input")


def read_rows(path: str | Path) -> Iterator[tuple[int, dict]]:
    """`(line_no, row)` for each row in file order: the 1-based line where the row starts (a CSV's
    header is line 1; blank lines are skipped), or the row number for Parquet and `hf:` sources.
    The path and file type are checked now, the contents as the iterator is consumed."""
    if isinstance(path, str) and path.startswith("hf:"):
        return _nonempty(_hf_rows(path), path)
    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "no such file"
        raise TailorError(f"{p}: {what}; check the path (give a data file: {SUPPORTED})")
    readers = {".jsonl": _jsonl_rows, ".json": _jsonl_rows, ".parquet": _parquet_rows,
               ".csv": lambda p: _csv_rows(p, ","), ".tsv": lambda p: _csv_rows(p, "\t")}
    ext = p.suffix.lower()
    if ext not in readers:
        raise TailorError(f"{p}: unsupported file type {ext or '(no extension)'!r}; "
                          f"use {SUPPORTED}")
    return _nonempty(readers[ext](p), str(p))


def _nonempty(rows: Iterator[tuple[int, dict]], src: str) -> Iterator[tuple[int, dict]]:
    empty = True
    for item in rows:
        empty = False
        yield item
    if empty:
        raise TailorError(f"{src} is empty: it has no rows; check that you gave the right file")


def _lines(p: Path) -> Iterator[tuple[int, str]]:
    # Decode line by line so a bad byte is reported with its line; a UTF-8 BOM is accepted.
    with open(p, "rb") as f:
        for n, raw in enumerate(f, 1):
            raw = raw.removeprefix(codecs.BOM_UTF8) if n == 1 else raw
            try:
                yield n, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise TailorError(f"{p} line {n}: unknown encoding: the file is not UTF-8 (byte "
                                  f"{raw[e.start]:#04x}); re-save it as UTF-8") from None


def _jsonl_rows(p: Path) -> Iterator[tuple[int, dict]]:
    for n, line in _lines(p):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            row = e
        if not isinstance(row, dict):
            bad = (f"malformed JSON: {row.msg} at column {row.colno}"
                   if isinstance(row, json.JSONDecodeError) else f"a JSON {type(row).__name__}")
            hint = " (a JSON array? use JSON Lines)" if line.lstrip().startswith("[") else ""
            raise TailorError(f"{p} line {n}: {bad}{hint}; write one JSON object per line, "
                              'like {"text": ..., "label": ...}')
        yield n, row


def _csv_rows(p: Path, delimiter: str) -> Iterator[tuple[int, dict]]:
    # Standard CSV quoting for both CSV and TSV (what csv, pandas and spreadsheets write).
    reader = csv.reader((line for _, line in _lines(p)), delimiter=delimiter)
    header, start = None, 1
    try:
        for cells in reader:
            n, start = start, reader.line_num + 1   # a quoted cell may span lines
            if not cells:
                continue
            if header is None:
                header = [c.strip() for c in cells]
                continue
            if len(cells) != len(header):
                raise TailorError(
                    f"{p} line {n}: {len(cells)} cells but the header has {len(header)} columns; "
                    "quote cells that contain the delimiter or a line break")
            yield n, dict(zip(header, cells))
    except csv.Error as e:
        raise TailorError(f"{p} line {reader.line_num}: malformed {p.suffix[1:].upper()}: {e}; "
                          "fix the quoting on that line") from None


def _parquet_rows(p: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(p)
    except (pa.ArrowException, OSError) as e:
        raise TailorError(f"{p}: not a readable Parquet file ({e}); re-export it as Parquet "
                          "or save it as .jsonl or .csv") from None
    yield from enumerate((row for batch in pf.iter_batches(batch_size=4096)
                          for row in batch.to_pylist()), 1)


def _hf_rows(spec: str) -> Iterator[tuple[int, dict]]:
    parts = spec[3:].split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise TailorError(f"{spec!r}: write a Hugging Face dataset as hf:NAME:SPLIT or "
                          "hf:NAME:CONFIG:SPLIT, e.g. hf:glue:sst2:train")
    name, config, split = parts[0], (parts[1] if len(parts) == 3 else None), parts[-1]
    try:
        import datasets
    except ImportError:
        raise TailorError(f"reading {spec} needs the Hugging Face `datasets` package: "
                          "pip install 'tailorlm[datasets]'") from None
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # the library's many failure types all mean "cannot get that dataset"
        first = (str(e).splitlines() or [""])[0]
        raise TailorError(f"{spec}: could not load the dataset ({type(e).__name__}: {first}); "
                          "check the name, config and split") from None
    # ClassLabel columns hold integers; give the user the label names they see on the Hub.
    features = getattr(ds, "features", None) or {}
    names = {col: f.names for col, f in features.items() if isinstance(f, datasets.ClassLabel)}
    for n, row in enumerate(ds, 1):
        yield n, {col: names[col][v] if col in names and isinstance(v, int)
                  and 0 <= v < len(names[col]) else v for col, v in row.items()}


def load_task(path: str | Path, *, kind: str | None = None, text_field: str | None = None,
              label_field: str | None = None, input_field: str | None = None,
              target_field: str | None = None, references_field: str | None = None,
              name: str | None = None, labels: list[str] | None = None,
              verbalizer: dict[str, str] | None = None, description: str = "") -> Task:
    """Read and validate a whole task file (formats and fields: see the module docstring).

    `labels` fixes the label set and its order: a test file passes its training task's, and a
    label outside it is an error. Without it the labels are the file's, sorted. `verbalizer`
    overrides the words for some labels; the rest get `default_verbalization`."""
    src = str(path)
    unit = "row" if src.startswith("hf:") or Path(src).suffix.lower() == ".parquet" else "line"
    rows = read_rows(path)
    first = next(rows)
    if kind is None:
        kind = _detect_kind(first[1], f"{src} {unit} {first[0]}", text_field, label_field,
                            input_field, target_field, references_field)
    if kind not in ("classification", "generation"):
        raise TailorError(f"task kind must be 'classification' or 'generation', not {kind!r}")
    name = name or (src[3:].split(":")[0] if src.startswith("hf:") else Path(src).stem)
    located = ((f"{src} {unit} {n}", row) for n, row in itertools.chain([first], rows))

    if kind == "generation":
        fields = (input_field or "input", target_field or "target", references_field)
        examples = [_generation_example(row, where, *fields) for where, row in located]
        return Task(name=name, kind=kind, examples=examples, description=description)

    text_f = text_field or next((f for f in TEXT_FIELDS if f in first[1]), "text")
    label_f = label_field or "label"
    fixed = None if labels is None else [str(lab) for lab in labels]
    parsed = []   # (text, label, extra) until the label set, and so the verbalizer, is known
    for where, row in located:
        text = _text(row, text_f, where, "--text-field")
        label = _label(row, label_f, where)
        if fixed is not None and label not in fixed:
            raise TailorError(
                f"{where}: label {label!r} is not in the task's label set {_show(fixed)}, which "
                "comes from the training file; fix the label or add examples of it there")
        parsed.append((text, label, {k: v for k, v in row.items() if k not in (text_f, label_f)}))
    label_set = fixed if fixed is not None else sorted({lab for _, lab, _ in parsed})
    if len(label_set) < 2:
        raise TailorError(f"{src}: a classification task needs at least 2 labels, not only "
                          f"{_show(label_set)}; check --label-field or add other labels' rows")
    words = _verbalizer(label_set, verbalizer or {}, src)
    examples = [Example(input=t, target=words[lab], label=lab, extra=x) for t, lab, x in parsed]
    return Task(name=name, kind="classification", examples=examples, labels=label_set,
                verbalizer=words, description=description)


def builtin_task_names() -> list[str]:
    folders = BUILTIN_ROOT.iterdir() if BUILTIN_ROOT.is_dir() else []
    return sorted(d.name for d in folders if (d / "task.json").is_file())


def load_builtin_task(name: str) -> tuple[Task, Task]:
    """The built-in task `name` as (train, test); the test split shares the train label set."""
    names = builtin_task_names()
    if name not in names:
        raise TailorError(f"no built-in task {name!r}; the built-in tasks are: "
                          f"{', '.join(names) or '(none installed)'}")
    folder = BUILTIN_ROOT / name
    meta = json.loads((folder / "task.json").read_text(encoding="utf-8"))
    common = dict(kind=meta.get("kind"), name=meta.get("name", name),
                  description=meta.get("description", ""))
    train = load_task(folder / "train.jsonl", labels=meta.get("labels") or None,
                      verbalizer=meta.get("verbalizer") or None, **common)
    test = load_task(folder / "test.jsonl", labels=train.labels or None,
                     verbalizer=train.verbalizer or None, **common)
    return train, test


def _detect_kind(row: dict, where: str, text_f, label_f, input_f, target_f, refs_f) -> str:
    if text_f or label_f or (not (input_f or target_f or refs_f) and "label" in row):
        return "classification"
    if input_f or target_f or refs_f or ("input" in row and "target" in row):
        return "generation"
    raise TailorError(
        f"{where}: cannot tell the task kind from the fields {sorted(row)}; a classification row "
        "needs `text` and `label` (or --text-field/--label-field), a generation row `input` and "
        "`target` (or --input-field/--target-field)")


def _get(row: dict, field: str, where: str, flag: str):
    if field not in row:
        raise TailorError(f"{where}: no {field!r} field; the row has {sorted(row)}; "
                          f"name the right column with {flag}")
    return row[field]


def _text(row: dict, field: str, where: str, flag: str) -> str:
    value = _get(row, field, where, flag)
    if value is not None and not isinstance(value, str):
        raise TailorError(f"{where}: the {field!r} field is a {type(value).__name__}, "
                          f"not text; check {flag}")
    if value is None or not value.strip():
        raise TailorError(f"{where}: empty text in the {field!r} field; give every row a "
                          "non-empty text or remove the row")
    return value


def _label(row: dict, field: str, where: str) -> str:
    value = _get(row, field, where, "--label-field")
    if isinstance(value, float):   # pandas: NaN for missing, so integer labels become floats
        value = None if math.isnan(value) else int(value) if value.is_integer() else value
    if isinstance(value, (bool, list, dict, float)):
        raise TailorError(f"{where}: the label {value!r} is a {type(value).__name__}; labels must "
                          "be strings or integers")
    if value is None or not str(value).strip():
        raise TailorError(f"{where}: empty label in the {field!r} field; give every row a label "
                          "or remove the row")
    return str(value)


def _generation_example(row: dict, where: str, input_f: str, target_f: str,
                        refs_f: str | None) -> Example:
    source = _text(row, input_f, where, "--input-field")
    target = _text(row, target_f, where, "--target-field")
    refs = _get(row, refs_f, where, "--references-field") if refs_f else row.get("references")
    if isinstance(refs, str) and refs.strip().startswith("["):
        with contextlib.suppress(json.JSONDecodeError):   # CSV/TSV cells hold a JSON list
            refs = json.loads(refs)
    refs = [target] if refs is None or refs == "" else refs
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise TailorError(f"{where}: references must be a non-empty list of strings, like "
                          '["a reference", "another"], not ' + repr(refs)[:80])
    extra = {k: v for k, v in row.items() if k not in (input_f, target_f, refs_f or "references")}
    return Example(input=source, target=target, references=tuple(refs), extra=extra)


def _verbalizer(labels: list[str], overrides: dict, src: str) -> dict[str, str]:
    overrides = {str(k): v for k, v in overrides.items()}
    unknown = sorted(set(overrides) - set(labels))
    if unknown:
        raise TailorError(f"{src}: the verbalizer names {unknown}, not labels of this task "
                          f"{_show(labels)}; fix the label names in --verbalizer")
    for lab, words in overrides.items():
        if not isinstance(words, str) or not words.strip():
            raise TailorError(f"the verbalization of {lab!r} must be non-empty text, not {words!r}")
    return {**default_verbalizer(labels), **overrides}


def _show(labels: list[str], limit: int = 12) -> str:
    more = f", ... ({len(labels)} in all)" if len(labels) > limit else ""
    return "[" + ", ".join(repr(lab) for lab in labels[:limit]) + more + "]"

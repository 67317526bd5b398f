"""Loading tasks: every format gives the same Task, and every bad input fails with file and line."""

import csv
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tailorlm.data import load
from tailorlm.data.load import load_builtin_task, load_task, read_rows
from tailorlm.errors import TailorError

ROWS = [
    {"text": "a fine film", "label": "positive", "client": "a"},
    {"text": "dull, with a comma", "label": "negative", "client": "b"},
    {"text": 'says "hi"\tand tabs', "label": "positive", "client": "a"},
]
# ../shared beside the checkout, as on the build machines and in CI
SST2 = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "sst2" / "train.jsonl"


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows, delimiter=",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        w.writeheader()
        w.writerows(rows)
    return path


def write_parquet(path: Path, rows) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def fails(path, match_line=None, **kw) -> str:
    """Load `path`, expect one TailorError naming the file (and line), return its message."""
    with pytest.raises(TailorError) as info:
        load_task(path, **kw)
    msg = str(info.value)
    assert Path(path).name in msg
    if match_line is not None:
        assert match_line in msg
    assert "\n" not in msg
    return msg


# -- formats ------------------------------------------------------------------------------------

def test_jsonl_classification(tmp_path):
    task = load_task(write_jsonl(tmp_path / "reviews.jsonl", ROWS))
    assert task.name == "reviews" and task.kind == "classification"
    assert task.labels == ["negative", "positive"]
    assert task.verbalizer == {"negative": "negative", "positive": "positive"}
    e = task.examples[1]
    assert (e.input, e.label, e.target, e.extra) == ("dull, with a comma", "negative", "negative",
                                                   {"client": "b"})


def test_formats_round_trip_to_equal_tasks(tmp_path):
    tasks = [load_task(write_jsonl(tmp_path / "t.jsonl", ROWS)),
             load_task(write_csv(tmp_path / "t.csv", ROWS)),
             load_task(write_csv(tmp_path / "t.tsv", ROWS, delimiter="\t")),
             load_task(write_parquet(tmp_path / "t.parquet", ROWS))]
    for t in tasks[1:]:
        assert t == tasks[0]
        assert t.fingerprint() == tasks[0].fingerprint()
        assert [e.extra for e in t.examples] == [e.extra for e in tasks[0].examples]


def test_generation_formats_and_references(tmp_path):
    rows = [{"input": "name[A]", "target": "A is here.", "references": ["A is here.", "Here is A."]},
            {"input": "name[B]", "target": "B is there.", "references": ["B is there."]}]
    a = load_task(write_jsonl(tmp_path / "g.jsonl", rows))
    csv_rows = [{**r, "references": json.dumps(r["references"])} for r in rows]
    b = load_task(write_csv(tmp_path / "g.csv", csv_rows))
    c = load_task(write_parquet(tmp_path / "g.parquet", rows))
    assert a.kind == "generation" and a == b == c
    assert a.examples[0].references == ("A is here.", "Here is A.")
    no_refs = load_task(write_jsonl(tmp_path / "n.jsonl", [{"input": "x", "target": "y"}]))
    assert no_refs.examples[0].references == ("y",)   # scored against the target alone


def test_bom_blank_lines_and_int_labels(tmp_path):
    p = tmp_path / "bom.jsonl"
    body = '{"text": "a", "label": 0}\n\n   \n{"text": "b", "label": 1}\n'
    p.write_bytes(b"\xef\xbb\xbf" + body.encode())
    task = load_task(p)
    assert task.labels == ["0", "1"] and [e.label for e in task.examples] == ["0", "1"]
    csv_bom = tmp_path / "bom.csv"
    csv_bom.write_bytes(b"\xef\xbb\xbftext,label\na,x\nb,y\n")
    assert load_task(csv_bom).labels == ["x", "y"]


def test_read_rows_line_numbers(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2}\n', encoding="utf-8")
    assert list(read_rows(p)) == [(1, {"a": 1}), (3, {"a": 2})]
    c = tmp_path / "r.csv"
    c.write_text('a,b\n1,"two\nlines"\n3,4\n', encoding="utf-8")
    assert list(read_rows(c)) == [(2, {"a": "1", "b": "two\nlines"}), (4, {"a": "3", "b": "4"})]


def test_field_fallbacks_and_flags(tmp_path):
    t = load_task(write_jsonl(tmp_path / "s.jsonl", [{"sentence": "x", "label": "a"},
                                                     {"sentence": "y", "label": "b"}]))
    assert [e.input for e in t.examples] == ["x", "y"]
    rows = [{"body": "x", "y": "spam", "id": 1}, {"body": "z", "y": "ham", "id": 2}]
    t = load_task(write_jsonl(tmp_path / "f.jsonl", rows), text_field="body", label_field="y")
    assert t.labels == ["ham", "spam"] and t.examples[0].extra == {"id": 1}
    g = load_task(write_jsonl(tmp_path / "q.jsonl", [{"q": "2+2", "a": "4"}]),
                  input_field="q", target_field="a")
    assert g.kind == "generation" and g.examples[0].target == "4"


def test_verbalizer_defaults_and_overrides(tmp_path):
    rows = [{"text": "x", "label": "card_arrival"}, {"text": "y", "label": "exchangeRate"}]
    p = write_jsonl(tmp_path / "b.jsonl", rows)
    t = load_task(p)
    assert t.verbalizer == {"card_arrival": "card arrival", "exchangeRate": "exchange rate"}
    assert [e.target for e in t.examples] == ["card arrival", "exchange rate"]
    t = load_task(p, verbalizer={"card_arrival": "my card"}, description="banking intent")
    assert t.verbalizer == {"card_arrival": "my card", "exchangeRate": "exchange rate"}
    assert t.examples[0].target == "my card" and t.description == "banking intent"
    assert "typo" in fails(p, verbalizer={"typo": "words"})


def test_test_file_uses_train_label_set(tmp_path):
    train = load_task(write_jsonl(tmp_path / "train.jsonl", ROWS), verbalizer={"positive": "good"})
    ok = write_jsonl(tmp_path / "test.jsonl", [{"text": "z", "label": "positive"}])
    test = load_task(ok, labels=train.labels, verbalizer=train.verbalizer)
    assert test.labels == train.labels and test.verbalizer == train.verbalizer
    assert test.examples[0].target == "good"
    bad = write_jsonl(tmp_path / "test2.jsonl", [{"text": "z", "label": "positive"},
                                                 {"text": "w", "label": "neutral"}])
    msg = fails(bad, "line 2", labels=train.labels, verbalizer=train.verbalizer)
    assert "neutral" in msg


# -- bad input: one error naming file and line ---------------------------------------------------

@pytest.mark.parametrize("rows, line, words", [
    ([{"text": "a", "label": "x"}, {"txt": "b", "label": "y"}], "line 2", ["'text'", "--text-field", "txt"]),
    ([{"text": "a", "label": "x"}, {"text": "b", "lbl": "y"}], "line 2", ["'label'", "--label-field"]),
    ([{"text": "a", "label": "x"}, {"text": "  ", "label": "y"}], "line 2", ["empty text"]),
    ([{"text": "a", "label": "x"}, {"text": None, "label": "y"}], "line 2", ["empty text"]),
    ([{"text": "a", "label": "x"}, {"text": "b", "label": ""}], "line 2", ["empty label"]),
    ([{"text": "a", "label": "x"}, {"text": "b", "label": None}], "line 2", ["empty label"]),
    ([{"text": "a", "label": "x"}, {"text": "b", "label": ["y"]}], "line 2", ["strings or integers"]),
    ([{"input": "a", "target": "b", "references": "c"}], "line 1", ["list of strings"]),
    ([{"input": "a", "target": "b", "references": ["c", 3]}], "line 1", ["list of strings"]),
    ([{"input": "a", "target": ""}], "line 1", ["empty text", "'target'"]),
    ([{"question": "a", "answer": "b"}], "line 1", ["cannot tell", "question"]),
])
def test_bad_rows(tmp_path, rows, line, words):
    msg = fails(write_jsonl(tmp_path / "bad.jsonl", rows), line)
    for w in words:
        assert w in msg


def test_bad_rows_in_csv_and_parquet(tmp_path):
    rows = [{"text": "a", "label": "x"}, {"text": "b", "label": ""}]
    assert "empty label" in fails(write_csv(tmp_path / "bad.csv", rows), "line 3")
    assert "empty label" in fails(write_parquet(tmp_path / "bad.parquet", rows), "row 2")
    short = tmp_path / "short.csv"
    short.write_text("text,label\na,x\nb\n", encoding="utf-8")
    assert "header has 2 columns" in fails(short, "line 3")


def test_malformed_json(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": }\n', encoding="utf-8")
    assert "malformed JSON" in fails(p, "line 2")
    arr = tmp_path / "arr.json"
    arr.write_text('[\n{"text": "a", "label": "x"}\n]\n', encoding="utf-8")
    assert "JSON Lines" in fails(arr, "line 1")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv"])
def test_not_utf8(tmp_path, suffix):
    p = tmp_path / f"latin{suffix}"
    head = b'{"text": "a", "label": "x"}\n' if suffix == ".jsonl" else b"text,label\n"
    bad = b'{"text": "caf\xe9", "label": "y"}\n' if suffix == ".jsonl" else b"caf\xe9,y\n"
    p.write_bytes(head + bad)
    msg = fails(p, "line 2")
    assert "unknown encoding" in msg and "UTF-8" in msg


@pytest.mark.parametrize("content", ["", "\n\n", "text,label\n"])
def test_empty_file(tmp_path, content):
    p = tmp_path / ("e.csv" if "," in content else "e.jsonl")
    p.write_text(content, encoding="utf-8")
    assert "empty" in fails(p)


def test_missing_file_and_extension(tmp_path):
    assert "no such file" in fails(tmp_path / "nope.jsonl")
    p = tmp_path / "data.xlsx"
    p.write_bytes(b"x")
    assert ".csv" in fails(p)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    assert "Parquet" in fails(bad)


def test_fewer_than_two_labels(tmp_path):
    p = write_jsonl(tmp_path / "one.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}])
    assert "at least 2 labels" in fails(p)


# -- Hugging Face datasets (never the network) ---------------------------------------------------

def test_hf_without_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)   # makes `import datasets` fail
    with pytest.raises(TailorError, match=r"pip install 'tailorlm\[datasets\]'"):
        load_task("hf:glue:sst2:train")
    with pytest.raises(TailorError, match="hf:NAME:SPLIT"):
        load_task("hf:glue")


def test_hf_with_fake_datasets(monkeypatch):
    class ClassLabel:
        def __init__(self, names):
            self.names = names

    class Dataset(list):
        features = {"label": ClassLabel(["negative", "positive"])}

    calls = []
    fake = type(sys)("datasets")
    fake.ClassLabel = ClassLabel
    fake.load_dataset = lambda name, config, split: calls.append((name, config, split)) or Dataset(
        [{"sentence": "good", "label": 1}, {"sentence": "bad", "label": 0}, {"sentence": "", "label": 0}])
    monkeypatch.setitem(sys.modules, "datasets", fake)
    msg = fails("hf:glue:sst2:train", "row 3")
    assert "empty text" in msg and calls == [("glue", "sst2", "train")]
    fake.load_dataset = lambda name, config, split: Dataset(
        [{"sentence": "good", "label": 1}, {"sentence": "bad", "label": 0}])
    t = load_task("hf:sst2:train")
    assert t.name == "sst2" and t.labels == ["negative", "positive"]
    assert [e.label for e in t.examples] == ["positive", "negative"]


# -- built-in tasks and shared data --------------------------------------------------------------

def test_builtin_task(tmp_path, monkeypatch):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "task.json").write_text(json.dumps({
        "name": "tiny", "kind": "classification", "description": "the mood",
        "labels": ["sad", "glad"], "verbalizer": {"glad": "happy"}}))
    write_jsonl(folder / "train.jsonl", [{"text": "yay", "label": "glad"}, {"text": "no", "label": "sad"}])
    write_jsonl(folder / "test.jsonl", [{"text": "ok", "label": "glad"}])
    monkeypatch.setattr(load, "BUILTIN_ROOT", tmp_path)
    train, test = load_builtin_task("tiny")
    assert train.labels == test.labels == ["sad", "glad"]
    assert test.verbalizer == {"sad": "sad", "glad": "happy"} and test.examples[0].target == "happy"
    assert train.description == "the mood" and test.name == "tiny"
    with pytest.raises(TailorError, match="tiny"):
        load_builtin_task("nope")


def test_shipped_builtins_load():
    for name in load.builtin_task_names():
        train, test = load_builtin_task(name)
        assert len(train) and len(test) and train.labels == test.labels


@pytest.mark.skipif(not SST2.exists(), reason="shared SST-2 data not present")
def test_sst2_train():
    task = load_task(SST2)
    assert len(task) == 6920 and task.labels == ["negative", "positive"]

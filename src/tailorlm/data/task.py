"""What a task is: examples, and for classification a fixed label set with its verbalizations.

    Example(input="My card never arrived", label="card_arrival", target="card arrival")
    Task(kind="classification", labels=[...], verbalizer={"card_arrival": "card arrival", ...})

The verbalization is the text the model should say for a label; classification is scored by the
log-likelihood of each label's whole verbalization after the prompt (see engine/scoring.py).
A generation example has no label; its `target` is the text to produce and `references` the texts
it is scored against (the target alone when the file gives none).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

from tailorlm.errors import TailorError

TaskKind = Literal["classification", "generation"]


@dataclass(frozen=True)
class Example:
    input: str
    target: str
    label: str | None = None
    references: tuple[str, ...] = ()
    # Other columns of the row (e.g. a `client` field that hybrids split on), kept verbatim.
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def example_id(example: Example) -> str:
    """A short stable id of an example's content (input, target, label): the same row read from
    two files has the same id, so predictions files and leak checks can name rows."""
    blob = json.dumps([example.input, example.target, example.label], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class Task:
    name: str
    kind: TaskKind
    examples: list[Example]
    labels: list[str] = field(default_factory=list)
    verbalizer: dict[str, str] = field(default_factory=dict)
    # A sentence naming what to decide, used by templates ("the sentiment of a movie review").
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("classification", "generation"):
            raise TailorError(f"task kind must be 'classification' or 'generation', not {self.kind!r}")
        if self.kind == "classification":
            if not self.labels:
                self.labels = sorted({e.label for e in self.examples if e.label is not None})
            missing = [lab for lab in self.labels if lab not in self.verbalizer]
            if missing:
                from tailorlm.data.verbalize import default_verbalizer

                self.verbalizer = {**default_verbalizer(missing), **self.verbalizer}
            words = list(self.verbalizer[lab] for lab in self.labels)
            if len(set(words)) != len(words):
                raise TailorError(
                    "two labels have the same verbalization; give each label its own words "
                    "(--verbalizer label=words)")

    def __len__(self) -> int:
        return len(self.examples)

    def with_examples(self, examples: list[Example], name: str | None = None) -> Task:
        """The same task (labels, verbalizer) over other examples: a split or a k-shot sample."""
        return Task(name=name or self.name, kind=self.kind, examples=list(examples),
                    labels=list(self.labels), verbalizer=dict(self.verbalizer),
                    description=self.description)

    def label_index(self, label: str) -> int:
        return self.labels.index(label)

    def fingerprint(self) -> str:
        """sha256 of the examples and label set: the data hash recorded with every result."""
        h = hashlib.sha256()
        h.update(json.dumps([self.kind, self.labels, self.verbalizer]).encode())
        for e in self.examples:
            h.update(json.dumps([e.input, e.target, e.label, list(e.references)]).encode())
        return h.hexdigest()

"""The adapter both prompt methods produce: a template, demonstrations, and a label bias.

    prompt(x) = template.header + demos(x) + template.query(x) + template.answer
    score(label | x) = calibrate(log p(verbalization | prompt(x)))

`demos(x)` is the same list for every query (random, balanced, cover: the engine computes its
key/value cache once) or the nearest training examples to x (`similar`: TF-IDF cosine, so each
query has its own demonstrations and nothing is shared beyond the header).
Nothing is trained: `trainable_params` is 0 and the artifact is a small JSON file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from tailorlm.data.task import Example, Task
from tailorlm.engine.prompt import Prompt
from tailorlm.methods.calibration import calibrate
from tailorlm.methods.templates import Template


@dataclass
class PromptAdapter:
    method: str
    config: object
    task: Task  # labels, verbalizer and description; its examples are not kept
    template: Template
    demos: list[Example] = field(default_factory=list)  # fixed demonstrations, in prompt order
    pool: list[Example] = field(default_factory=list)  # candidates for per-query `similar` demos
    n_similar: int = 0
    bias: np.ndarray | None = None  # contextual-calibration log p_cf, (L,)
    # How it was chosen, for the report: the template search's record (margin, tied candidates),
    # calibration, and (few_shot) the demonstrations' validation score against the template alone
    choice: dict = field(default_factory=dict)

    def bind(self, backend):
        return backend  # text only: the base model computes as it is

    def save_files(self, directory) -> None:
        pass  # everything is in state()

    def prompt(self, example: Example) -> Prompt:
        if self.n_similar:
            return self.template.prompt(self.task, example, self._nearest(example.input),
                                        shared_demos=False)
        return self.template.prompt(self.task, example, self.demos)

    def continuations(self, task: Task) -> list[str]:
        return self.template.continuations(task)

    def adjust(self, logprobs: np.ndarray) -> np.ndarray:
        return calibrate(logprobs, self.bias)

    @property
    def stop(self) -> tuple[str, ...]:
        return ("\n",)

    @property
    def trainable_params(self) -> int:
        return 0

    def reworded(self, template: Template) -> PromptAdapter:
        """The same demonstrations under other wording (prompt sensitivity, compare/)."""
        return dataclasses.replace(self, template=template)

    def reordered(self, order: list[int]) -> PromptAdapter:
        """The same fixed demonstrations in another order."""
        return dataclasses.replace(self, demos=[self.demos[i] for i in order])

    def with_bias(self, bias: np.ndarray | None) -> PromptAdapter:
        return dataclasses.replace(self, bias=bias)

    def state(self) -> dict:
        def row(e: Example) -> dict:
            return {"input": e.input, "target": e.target, "label": e.label}
        return {
            "template": {k: getattr(self.template, k) for k in
                         ("name", "query", "answer", "instruction", "separator", "answer_space")},
            "task": {"name": self.task.name, "kind": self.task.kind, "labels": self.task.labels,
                     "verbalizer": self.task.verbalizer, "description": self.task.description},
            "demos": [row(e) for e in self.demos],
            "pool": [row(e) for e in self.pool],
            "n_similar": self.n_similar,
            "bias": None if self.bias is None else self.bias.tolist(),
            "choice": self.choice,
        }

    @classmethod
    def from_state(cls, method: str, config, state: dict) -> PromptAdapter:
        t = state["task"]
        task = Task(name=t["name"], kind=t["kind"], examples=[], labels=t["labels"],
                    verbalizer=t["verbalizer"], description=t["description"])
        rows = lambda key: [Example(**r) for r in state[key]]  # noqa: E731
        bias = None if state["bias"] is None else np.array(state["bias"])
        return cls(method, config, task, Template(**state["template"]), rows("demos"),
                   rows("pool"), state["n_similar"], bias, state.get("choice", {}))

    # -- similar demonstrations ---------------------------------------------------------------
    @cached_property
    def _index(self):
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        matrix = vectorizer.fit_transform([e.input for e in self.pool])  # (P, V), rows L2-normed
        return vectorizer, matrix

    def _nearest(self, text: str) -> list[Example]:
        vectorizer, matrix = self._index
        sims = (matrix @ vectorizer.transform([text]).T).toarray()[:, 0]  # (P,)
        order = np.argsort(-sims, kind="stable")
        picked = [self.pool[i] for i in order if self.pool[i].input != text][: self.n_similar]
        return picked[::-1]  # most similar last, nearest the query

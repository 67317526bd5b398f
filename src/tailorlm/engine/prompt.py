"""What the model reads for one query, split where its key/value cache can be shared.

    Prompt(shared="<instruction + fixed demonstrations>", own="Review: ...\nSentiment:")

`shared` is the same text for many queries (a template's instruction, a few-shot method's fixed
demonstrations): the engine runs it through the model once and reuses its key/value cache for every
query that has it. `own` is the query's own text and ends right before the answer; it must not be
empty. The answer (a label's verbalization, or generated text) continues directly after `own`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prompt:
    shared: str
    own: str

    @property
    def text(self) -> str:
        return self.shared + self.own

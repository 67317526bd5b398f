"""What the model reads for one query, split where its key/value cache can be shared.

    Prompt(shared="<instruction + fixed demonstrations>", own="Review: ...\nSentiment:")

`shared` is the same text for many queries (a template's instruction, a few-shot method's fixed
demonstrations): the engine runs it through the model once and reuses its key/value cache for every
query that has it. `own` is the query's own text and ends right before the answer; it must not be
empty. The answer (a label's verbalization, or generated text) continues directly after `own`.

`encode_prompt` turns a Prompt into token ids the one way scoring, generation and training rows
all use: the tokenizer's BOS first where it adds one by default (`Backend.bos_ids`: Gemma), then
`shared`, then `own`, each tokenized apart (templates end `shared` on a newline, so the split
falls on a token boundary):

    [BOS] + encode(shared)      the part many queries share: its cache is computed once
    encode(own)                 the query's own part
"""


from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tailorlm.models.backend import Backend


@dataclass(frozen=True)
class Prompt:
    shared: str
    own: str

    @property
    def text(self) -> str:
        return self.shared + self.own


def encode_prompt(backend: Backend, prompt: Prompt) -> tuple[list[int], list[int]]:
    """(shared ids, own ids): BOS (where the tokenizer adds one) and `shared`, then `own`."""
    shared = backend.bos_ids + (backend.encode(prompt.shared) if prompt.shared else [])
    return shared, backend.encode(prompt.own)


def prompt_ids(backend: Backend, prompt: Prompt) -> list[int]:
    """The whole prompt's ids, as the model reads it: what a training row starts with."""
    shared, own = encode_prompt(backend, prompt)
    return shared + own

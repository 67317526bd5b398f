"""Label names to the words a model should say: `card_arrival` -> `card arrival`.

Label names in datasets are identifiers (`card_arrival`, `ABBR`, `1`); a model scores words.
The default turns underscores, hyphens and camelCase into spaced lower-case words; the user can
override any label (`--verbalizer label=words`).
"""

from __future__ import annotations

import re


def default_verbalization(label: str) -> str:
    words = re.sub(r"([a-z])([A-Z])", r"\1 \2", label)
    words = re.sub(r"[_\-]+", " ", words)
    words = re.sub(r"\s+", " ", words).strip()
    return words.lower() if words else label


def default_verbalizer(labels: list[str]) -> dict[str, str]:
    return {label: default_verbalization(label) for label in labels}

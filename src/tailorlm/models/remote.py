"""A base model behind an OpenAI-compatible endpoint: prompt methods without weights.

    load_backend("http://127.0.0.1:8080/v1#gpt-small") -> RemoteBackend(where="remote")

Nothing is trained or bound remotely, so only methods whose artifact is text (family "prompt")
run here; the others refuse it (`MethodSpec.needs_weights`). What the engine asks of it, it does
in the best of three tiers the endpoint offers, probed once (`probe()`, recorded in every row):

    tier             request                                        label score
    echo_logprobs    /v1/completions, prompt+label, echo, logprobs  sum of the label tokens' log p:
                                                                    the local scoring, exactly
    top_logprobs     max_tokens=1 with top_logprobs                 log p of the label's first token
                                                                    (labels must differ in it)
    generate         greedy answer, matched to a verbalization      0 for the matched label,
                                                                    FLOOR for the others

OpenAI's chat models refuse echo+logprobs and llama.cpp's server returns no prompt log-probabilities,
so they land on `top_logprobs`; `transformers serve` ignores logprobs and lands on `generate`.
When labels share a first word (banking77's "card arrival", "card linking"), `top_logprobs` cannot
tell them apart and classification falls back to `generate`; the probe says so. Generation tasks
decode in every tier. Answers that match no label count as wrong (`unparsed_rate`).

Token counts for prompts come from the endpoint's `usage`; `count_tokens` without a tokenizer is an
estimate (4 characters a token) used only to project costs before a run.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from tailorlm.engine.prompt import Prompt
from tailorlm.errors import TailorError
from tailorlm.models.api_client import (ApiClient, ApiNotFound, ApiRejected, ApiUnavailable,
                                        Limits, Usage)

TIERS = ("echo_logprobs", "top_logprobs", "generate")
FLOOR = -30.0  # log-probability given to a label the endpoint did not name (e^-30: never chosen)
CHARS_PER_TOKEN = 4.0  # the usual estimate for English text with a BPE tokenizer
PROBE_TEXT = "The capital of France is"


@dataclass
class Capability:
    tier: str
    api: str  # "completions" | "chat": the route generation uses
    batch_prompts: bool = False  # completions accepts a list of prompts in one call
    notes: list[str] = field(default_factory=list)


@dataclass
class RemoteBackend:
    name: str  # URL#model as the user gave it
    identity: str  # the endpoint's model name
    path: str  # the endpoint URL (…/v1)
    client: ApiClient
    tokenizer: object | None = None  # a local tokenizer of the same model, for exact counts
    tier: str = "auto"  # or one of TIERS, to force a lower tier (tests, cost)
    sha256: str = ""  # the weights are not ours to hash
    variant: ClassVar[str] = "served behind an OpenAI-compatible API (weights unseen)"
    where: ClassVar[str] = "remote"
    virtual_prefix: ClassVar[None] = None  # nothing runs before the text
    # No torch module behind an API; a token unique to this backend, so that memos keyed by the
    # model (prompt_template's template ranking) never mix two endpoints.
    model: object = field(default_factory=object, repr=False, compare=False)
    total_params: ClassVar[None] = None  # unknown behind an API
    dtype: ClassVar[str] = "remote"
    _capability: Capability | None = None
    unparsed: int = 0  # generate tier: answers that matched no label, over all calls
    parsed: int = 0

    # -- the Backend protocol ---------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise TailorError("a remote backend without a local tokenizer cannot give token ids")
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is not None:
            return len(self.encode(text))
        return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))

    @property
    def host(self) -> str:
        return self.client.host

    def usage_mark(self) -> tuple[Usage, int, int]:
        """Where the counts stand now: API usage, answers parsed and unparsed."""
        return self.client.usage.snapshot(), self.parsed, self.unparsed

    def describe(self, since: tuple[Usage, int, int] | None = None) -> dict:
        """What a result row records: where, the endpoint's host and model, the tier, and what
        happened since the mark `since` (calls, cache hits, tokens, dollars, latency p50/p95,
        the rate of answers that matched no label)."""
        usage, parsed, unparsed = since if since is not None else (Usage(), 0, 0)
        usage = self.client.usage.since(usage)
        cap = self.capability
        parsed, unparsed = self.parsed - parsed, self.unparsed - unparsed
        total = parsed + unparsed
        return {"where": "remote", "endpoint_host": self.host, "endpoint_model": self.identity,
                "api_tier": cap.tier, "api_route": cap.api, "api_notes": cap.notes,
                "dtype": None, "device": "remote",
                "unparsed_rate": unparsed / total if total else None, **usage.to_row()}

    def query_cost(self, since: tuple[Usage, int, int], n_queries: int) -> dict:
        """Tokens and dollars one test query costs, from the answers' usage since the mark
        `since` (cached answers included: a deployed query pays for them)."""
        u = self.client.usage.since(since[0])
        p = (u.prompt_tokens + u.cached_prompt_tokens) / max(n_queries, 1)
        c = (u.completion_tokens + u.cached_completion_tokens) / max(n_queries, 1)
        return {"api_prompt_tokens_per_query": p, "api_completion_tokens_per_query": c,
                "api_usd_per_query": self.client.price(p, c)}

    def project(self, queries: float, prompt_tokens: float, n_labels: int,
                answer_tokens: int = 8) -> dict:
        """Calls, tokens and dollars `queries` queries of `prompt_tokens` each will cost in the
        probed tier (n_labels 0: generation, `answer_tokens` decoded per query)."""
        cap = self.capability
        per_query = max(n_labels, 1) if cap.tier == "echo_logprobs" and n_labels else 1
        calls = queries * (per_query if not cap.batch_prompts else 1)
        if cap.tier == "echo_logprobs" and n_labels:  # every label after the prompt, echoed
            p, c = queries * n_labels * (prompt_tokens + 2), queries * n_labels
        elif cap.tier == "top_logprobs" and n_labels:
            p, c = queries * prompt_tokens, queries
        else:
            p, c = queries * prompt_tokens, queries * answer_tokens
        return {"calls": int(round(calls)), "prompt_tokens": int(p), "completion_tokens": int(c),
                "usd": self.client.price(p, c)}

    # -- what the endpoint offers -----------------------------------------------------------
    @property
    def capability(self) -> Capability:
        if self._capability is None:
            self._capability = self.probe()
        return self._capability

    def probe(self) -> Capability:
        """Try the tiers from the best down; each try is one cached call."""
        notes: list[str] = []
        for batch in (True, False):
            prompt = [PROBE_TEXT, PROBE_TEXT + " Paris"] if batch else PROBE_TEXT
            answer = self._try("completions", {"prompt": prompt, "max_tokens": 1, "echo": True,
                                               "logprobs": 1, "temperature": 0})
            if answer is not None and _echoed_logprobs(answer):
                return self._forced(Capability("echo_logprobs", "completions", batch, notes))
        completions_ok = False
        answer = self._try("completions", {"prompt": PROBE_TEXT, "max_tokens": 1, "logprobs": 5,
                                           "temperature": 0})
        if answer is not None:
            completions_ok = True
            if _top_completion(answer):
                notes.append("no prompt log-probabilities (echo)")
                return self._forced(Capability("top_logprobs", "completions", False, notes))
        answer = self._try("chat", {"messages": [{"role": "user", "content": PROBE_TEXT}],
                                    "max_tokens": 1, "logprobs": True, "top_logprobs": 5,
                                    "temperature": 0})
        if answer is not None and _top_chat(answer):
            notes.append("no prompt log-probabilities (echo); chat top_logprobs only")
            return self._forced(Capability("top_logprobs", "chat", False, notes))
        notes.append("no log-probabilities: labels are read from generated answers")
        return self._forced(Capability("generate", "completions" if completions_ok else "chat",
                                       False, notes))

    def _forced(self, cap: Capability) -> Capability:
        if self.tier == "auto" or self.tier == cap.tier:
            return cap
        if TIERS.index(self.tier) < TIERS.index(cap.tier):
            raise TailorError(f"{self.host} does not offer tier {self.tier} (best: {cap.tier})")
        cap.notes.append(f"tier {self.tier} forced (the endpoint offers {cap.tier})")
        cap.tier = self.tier
        return cap

    def _try(self, route: str, body: dict) -> dict | None:
        try:
            return self.client.request(route, body)
        except ApiRejected:
            return None
        except ApiNotFound:  # a chat-only server has no /v1/completions; chat's 404 is final
            if route == "completions":
                return None
            raise
        except ApiUnavailable as e:  # some servers answer 500 to a feature they lack
            if e.status == 500:
                return None
            raise

    # -- scoring and generation -------------------------------------------------------------
    def score_labels(self, prompts: list[Prompt], continuations: list[str], *,
                     on_tokens=None) -> np.ndarray:
        """(N, L) label scores in the probed tier (see the module docstring)."""
        return self._scores(prompts, continuations, on_tokens)[0]

    def predict_labels(self, prompts: list[Prompt], continuations: list[str],
                       labels: list[str], adjust, *, on_tokens=None) -> list[str]:
        """Labels as predicted from the adjusted scores; in the generate tier an answer that
        matches no label predicts "" (counted wrong), not whichever label its flat row favours."""
        raw, unparsed = self._scores(prompts, continuations, on_tokens)
        best = adjust(raw).argmax(axis=1)
        return ["" if n in unparsed else labels[i] for n, i in enumerate(best)]

    def _scores(self, prompts, continuations, on_tokens) -> tuple[np.ndarray, set[int]]:
        mark = self.client.usage.snapshot()
        tier = self._label_tier(continuations)
        texts = [p.text for p in prompts]
        unparsed: set[int] = set()
        if tier == "echo_logprobs":
            scores = self._score_echo(texts, continuations)
        elif tier == "top_logprobs":
            scores = self._score_top(texts, continuations)
        else:
            words = [c.strip() for c in continuations]
            answers = self.generate(prompts, stop=("\n",),
                                    max_new_tokens=self._answer_tokens(continuations))
            scores = np.full((len(texts), len(continuations)), FLOOR)
            for i, answer in enumerate(answers):
                j = match_label(answer, words)
                if j is None:
                    unparsed.add(i)
                else:
                    scores[i, j] = 0.0
            self.unparsed += len(unparsed)
            self.parsed += len(answers) - len(unparsed)
        _count_usage(on_tokens, self.client.usage.since(mark))
        return scores, unparsed

    def generate(self, prompts: list[Prompt], *, stop: tuple[str, ...] = ("\n",),
                 max_new_tokens: int = 64, on_tokens=None) -> list[str]:
        """The endpoint's greedy answer to each prompt, cut before the first stop string."""
        cap = self.capability
        bodies = []
        for p in prompts:
            body = {"max_tokens": max_new_tokens, "temperature": 0}
            if stop:
                body["stop"] = list(stop)[:4]  # the API takes up to 4
            if cap.api == "completions":
                body["prompt"] = p.text
            else:
                body["messages"] = [{"role": "user", "content": p.text}]
            bodies.append(body)
        mark = self.client.usage.snapshot()
        answers = self.client.request_many(cap.api, bodies)
        _count_usage(on_tokens, self.client.usage.since(mark))
        texts = [_answer_text(a) for a in answers]
        out = []
        for text in texts:  # some servers keep the stop string (transformers serve does)
            cut = min((k for k in (text.find(s) for s in stop if s) if k >= 0), default=-1)
            out.append((text if cut < 0 else text[:cut]).strip())
        return out

    def _label_tier(self, continuations: list[str]) -> str:
        cap = self.capability
        if cap.tier == "top_logprobs" and not distinct_first_words(continuations):
            note = "labels share a first word: top_logprobs cannot tell them apart, generate used"
            if note not in cap.notes:
                cap.notes.append(note)
            return "generate"
        return cap.tier

    def _answer_tokens(self, continuations: list[str]) -> int:
        return max(self.count_tokens(c) for c in continuations) + 4

    def _score_echo(self, texts: list[str], continuations: list[str]) -> np.ndarray:
        cap = self.capability
        body = lambda prompt: {"prompt": prompt, "max_tokens": 1, "echo": True,  # noqa: E731
                               "logprobs": 1, "temperature": 0}
        if cap.batch_prompts:  # one call per query: every label after it
            answers = self.client.request_many(
                "completions", [body([t + c for c in continuations]) for t in texts])
            choices = [sorted(a["choices"], key=lambda c: c["index"]) for a in answers]
        else:
            flat = self.client.request_many(
                "completions", [body(t + c) for t in texts for c in continuations])
            L = len(continuations)
            choices = [[a["choices"][0] for a in flat[i * L:(i + 1) * L]]
                       for i in range(len(texts))]
        scores = np.zeros((len(texts), len(continuations)))
        for i, text in enumerate(texts):
            for j, c in enumerate(continuations):
                scores[i, j] = _span_logprob(choices[i][j]["logprobs"], len(text),
                                             len(text) + len(c))
        return scores

    def _score_top(self, texts: list[str], continuations: list[str]) -> np.ndarray:
        cap = self.capability
        if cap.api == "completions":
            bodies = [{"prompt": t, "max_tokens": 1, "logprobs": 5, "temperature": 0}
                      for t in texts]
        else:
            bodies = [{"messages": [{"role": "user", "content": t}], "max_tokens": 1,
                       "logprobs": True, "top_logprobs": 20, "temperature": 0} for t in texts]
        answers = self.client.request_many(cap.api, bodies)
        scores = np.zeros((len(texts), len(continuations)))
        for i, a in enumerate(answers):
            top = _top_completion(a) if cap.api == "completions" else _top_chat(a)
            scores[i] = first_token_scores(top, continuations)
        return scores


def _count_usage(on_tokens, usage: Usage) -> None:
    """The engine's cost meter counts tokens processed: here, what the endpoint billed."""
    if on_tokens is not None:
        on_tokens(usage.prompt_tokens + usage.completion_tokens)


def first_token_scores(top: dict[str, float], continuations: list[str]) -> np.ndarray:
    """Each label's score from one position's top log-probabilities: the longest listed token
    that begins the label (with or without its leading space); labels not listed get a score
    below every listed one."""
    floor = min(top.values(), default=0.0) - math.log(2) if top else FLOOR
    out = np.full(len(continuations), floor)
    for j, c in enumerate(continuations):
        best = None
        for token, lp in top.items():
            t = token
            if t.strip() and (c.startswith(t) or c.lstrip().startswith(t.lstrip())):
                if best is None or len(t.strip()) > len(best[0].strip()):
                    best = (t, lp)
        if best is not None:
            out[j] = best[1]
    return out


def distinct_first_words(continuations: list[str]) -> bool:
    """Whether the labels differ in their first word (a proxy for their first token)."""
    firsts = [_norm(c).split(" ")[0] for c in continuations]
    return len(set(firsts)) == len(firsts)


def match_label(answer: str, words: list[str]) -> int | None:
    """Index of the label verbalization `answer` gives: the whole answer, else the longest label
    it starts with, else the label named earliest in it; None when it names none."""
    a = _norm(answer)
    if not a:
        return None
    norm = [_norm(w) for w in words]
    if a in norm:
        return norm.index(a)
    starts = [j for j, w in enumerate(norm) if w and (a.startswith(w + " ") or a == w)]
    if starts:
        return max(starts, key=lambda j: len(norm[j]))
    found = [(m.start(), -len(w), j) for j, w in enumerate(norm) if w
             for m in [re.search(r"(^| )" + re.escape(w) + r"( |$)", a)] if m]
    return min(found)[2] if found else None


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _echoed_logprobs(answer: dict) -> bool:
    choice = (answer.get("choices") or [{}])[0]
    lp = choice.get("logprobs") or {}
    values = [v for v in (lp.get("token_logprobs") or []) if v is not None]
    return len(values) >= 2 and bool(lp.get("text_offset"))


def _top_completion(answer: dict) -> dict[str, float]:
    choice = (answer.get("choices") or [{}])[0]
    tops = (choice.get("logprobs") or {}).get("top_logprobs") or []
    return dict(tops[0]) if tops and tops[0] else {}


def _top_chat(answer: dict) -> dict[str, float]:
    choice = (answer.get("choices") or [{}])[0]
    content = (choice.get("logprobs") or {}).get("content") or []
    if not content:
        return {}
    return {t["token"]: t["logprob"] for t in content[0].get("top_logprobs") or []}


def _answer_text(answer: dict) -> str:
    choice = (answer.get("choices") or [{}])[0]
    if "message" in choice and choice["message"] is not None:
        return choice["message"].get("content") or ""
    return choice.get("text") or ""


def _span_logprob(logprobs: dict, start: int, end: int) -> float:
    """Sum of the echoed token log-probabilities whose text starts in [start, end)."""
    total = 0.0
    for offset, lp in zip(logprobs["text_offset"], logprobs["token_logprobs"]):
        if start <= offset < end and lp is not None:
            total += lp
    return total


def split_model_url(spec: str) -> tuple[str, str]:
    """"http://host/v1#model" -> ("http://host/v1", "model")."""
    url, sep, model = spec.partition("#")
    if not sep or not model:
        raise TailorError(f"{spec!r}: name the model after the URL, as URL#MODEL "
                          "(e.g. http://127.0.0.1:8080/v1#gpt-small)")
    return url, model


def remote_backend(spec: str, *, key_env: str | None = None, max_calls: int | None = None,
                   max_usd: float | None = None, usd_per_1m_input: float = 0.0,
                   usd_per_1m_output: float = 0.0, concurrency: int = 4, tier: str = "auto",
                   tokenizer=None, **client_options) -> RemoteBackend:
    """A RemoteBackend for "URL#MODEL" (the plan's `api:` options are these keywords); the API
    key is read from the environment variable `key_env` names (none is sent without one)."""
    url, model = split_model_url(spec)
    key = None
    if key_env:
        key = os.environ.get(key_env)
        if not key:
            raise TailorError(f"--api-key-env {key_env}: that environment variable is not set; "
                              "export it with your key")
    if tier != "auto" and tier not in TIERS:
        raise TailorError(f"api.tier must be auto or one of {', '.join(TIERS)}, not {tier!r}")
    limits = Limits(max_calls, max_usd, usd_per_1m_input, usd_per_1m_output)
    client = ApiClient(url, model, key, limits=limits, concurrency=concurrency, **client_options)
    return RemoteBackend(spec, model, url, client, tokenizer=tokenizer, tier=tier)

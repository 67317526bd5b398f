"""instruction_search: search the instruction above the prompt, scored on validation rows.

Nothing is trained and the artifact is text (an instruction inside a template), so it runs on a
local model and on an API-only one alike. The query layout and answer cue are prompt_template's
zero-shot choice; the search moves only the instruction line above them:

    seeds ─► score each ─► best ─► round r: edits of the best (+ proposals) ─► score ─► keep if
                                   better ─► ... until `rounds`, or a budget runs out

- Seeds are built from the task: no instruction (prompt_template's own choice, so the search
  never starts below it), its description, its label words ("Answer with one of: ..."), the
  template's answer cue ("What is the sentiment of the text?").
- Edits are GrIPS's (Prasad et al. 2022, arXiv 2203.07281): delete a phrase, swap two phrases,
  paraphrase a word from a small table, add a phrase from the seeds' pool. Greedy: a candidate
  replaces the best only when it scores higher.
- `proposer: URL#MODEL` adds an LLM endpoint's proposals each round (APE, Zhou et al. 2022:
  instructions induced from input/output pairs; OPRO, Yang et al. 2023: a meta-prompt with the
  previous instructions and their scores, sorted ascending).

A candidate's score is the metric (accuracy, or the task's) on the judged validation rows; for
classification the mean log-probability of the gold label (normalised over the labels) breaks
ties, since a few dozen rows give accuracy in coarse steps. An answer that matches no label (an
API without log-probabilities) counts as wrong. The search stops at `max_seconds`, `max_calls`,
`max_tokens` or `max_usd` (the last three counted on the backend's API usage), and records its
trajectory: the best score after each round, candidates scored, calls, tokens, cache hits and cost
(`search.json` in the adapter folder).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tailorlm.data.task import Task
from tailorlm.errors import TailorError
from tailorlm.methods import prompt_template
from tailorlm.methods.contract import MethodConfig, MethodSpec, choose
from tailorlm.methods.index import register
from tailorlm.methods.prompt_adapter import PromptAdapter
from tailorlm.methods.selection import validation_subset, with_calibration
from tailorlm.methods.templates import resolve

NAME = "instruction_search"
SEARCH_FILE = "search.json"

# Paraphrase table for GrIPS's "paraphrase" edit (GrIPS uses a paraphrase model; a table keeps the
# built-in proposer free of any second model). Each word maps to words that can replace it.
SYNONYMS = {
    "decide": ["determine", "choose", "identify"], "classify": ["categorize", "label"],
    "text": ["input", "sentence", "passage"], "answer": ["respond", "reply"],
    "one": ["exactly one"], "category": ["class", "label"], "choose": ["pick", "select"],
    "write": ["give", "produce"], "output": ["result", "response"],
}
EXTRA_PHRASES = ["Answer with one word.", "Read the text carefully.", "Be concise.",
                 "Give only the answer."]


@dataclass
class InstructionSearchConfig(MethodConfig):
    # Query layout and answer cue: "auto" = prompt_template's zero-shot choice, or a template.
    template: str | dict = "auto"
    rounds: int = 3  # edit rounds after the seeds; each scores `edits_per_round` candidates
    edits_per_round: int = 4  # edited candidates scored per round: more explores, costs more
    calibrate: str = "auto"  # contextual calibration of the winner: auto | on | off
    metric: str | None = None  # what candidates are judged by; None = the task's default
    # Budget of the search itself (None = no cap); calls, tokens and dollars count API usage.
    max_seconds: float | None = 600.0  # wall time of the search
    max_calls: int | None = None  # API calls (proposer's included)
    max_tokens: int | None = None  # API tokens, prompt and completion
    max_usd: float | None = None  # API dollars at the plan's prices
    # An LLM endpoint that proposes instructions too, "URL#MODEL" (APE/OPRO style), its key's
    # environment variable, and proposals per round.
    proposer: str | None = None
    proposer_key_env: str | None = None  # environment variable holding the proposer's API key
    proposals_per_round: int = 2  # instructions the proposer writes per round

    def validate(self) -> None:
        choose("calibrate", self.calibrate, ("auto", "on", "off"))
        for name in ("rounds", "edits_per_round", "proposals_per_round"):
            if getattr(self, name) < 0:
                raise TailorError(f"{name} must be at least 0, not {getattr(self, name)}")
        if self.proposer is not None and "#" not in self.proposer:
            raise TailorError(f"proposer {self.proposer!r}: write URL#MODEL, e.g. "
                              "http://host/v1#big-model")


@dataclass
class SearchAdapter(PromptAdapter):
    """A PromptAdapter that also keeps how its instruction was found (written to search.json)."""

    search: dict = field(default_factory=dict)

    def save_files(self, directory) -> None:
        Path(directory, SEARCH_FILE).write_text(json.dumps(self.search, indent=1),
                                                encoding="utf-8")


# -- the search -------------------------------------------------------------------------------
def fit(backend, train: Task, val: Task | None, config: InstructionSearchConfig, *,
        seed: int = 0, work_dir=None, resume: bool = False,
        metric: str | None = None) -> SearchAdapter:
    # the plan's metric, unless the method's own option names one
    config = dataclasses.replace(config, metric=config.metric or metric)
    judge = validation_subset(val if val is not None and len(val) else train, seed)
    task = train.with_examples([])
    if config.template == "auto":  # the same zero-shot ranking few_shot asks for (memoized)
        zero_shot = prompt_template.PromptTemplateConfig(template="auto", calibrate="off")
        base = prompt_template.fit(backend, train, None, zero_shot, seed=seed).template
    else:
        base = resolve(config.template, train)
    rng = np.random.default_rng(seed)
    proposer = _proposer(config)
    budget = _Budget(config, backend, proposer)
    scored: dict[str, tuple[float, float, np.ndarray | None]] = {}  # instruction -> score

    def score(instruction: str) -> float | None:
        if instruction in scored:
            return scored[instruction][0]
        if scored and budget.exhausted():  # the first seed (no instruction) always runs
            return None
        adapter = PromptAdapter(NAME, config, task, dataclasses.replace(
            base, name="searched", instruction=instruction))
        scored[instruction] = _score(backend, adapter, judge, config.metric)
        return scored[instruction][0]

    seeds = seed_instructions(train, base)
    pool = _phrases(seeds) + EXTRA_PHRASES
    for s in seeds:
        score(s)
    best = max(scored, key=lambda s: scored[s][:2])
    trajectory = [{"round": 0, "best_score": scored[best][0], "instruction": best,
                   "scored": len(scored), **budget.spent()}]
    for r in range(1, config.rounds + 1):
        candidates = [edit(best, pool, rng) for _ in range(config.edits_per_round)]
        if proposer is not None and not budget.exhausted():
            candidates += propose(proposer, scored, judge, config.proposals_per_round, r)
        for cand in candidates:
            if score(cand) is not None and scored[cand][:2] > scored[best][:2]:
                best = cand
        trajectory.append({"round": r, "best_score": scored[best][0], "instruction": best,
                           "scored": len(scored), **budget.spent()})
        if budget.exhausted():
            break
    raw = scored[best][2]
    chosen = with_calibration(backend, PromptAdapter(NAME, config, task, dataclasses.replace(
        base, name="searched", instruction=best)), raw, judge, config.calibrate)
    report = {"metric": config.metric or _default_metric(judge), "judged_rows": len(judge),
              "base_template": base.name, "seed_scores": {s: scored[s][0] for s in seeds if s in scored},
              "trajectory": trajectory, "candidates_scored": len(scored),
              "stopped": budget.reason or "rounds done", **budget.spent(),
              "proposer": config.proposer,
              "proposer_usage": proposer.client.usage.to_row() if proposer else None}
    return SearchAdapter(NAME, config, task, chosen.template, bias=chosen.bias, search=report)


def seed_instructions(task: Task, base) -> list[str]:
    """Starting instructions built from the task: none, its description, its labels, the cue."""
    cue = base.answer.strip().rstrip(":").strip().lower() or "answer"
    seeds = [""]
    if task.kind == "classification":
        seeds += ["Decide {description}. Answer with one of: {labels}.",
                  f"What is the {cue} of the text? Answer with one of: {{labels}}.",
                  "Classify the text as {labels}."]
    else:
        seeds += ["{description}.", "Write the output for the input."]
    if task.description:
        seeds.append(task.description.strip().rstrip(".") + ".")
    return list(dict.fromkeys(seeds))


def edit(instruction: str, pool: list[str], rng: np.random.Generator) -> str:
    """One GrIPS edit of `instruction`: delete, swap, paraphrase or add (an empty one: add).
    An add inserts a phrase the instruction does not already hold: a repeated sentence ("Be
    concise. Be concise.") says nothing new and only fits the judged rows' noise."""
    phrases = _split(instruction)
    fresh = _fresh(phrases, pool)
    ops = (["add"] if fresh else []) + (["delete", "paraphrase"] if phrases else []) + \
        (["swap"] if len(phrases) > 1 else [])
    if not ops:  # nothing to delete and nothing new to add
        return instruction
    op = ops[int(rng.integers(len(ops)))]
    if op == "delete":
        del phrases[int(rng.integers(len(phrases)))]
    elif op == "swap":
        i, j = rng.choice(len(phrases), 2, replace=False)
        phrases[i], phrases[j] = phrases[j], phrases[i]
    elif op == "paraphrase":
        i = int(rng.integers(len(phrases)))
        words = phrases[i].split(" ")
        spots = [k for k, w in enumerate(words) if _bare(w) in SYNONYMS]
        if not spots and fresh:  # no word in the table: add a new phrase instead
            phrases.append(fresh[int(rng.integers(len(fresh)))])
        elif not spots:  # nor a new phrase: delete one
            del phrases[int(rng.integers(len(phrases)))]
        else:
            k = spots[int(rng.integers(len(spots)))]
            bare = _bare(words[k])
            new = SYNONYMS[bare][int(rng.integers(len(SYNONYMS[bare])))]
            if words[k][:1].isupper():
                new = new[:1].upper() + new[1:]
            words[k] = re.sub(re.escape(bare), new, words[k], count=1, flags=re.IGNORECASE)
            phrases[i] = " ".join(words)
    else:
        phrases.insert(int(rng.integers(len(phrases) + 1)), fresh[int(rng.integers(len(fresh)))])
    return _join(phrases)


def _fresh(phrases: list[str], pool: list[str]) -> list[str]:
    """The pool's phrases that `phrases` does not already hold (case and spacing aside)."""
    held = {_norm(p) for p in phrases}
    return [p for p in pool if _norm(p) not in held]


def _norm(phrase: str) -> str:
    return " ".join(phrase.lower().split())


def propose(proposer, scored: dict, judge: Task, n: int, round_: int) -> list[str]:
    """Instructions an LLM writes from input/output pairs (APE) and the scored instructions so
    far, worst first (OPRO); one chat call each, cached like every API call."""
    history = sorted(((v[0], s) for s, v in scored.items() if s), key=lambda x: x[0])[-8:]
    pairs = [(e.input, e.target) for e in judge.examples[:3]]
    meta = ("Below are instructions for a task, each with its score (higher is better), "
            "worst first:\n" + "".join(f"score {sc:.3f}: {s}\n" for sc, s in history)
            + "\nExamples of the task:\n" + "".join(f"Input: {i}\nOutput: {o}\n" for i, o in pairs)
            + "\nWrite one new instruction, different from all above, that would score higher. "
            "Reply with the instruction only.")
    out = []
    for j in range(n):
        try:
            answer = proposer.client.request("chat", {
                "messages": [{"role": "user", "content": meta}], "max_tokens": 60,
                "temperature": 1.0, "seed": round_ * 100 + j})
        except TailorError:  # a cap or an error at the proposer: the built-in edits go on
            break
        text = ((answer.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
        line = next((x.strip().strip('"') for x in text.splitlines() if x.strip()), "")
        if line and "{" not in line:  # braces would be read as placeholders
            out.append(line[:300])
    return out


def from_state(config: InstructionSearchConfig, state: dict, directory=None) -> SearchAdapter:
    adapter = PromptAdapter.from_state(NAME, config, state)
    search = {}
    if directory is not None and Path(directory, SEARCH_FILE).exists():
        search = json.loads(Path(directory, SEARCH_FILE).read_text(encoding="utf-8"))
    return SearchAdapter(**{f.name: getattr(adapter, f.name)
                            for f in dataclasses.fields(PromptAdapter)}, search=search)


# -- helpers ----------------------------------------------------------------------------------
def _score(backend, adapter: PromptAdapter, judge: Task, metric: str | None):
    """(metric, tie-break, raw label scores) of one candidate on the judged rows."""
    from tailorlm.engine.evaluate import label_scores, quick_score
    from tailorlm.engine.metrics import get_metric

    if judge.kind != "classification":
        return quick_score(backend, adapter, judge, metric), 0.0, None
    raw = label_scores(backend, adapter, judge)  # (N, L), uncalibrated
    flat = raw.max(1) == raw.min(1)  # no information: an answer that matched no label
    preds = ["" if f else judge.labels[i] for f, i in zip(flat, raw.argmax(1))]
    value = get_metric(metric or "accuracy").fn(preds, [e.label for e in judge.examples])
    gold = np.array([judge.labels.index(e.label) for e in judge.examples])
    norm = raw - np.logaddexp.reduce(raw, axis=1, keepdims=True)
    return float(value), float(norm[np.arange(len(gold)), gold].mean()), raw


def _default_metric(task: Task) -> str:
    return "accuracy" if task.kind == "classification" else "rouge_l"


class _Budget:
    """Seconds, and the API calls, tokens and dollars of the scorer (when remote) and the
    proposer together; cache hits are counted apart and cost nothing."""

    def __init__(self, config: InstructionSearchConfig, backend, proposer=None):
        self.config, self.backend, self.proposer = config, backend, proposer
        self.start = time.perf_counter()
        self.mark = backend.usage_mark()
        self.reason = None

    def spent(self) -> dict:
        out = {"seconds": round(time.perf_counter() - self.start, 3)}
        usages = [self.backend.client.usage.since(self.mark[0])] if self.mark is not None \
            else []
        if self.proposer is not None:
            usages.append(self.proposer.client.usage)
        if usages:
            out.update(calls=sum(u.calls for u in usages),
                       cache_hits=sum(u.cache_hits for u in usages),
                       tokens=sum(u.prompt_tokens + u.completion_tokens for u in usages),
                       usd=sum(u.usd for u in usages))
        return out

    def exhausted(self) -> bool:
        c, s = self.config, self.spent()
        checks = [("max_seconds", s["seconds"]), ("max_calls", s.get("calls", 0)),
                  ("max_tokens", s.get("tokens", 0)), ("max_usd", s.get("usd", 0.0))]
        for name, used in checks:
            cap = getattr(c, name)
            if cap is not None and used >= cap:
                self.reason = f"budget: {name}={cap} reached"
                return True
        return False


def _proposer(config: InstructionSearchConfig):
    if not config.proposer:
        return None
    from tailorlm.models.remote import remote_backend

    return remote_backend(config.proposer, key_env=config.proposer_key_env)


def _split(instruction: str) -> list[str]:
    """Phrases: sentences, and clauses at commas and colons-with-lists kept whole."""
    parts = re.split(r"(?<=[.?!])\s+", instruction.strip())
    return [p for p in parts if p]


def _bare(word: str) -> str:
    return word.lower().strip(".,?:!")


def _join(phrases: list[str]) -> str:
    return " ".join(p.strip() for p in phrases if p.strip())


def _phrases(seeds: list[str]) -> list[str]:
    return list(dict.fromkeys(p for s in seeds for p in _split(s)))


MAX_SEEDS = 5  # seed_instructions gives at most: none, three from the labels and cue, the description


def choice_passes(config: InstructionSearchConfig) -> float:
    """Passes over the judged rows the search scores, for compare/budget.py: every seed, each
    round's edits (and proposals, whose own chat calls are not counted here), and the winner's
    calibration. A pass is one query per judged row: through an API, one call per row (tiers a,
    b, c alike), with the row's tokens and the instruction's. `max_seconds` (and the API caps)
    may stop it sooner: the estimate is the search run to its last round."""
    per_round = config.edits_per_round + (config.proposals_per_round if config.proposer else 0)
    return MAX_SEEDS + config.rounds * per_round + 1


register(MethodSpec(NAME, InstructionSearchConfig, fit, from_state, family="prompt",
                    choice_passes=choice_passes))

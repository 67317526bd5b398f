"""The prompt search every method shares: which built-in template reads this task best.

    candidates   the task kind's built-in templates (methods/templates.py: answer cues for
                 classification, two layouts for generation)
    judged on    every row available: the training rows and the validation rows, up to
                 selection.judged_rows (200; fewer with many labels)
    score        per row: the gold label's normalised log-probability (classification, the
                 proxy of methods/selection.py), or the plan's metric of the greedy output
    ties         a candidate the data cannot separate from the best: the best's lead over it,
                 paired over rows, is under TIE_Z standard errors (d = s_best - s_c per row:
                 mean(d) <= TIE_Z * std(d) / sqrt(n)); with one row every candidate ties
    tie-break    a documented prior among the tied: a cue the task's description names
                 ("the sentiment of a review" -> Sentiment), else a cue its label words suggest
                 (positive/negative -> Sentiment; sports/business -> Topic), else the data's best

Every method reads the result: prompt_template and few_shot as their template (before
calibration and demonstrations), the learning methods as the prompt they train and predict
through (prompt-based fine-tuning: Gao et al. 2021, "Making Pre-trained Language Models Better
Few-shot Learners": 92.7 against 81.4 for plain fine-tuning at K=16 on SST-2). The label words
are the task's verbalizer. The search runs once per training sample and model in a process
(memoized on the data's fingerprint, the backend and the metric), however many methods ask.

Why the tie rule: every method inherits the choice, and on 8 rows the best-scoring cue can be a
fluke (a review task at k=4 chose `Type:`, test 0.58, where two other seeds chose a cue scoring
0.81). The margin (the chosen template's score minus the best other's) and the tied set are kept
with the choice so a report can show how firm it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from tailorlm.data.task import Task
from tailorlm.methods.selection import gold_logprobs, metric_name, validation_subset
from tailorlm.methods.templates import Template, builtin_templates

TIE_Z = 2.0
# Label words that suggest an answer cue (lower case). A prior, not a rule: it only breaks ties
# the data leaves, and only between built-in cues.
LABEL_WORD_CUES = {
    "Sentiment": {"positive", "negative", "neutral", "good", "bad", "great", "terrible", "pos",
                  "neg", "mixed", "favorable", "unfavorable", "favourable", "unfavourable",
                  "happy", "sad", "angry", "like", "dislike"},
    "Topic": {"sports", "sport", "business", "world", "politics", "science", "technology",
              "tech", "health", "entertainment", "finance", "economy"},
}


@dataclass
class TemplateChoice:
    template: Template
    scores: dict[str, float]  # mean per-row score of each candidate, by template name
    tied: list[str]  # candidates the data could not separate from the best (best included)
    margin: float  # the chosen template's score minus the best other candidate's
    by: str  # "data", "prior: ...", "only candidate", "pinned"
    n_judged: int
    judge: Task | None = field(default=None, repr=False)  # the rows it was judged on
    raw: np.ndarray | None = field(default=None, repr=False)  # its raw label scores on them

    def record(self) -> dict:
        """What a report shows of the choice (adapter state, train_result)."""
        return {"template": self.template.name, "by": self.by, "margin": round(self.margin, 4),
                "tied": self.tied, "n_judged": self.n_judged,
                "scores": {k: round(v, 4) for k, v in self.scores.items()}}


def pinned(template: Template) -> TemplateChoice:
    return TemplateChoice(template, {}, [], 0.0, "pinned", 0)


def judge_rows(train: Task, val: Task | None, seed: int) -> Task:
    """Every row available to judge on, training and validation rows together (capped)."""
    rows = list(train.examples) + (list(val.examples) if val is not None else [])
    return validation_subset(train.with_examples(rows), seed)


def search(backend, train: Task, val: Task | None, seed: int = 0,
           metric: str | None = None) -> TemplateChoice:
    """The built-in template that reads `train`'s task best, memoized (see the module doc)."""
    judge = judge_rows(train, val, seed)
    templates = list(builtin_templates(train).values())
    key = (id(backend.model), backend.sha256, judge.fingerprint(), tuple(templates),
           metric_name(train, metric), train.description, tuple(train.labels or ()),
           tuple(sorted((train.verbalizer or {}).items())))
    if key not in _SEARCHES:
        _SEARCHES[key] = _search(backend, train, judge, templates, metric)
    return _SEARCHES[key]


_SEARCHES: dict = {}  # (model, judged rows, candidates, metric, task words) -> TemplateChoice


def _search(backend, task: Task, judge: Task, templates: list[Template],
            metric: str | None) -> TemplateChoice:
    from tailorlm.methods.prompt_adapter import PromptAdapter

    adapters = [PromptAdapter("prompt_template", None, task.with_examples([]), t)
                for t in templates]
    per_row, raws = row_scores(backend, adapters, judge, metric)  # (C, N)
    means = per_row.mean(axis=1)
    best = int(np.argmax(means))
    tied = [c for c in range(len(templates)) if c == best or not separable(per_row[best],
                                                                           per_row[c])]
    chosen, by = best, "data"
    if len(templates) == 1:
        by = "only candidate"
    elif len(tied) > 1:
        prior = {c: prior_of(templates[c], task) for c in tied}
        strongest = max(prior.values(), key=lambda p: p[0])
        if strongest[0] > 0:
            favoured = [c for c in tied if prior[c][0] == strongest[0]]
            chosen = max(favoured, key=lambda c: means[c])
            if chosen != best:
                by = f"prior: {prior[chosen][1]} (tied on {len(judge)} rows)"
    others = [means[c] for c in range(len(templates)) if c != chosen]
    margin = float(means[chosen] - max(others)) if others else 0.0
    return TemplateChoice(templates[chosen], {t.name: float(m) for t, m in zip(templates, means)},
                          [templates[c].name for c in tied], margin, by, len(judge), judge,
                          raws[chosen] if raws else None)


def row_scores(backend, adapters, judge: Task,
               metric: str | None) -> tuple[np.ndarray, list[np.ndarray]]:
    """((C, N) per-row scores, each candidate's raw label scores (classification))."""
    from tailorlm.engine.evaluate import _references, label_scores, predict
    from tailorlm.engine.metrics import get_metric

    if judge.kind == "classification":
        raws = [label_scores(backend, a, judge) for a in adapters]
        return np.stack([gold_logprobs(raw, judge) for raw in raws]), raws
    m = get_metric(metric_name(judge, metric))
    refs = _references(judge)
    rows = []
    for a in adapters:
        preds = predict(backend, a, judge)
        rows.append(m.per_example(preds, refs) if m.per_example is not None
                    else np.full(len(judge), m.fn(preds, refs)))
    return np.stack(rows), []


def separable(best: np.ndarray, other: np.ndarray) -> bool:
    """Whether the best's lead over `other` is beyond noise, paired over the same rows."""
    d = best - other
    if len(d) < 2:
        return False
    se = d.std(ddof=1) / np.sqrt(len(d))
    return bool(d.mean() > TIE_Z * se) if se > 0 else bool(d.mean() > 0)


def prior_of(template: Template, task: Task) -> tuple[int, str]:
    """(strength, why): 2 if the task's description names the template's cue, 1 if its label
    words suggest it, 0 otherwise."""
    cue = template.answer.strip().rstrip(":").strip()
    if not cue:
        return 0, ""
    description = (task.description or "").lower()
    if description and re.search(rf"\b{re.escape(cue.lower())}", description):
        return 2, f"the task's description names {cue!r}"
    words = {w for lab in task.labels or [] for w in
             re.findall(r"[a-z]+", str((task.verbalizer or {}).get(lab, lab)).lower())}
    if words & LABEL_WORD_CUES.get(cue, set()):
        return 1, f"the label words suggest {cue!r}"
    return 0, ""

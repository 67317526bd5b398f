"""report.html: one self-contained page for a comparison, its plots drawn as inline SVG.

The page reads only the summary dict (docs/report-schema.md) and opens with nothing else: no
scripts, no fonts or images from the network, CSS inline. Plots are SVG written here rather than
matplotlib so the package carries no plotting dependency and every label stays text. Each string
that came from the user or a run (task, method and template names, reasons, table cells) goes
through `_e`, inside SVG too; numbers are formatted here.

The four plots, each `<svg data-plot=...>`:

    pareto       score (± std over seeds) against monthly cost, or fit seconds when costs are
                 null; the methods on the quality-vs-cost front are ringed and joined
    curves       score against k (log2), one line per method
    sensitivity  min..max of the scores over prompt templates, one bar per method
    breakeven    cumulative cost fit_usd + N * per_query_usd over the first N queries

A method keeps one palette color on every plot and table.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass

from tailorlm.compare.baselines import lines as baseline_lines
from tailorlm.compare.report import FIT_COLUMNS, api_lines, constraints_line, fit_rows, \
    separability_rows, wall_time

PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#59a14f", "#b07aa1", "#76b7b2", "#edc948",
           "#9c755f", "#ff9da7", "#7f7f7f"]  # Tableau 10: distinct from each other on white
W, H = 640, 330                  # the viewBox of a plot
LEFT, RIGHT, TOP, BOTTOM = 64, 470, 14, 282  # its plot area; legends sit right of RIGHT
ROW = 28                         # the height of one method's row in the sensitivity plot

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;
  margin:24px auto;max-width:1240px;padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}
h3{font-size:15px;margin:12px 0 4px}
.facts span{margin-right:18px;color:#555}.facts b{color:#222}
.rec{border:2px solid #3d7a4a;border-radius:8px;padding:4px 18px 10px;background:#f6fbf4}
.rec ul{margin:4px 0}.rec h2{margin-top:12px}.muted{color:#666}
table{border-collapse:collapse;margin:8px 0;font-size:13px;display:block;
  overflow-x:auto}
th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left}td.num{white-space:nowrap}
th{background:#f3f3f3;white-space:normal;vertical-align:bottom}.num{text-align:right}
tr.chosen td{background:#eef7ea;font-weight:600}
.sw{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:6px}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(540px,1fr));gap:18px}
figure{margin:0;border:1px solid #e3e3e3;border-radius:6px;padding:8px 10px}
figure h3{margin:2px 0 4px}svg{width:100%;height:auto;display:block}
svg text{font-size:12px;fill:#333}figcaption{color:#555;font-size:13px;margin-top:4px}
.flag{border-left:4px solid #c77c02;background:#fff7e6;padding:4px 10px;margin:6px 0}
td.hot{background:#fde2e1}td.diag{background:#e3f1df}
.grid{stroke:#eaeaea}.frame{fill:none;stroke:#aaa}.missing{fill:#999;font-style:italic}
"""


def _e(value) -> str:
    return html.escape("–" if value is None else str(value), quote=True)


def _get(d: dict | None, *keys):
    """d[k1][k2]..., or None where any level is missing or null."""
    for key in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _fmt(value, spec: str, then=None, sep: str = " / ") -> str:
    """`value` formatted, and `then` after `sep` when it is there too; a dash for None."""
    if value is None:
        return "–"
    return format(value, spec) + ("" if then is None else sep + format(then, spec))


def _short(v: float) -> str:
    """A tick label: 3 significant digits, k and M for large numbers."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def _bytes(n) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _nice(x: float) -> float:
    """The smallest of 1, 2, 5 x 10^n at or above x (x > 0): a step or range people can read."""
    power = 10 ** math.floor(math.log10(x))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= x * (1 - 1e-9))


@dataclass
class Axis:
    """Maps values onto pixels p0..p1; `log` is the base of a log scale (lo, hi are then logs)."""
    lo: float
    hi: float
    p0: float
    p1: float
    log: float | None = None

    def __call__(self, v: float) -> float:
        t = math.log(v, self.log) if self.log else v
        return self.p0 + (t - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)

    def ticks(self) -> list[float]:
        if self.log:
            exps = list(range(math.ceil(self.lo - 1e-9), math.floor(self.hi + 1e-9) + 1))
            return [self.log ** e for e in exps[::max(1, math.ceil(len(exps) / 7))]]
        step = _nice((self.hi - self.lo) / 5)
        first = math.ceil(self.lo / step - 1e-9)
        return [round(i * step, 12) for i in range(first, math.floor(self.hi / step + 1e-9) + 1)]


def _axis(values, p0: float, p1: float, log: float | None = None, zero: bool = False) -> Axis:
    """An axis spanning `values` plus 6% each side; `zero` starts it exactly at 0 instead."""
    vals = [math.log(v, log) if log else v for v in values if v is not None and (not log or v > 0)]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    from_zero = zero and lo >= 0
    if hi - lo < 1e-12:  # one value, or all equal: give it a span to sit in the middle of
        half = 0.5 if log else (abs(lo) * 0.1 or 1.0)
        lo, hi = lo - half, hi + half
    pad = (hi - lo) * 0.06
    return Axis(0.0 if from_zero else lo - pad, hi + pad, p0, p1, log)


def _frame(x: Axis, y: Axis, xlabel: str, ylabel: str = "",
           xtick=_short, ytick=_short) -> list[str]:
    """Grid lines, tick labels, a border and axis titles; `ytick=None` leaves y unlabelled."""
    top, bottom = y.p1, y.p0
    out = []
    for v in x.ticks():
        px = x(v)
        out.append(f'<line class="grid" x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{bottom}"/>'
                   f'<text x="{px:.1f}" y="{bottom + 16}" text-anchor="middle">'
                   f"{_e(xtick(v))}</text>")
    for v in y.ticks() if ytick else []:
        py = y(v)
        out.append(f'<line class="grid" x1="{x.p0}" y1="{py:.1f}" x2="{x.p1}" y2="{py:.1f}"/>'
                   f'<text x="{x.p0 - 6}" y="{py + 4:.1f}" text-anchor="end">{_e(ytick(v))}</text>')
    out.append(f'<rect class="frame" x="{x.p0}" y="{top}" width="{x.p1 - x.p0}" '
               f'height="{bottom - top}"/><text x="{(x.p0 + x.p1) / 2}" y="{bottom + 36}" '
               f'text-anchor="middle">{_e(xlabel)}</text>')
    if ylabel:
        out.append(f'<text transform="translate(14 {(top + bottom) / 2}) rotate(-90)" '
                   f'text-anchor="middle">{_e(ylabel)}</text>')
    return out


def _label(name: str, most: int = 18) -> str:
    """A method's name for a plot label or legend, cut to fit; the full name is in a <title>."""
    text = name if len(name) <= most else name[:most - 1] + "…"
    return f"{_e(text)}<title>{_e(name)}</title>"


def _legend(names, colors: dict[str, str]) -> list[str]:
    return [f'<rect x="{RIGHT + 18}" y="{TOP + 18 * i}" width="12" height="12" '
            f'fill="{colors[n]}"/><text x="{RIGHT + 36}" y="{TOP + 18 * i + 11}">{_label(n)}</text>'
            for i, n in enumerate(names)]


def _figure(name: str, title: str, caption_html: str, body: list[str], height: int = H) -> str:
    """A plot; `caption_html` is already escaped. An empty body says "not measured"."""
    body = body or [f'<text class="missing" x="{W / 2}" y="{height / 2}" text-anchor="middle" '
                    f'font-size="18">not measured</text>']
    return (f'<figure><h3>{_e(title)}</h3><svg data-plot="{name}" viewBox="0 0 {W} {height}" '
            f'role="img" aria-label="{_e(title)}">{"".join(body)}</svg>'
            f'<figcaption>{caption_html}</figcaption></figure>')


def _pareto_plot(s: dict, colors: dict[str, str]) -> str:
    methods = s.get("methods") or []
    # the first month (fit + 30 days of queries): what summary.py's Pareto front is drawn on
    first = any(_get(m, "cost", "first_month_usd") is not None for m in methods)
    by_cost = first or any(_get(m, "cost", "monthly_usd") is not None for m in methods)
    keys = ("cost", "first_month_usd" if first else "monthly_usd") if by_cost \
        else ("fit_seconds",)
    points = [(m["method"], _get(m, *keys), m.get("score_mean"), m.get("score_std") or 0.0)
              for m in methods]
    points = [p for p in points if p[1] is not None and p[2] is not None]
    front = set(s.get("pareto") or [])
    caption = ("Each point is a method, its bar ± one std over seeds. Ringed and joined: the "
               "methods no other beats on both score and cost.")
    if not points:
        return _figure("pareto", "Quality vs cost", caption, [])
    xs = [p[1] for p in points]
    log = 10 if min(xs) > 0 and max(xs) > 10 * min(xs) else None
    x = _axis(xs, LEFT, W - 110, log)  # no legend: the room on the right is for labels
    y = _axis([p[2] - p[3] for p in points] + [p[2] + p[3] for p in points], BOTTOM, TOP)
    xlabel = ("first month (fit + 30 days), USD" if first else "monthly cost, USD" if by_cost
              else "fit seconds") + (" (log scale)" if log else "")
    body = _frame(x, y, xlabel, s.get("metric") or "score")
    on_front = sorted((p for p in points if p[0] in front), key=lambda p: p[1])
    if len(on_front) > 1:
        line = " ".join(f"{x(p[1]):.1f},{y(p[2]):.1f}" for p in on_front)
        body.append(f'<polyline class="front-line" points="{line}" fill="none" stroke="#444" '
                    f'stroke-width="1.5" stroke-dasharray="5 3"/>')
    for name, xv, mean, std in points:
        px, py, c = x(xv), y(mean), colors[name]
        weight = "bold" if name in front else "normal"
        body.append(f'<line x1="{px:.1f}" y1="{y(mean - std):.1f}" x2="{px:.1f}" '
                    f'y2="{y(mean + std):.1f}" stroke="{c}" stroke-width="2"/>')
        if name in front:
            body.append(f'<circle class="front" data-method="{_e(name)}" cx="{px:.1f}" '
                        f'cy="{py:.1f}" r="9" fill="none" stroke="#222" stroke-width="1.5"/>')
        body.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="6" fill="{c}"><title>{_e(name)}: '
                    f'{mean:.3f} ± {std:.3f}</title></circle><text x="{px + 11:.1f}" '
                    f'y="{py - 7:.1f}" font-weight="{weight}">{_e(name)}</text>')
    return _figure("pareto", "Quality vs cost", caption, body)


def _curves_plot(s: dict, colors: dict[str, str]) -> str:
    curves = {name: sorted((p["k"], p["score"]) for p in points or []
                           if p.get("k") and p.get("score") is not None)
              for name, points in (s.get("curves") or {}).items()}
    curves = {name: points for name, points in curves.items() if points}
    crossings = " ".join(_e(c.get("text")) + "." for c in s.get("crossings") or [])
    caption = f"Score as the number of training examples per class grows. {crossings}"
    if not curves:
        return _figure("curves", "Learning curves", caption, [])
    x = _axis([k for pts in curves.values() for k, _ in pts], LEFT, RIGHT, log=2)
    y = _axis([v for pts in curves.values() for _, v in pts], BOTTOM, TOP)
    body = _frame(x, y, "k, examples per class (log2 scale)", s.get("metric") or "score")
    for name, pts in curves.items():
        xy = [(x(k), y(v)) for k, v in pts]
        body.append(f'<polyline points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in xy)}" '
                    f'fill="none" stroke="{colors[name]}" stroke-width="2.5"/>')
        body += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="4.5" fill="{colors[name]}"><title>'
                 f'{_e(name)} k={k}: {v:.3f}</title></circle>' for (a, b), (k, v) in zip(xy, pts)]
    return _figure("curves", "Learning curves", caption, body + _legend(curves, colors))


def _sensitivity_plot(s: dict, colors: dict[str, str]) -> str:
    methods = s.get("methods") or []
    spread = {m["method"]: {t: v for t, v in (_get(m, "sensitivity", "scores") or {}).items()
                            if v is not None} for m in methods}
    caption = ("The bar spans the lowest to the highest score over prompt templates; the dot is "
               "the method's mean score. A long bar: the wording of the prompt matters.")
    height = TOP + ROW * len(methods) + 48
    if not any(spread.values()):
        return _figure("sensitivity", "Prompt sensitivity", caption, [], height)
    values = [v for scores in spread.values() for v in scores.values()]
    means = [m.get("score_mean") for m in methods if spread[m["method"]]]
    x = _axis(values + means, 130, W - 24)
    rows = Axis(0, 1, TOP + ROW * len(methods), TOP)  # one row per method; only its span is used
    body = _frame(x, rows, f"{s.get('metric') or 'score'} over prompt templates", ytick=None)
    for i, m in enumerate(methods):
        name, scores, cy = m["method"], spread[m["method"]], TOP + ROW * i + ROW / 2
        body.append(f'<text x="{x.p0 - 8}" y="{cy + 4}" text-anchor="end">{_label(name)}</text>')
        if not scores:
            body.append(f'<text class="missing" x="{x.p0 + 8}" y="{cy + 4}">not measured</text>')
            continue
        lo, hi, c = min(scores.values()), max(scores.values()), colors[name]
        detail = ", ".join(f"{t}: {v:.3f}" for t, v in scores.items())
        body.append(f'<rect x="{x(lo):.1f}" y="{cy - 6}" width="{max(x(hi) - x(lo), 2):.1f}" '
                    f'height="12" rx="3" fill="{c}" fill-opacity="0.35" stroke="{c}">'
                    f'<title>{_e(name)}: {_e(detail)}</title></rect>')
        if m.get("score_mean") is not None:
            body.append(f'<circle cx="{x(m["score_mean"]):.1f}" cy="{cy}" r="6" fill="{c}"/>')
    return _figure("sensitivity", "Prompt sensitivity", caption, body, height)


def _query_range(s: dict) -> int:
    """How many queries the break-even chart spans: 3x the latest break-even, else 30 days."""
    finite = [m["break_even_queries"] for m in s.get("methods") or []
              if m.get("break_even_queries")]
    n = 3 * max(finite) if finite else 30 * (s.get("queries_per_day") or 0) or 1000
    return max(1, int(_nice(n)))  # a break-even under one query (cached reruns) spans 1


def _breakeven_plot(s: dict, colors: dict[str, str]) -> str:
    lines = [(m["method"], c["fit_usd"], c["per_query_usd"], m.get("break_even_queries"))
             for m in s.get("methods") or [] if (c := m.get("cost") or {})
             and c.get("fit_usd") is not None and c.get("per_query_usd") is not None]
    n_max, per_day = _query_range(s), s.get("queries_per_day")
    ref = s.get("break_even_reference") or "the reference"
    days = f" ({n_max / per_day:.3g} days at {per_day:,} queries a day)" if per_day else ""
    caption = (f"Total cost after N queries: the cost to fit plus N times the cost of a query, "
               f"over the first {n_max:,} queries{days}. Dots: where a method becomes cheaper "
               f"than {ref}.")
    if not lines:
        return _figure("breakeven", "Break-even", _e(caption), [])
    x = Axis(0, n_max, LEFT, RIGHT)  # no padding: the lines run to the frame's edge
    y = _axis([f for _, f, _, _ in lines] + [f + n_max * q for _, f, q, _ in lines],
              BOTTOM, TOP, zero=True)
    body = _frame(x, y, "queries served", "cumulative cost, USD", ytick=lambda v: f"${v:.3g}")
    for name, fit, per_query, even in lines:
        c = colors[name]
        body.append(f'<line x1="{x(0):.1f}" y1="{y(fit):.1f}" x2="{x(n_max):.1f}" '
                    f'y2="{y(fit + n_max * per_query):.1f}" stroke="{c}" stroke-width="2.5">'
                    f'<title>{_e(name)}: ${fit:.4g} + N x ${per_query:.3g}</title></line>')
        if even and even <= n_max:
            body.append(f'<circle cx="{x(even):.1f}" cy="{y(fit + even * per_query):.1f}" r="5" '
                        f'fill="{c}" stroke="#fff"><title>{_e(name)}: cheaper than {_e(ref)} '
                        f'after {even:,} queries</title></circle>')
    return _figure("breakeven", "Break-even", _e(caption),
                   body + _legend([n for n, *_ in lines], colors))


def _swatch(name, colors: dict[str, str]) -> str:
    color = colors.get(name) if isinstance(name, str) else None
    return f'<span class="sw" style="background:{color}"></span>' if color else ""


def _table(columns, rows, colors: dict[str, str], chosen=None) -> str:
    """A table of plain cells; a row whose first cell names a method gets its color, and a
    column of numbers (or dashes) is right-aligned."""
    rows = [row for row in rows if row]
    numeric = [i > 0 and all(re.match(r"[-–+$]?\d|–$", str(row[i])) for row in rows
                             if i < len(row)) for i in range(max(map(len, rows + [columns])))]
    align = [' class="num"' if n else "" for n in numeric]
    head = "".join(f"<th{a}>{_e(c)}</th>" for c, a in zip(columns, align))
    body = "".join(
        f'<tr class="{"chosen" if row[0] == chosen else ""}"><td>{_swatch(row[0], colors)}'
        f'{_e(row[0])}</td>{"".join(f"<td{a}>{_e(c)}</td>" for c, a in zip(row[1:], align[1:]))}'
        "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


METHOD_COLUMNS = [  # (header, the cell of a method's row)
    ("method", lambda m: m["method"]),
    ("family", lambda m: m.get("family")),
    ("score", lambda m: _fmt(m.get("score_mean"), ".3f", m.get("score_std"), " ± ")),
    ("fit s", lambda m: _fmt(m.get("fit_seconds"), ".1f")),
    ("ms/query", lambda m: _fmt(m.get("latency_ms_per_query"), ".0f")),
    ("prompt tok/query", lambda m: _fmt(m.get("prompt_tokens_per_query"), ".0f")),
    ("trainable params", lambda m: _fmt(m.get("trainable_params"), ",")),
    ("artifact", lambda m: _bytes(m.get("artifact_bytes"))),
    ("peak MB", lambda m: _fmt(m.get("peak_rss_mb"), ".0f")),
    ("sensitivity std / range", lambda m: _fmt(_get(m, "sensitivity", "std"), ".3f",
                                               _get(m, "sensitivity", "range"))),
    ("overfit gap / risk", lambda m: "–" if m.get("overfit_gap") is None else
     f"{m['overfit_gap']:.3f} / {m.get('overfit_risk') or '–'}"),
    ("monthly USD", lambda m: _fmt(_get(m, "cost", "monthly_usd"), ",.2f")),
]


def _methods_table(s: dict, colors: dict[str, str]) -> str:
    rows = [[cell(m) for _, cell in METHOD_COLUMNS] for m in s.get("methods") or []]
    chosen = _get(s, "recommendation", "method")
    return "<h2>Methods</h2>" + _table([h for h, _ in METHOD_COLUMNS], rows, colors, chosen)


def _bullets(items) -> str:
    return "<ul>" + "".join(f"<li>{_e(item)}</li>" for item in items) + "</ul>" if items else ""


def _recommendation(rec: dict | None, colors: dict[str, str]) -> str:
    rec = rec or {}
    chosen = rec.get("method")
    out = [f"<h2>Recommendation: {_swatch(chosen, colors)}{_e(chosen)}</h2>" if chosen else
           "<h2>Recommendation: none</h2><p>No method met the constraints.</p>",
           "".join(f'<p class="flag"><b>Caution:</b> {_e(f)}</p>'
                   for f in rec.get("flags") or []),
           _bullets([r for r in rec.get("reasons") or [] if r not in (rec.get("flags") or [])])]
    if rec.get("runner_up"):
        out += [f"<h3>Runner-up: {_swatch(rec['runner_up'], colors)}{_e(rec['runner_up'])}</h3>",
                _bullets(rec.get("runner_up_reasons"))]
    if rec.get("excluded"):
        out.append("<h3>Excluded</h3><ul>" + "".join(
            f"<li><b>{_e(name)}</b>: {_e(why)}</li>" for name, why in rec["excluded"].items())
            + "</ul>")
    out.append(f'<p class="muted">{_e(constraints_line(rec))}</p>')
    return '<section class="rec">' + "".join(out) + "</section>"


def _separability(s: dict, colors: dict[str, str]) -> str:
    columns, rows = separability_rows(s)
    if not rows:
        return ""
    rec = s.get("recommendation") or {}
    return (f"<h2>Is the best really better?</h2><p class=\"muted\">A paired bootstrap over "
            f"the shared test rows (and seeds): a method ties {_e(rec.get('best'))} unless "
            f"{_e(rec.get('best'))} wins in at least {rec.get('tie_level') or 0.95:.0%} of the "
            f"resamples.</p>" + _table(columns, rows, colors))


def _baselines(s: dict) -> str:
    if not s.get("methods"):
        return ""
    warnings = "".join(f'<p class="flag"><b>Data:</b> {_e(w)}</p>'
                       for w in s.get("data_warnings") or [])
    return "<h2>Baselines</h2>" + _bullets(baseline_lines(s)) + warnings


def _budget(s: dict) -> str:
    """What sizing the plan to its budget gave up (compare/budget.py): k, seeds, the fit
    protocol's refinements."""
    given = s.get("plan_gives_up") or []
    return ("<h2>What the budget gave up</h2>" + _bullets(given)) if given else ""


def _api(s: dict) -> str:
    """The methods run through an endpoint: tier, calls, cache hits, tokens, dollars (the same
    lines as the terminal and markdown reports)."""
    lines = api_lines(s)
    return ('<h2>API usage</h2><ul data-table="api">' + "".join(
        f"<li>{_e(line)}</li>" for line in lines) + "</ul>") if lines else ""


def _fitted(s: dict, colors: dict[str, str]) -> str:
    if not s.get("methods"):
        return ""
    return ("<h2>Fitted, held out and tested</h2><p class=\"muted\">Train score: on the rows "
            "each method was fitted on, not those it held out; validation score: on the rows it "
            "held out or the given validation set.</p>"
            + _table(FIT_COLUMNS, fit_rows(s), colors))


def _classes(s: dict, colors: dict[str, str]) -> str:
    c = s.get("classes")
    if not c:
        return ""
    rows = [[x["label"], f"{x['precision']:.3f}", f"{x['recall']:.3f}", f"{x['f1']:.3f}",
             str(x["support"]), str(x["predicted"])] for x in c["per_class"]]
    labels = c["labels"][:20]
    head = "".join(f"<th class=\"num\">{_e(lab)}</th>" for lab in labels)
    body = ""
    for i, (lab, row) in enumerate(zip(labels, c["confusion"])):
        cells = "".join(
            f'<td class="num {"diag" if i == j else "hot" if v else ""}">{v}</td>'
            for j, v in enumerate(row[:20]))
        body += f"<tr><td>{_e(lab)}</td>{cells}</tr>"
    more = (f'<p class="muted">First 20 of {len(c["labels"])} labels; report.json has all.</p>'
            if len(c["labels"]) > 20 else "")
    wrong = _bullets(f"{w['input'][:200]!r}: gold {w['gold']}, predicted {w['predicted']}"
                     for w in c.get("wrong") or [])
    return (f"<h2>Per class: {_swatch(c['method'], colors)}{_e(c['method'])} (seed "
            f"{_e(c.get('seed'))})</h2>"
            + _table(["label", "precision", "recall", "F1", "support", "predicted"], rows, {})
            + f'<h3>Confusion matrix (rows: gold, columns: predicted)</h3><table data-table='
            f'"confusion"><thead><tr><th>gold \\ predicted</th>{head}</tr></thead><tbody>{body}'
            f"</tbody></table>{more}"
            + (f"<h3>Wrong answers (the first few)</h3>{wrong}" if wrong else ""))


def _header(s: dict) -> str:
    wall = s.get("wall_seconds")
    zero = s.get("zero_shot") or {}
    facts = [("model", s.get("model")), ("metric", s.get("metric")),
             ("test examples", s.get("n_test")),
             ("k", s.get("k")), ("seeds", ", ".join(map(str, s.get("seeds") or [])) or None),
             ("wall time", None if wall is None else wall_time(s)),
             ("zero-shot", None if zero.get("score") is None else
              f"{zero.get('method')} {zero['score']:.3f}")]
    spans = "".join(f"<span>{_e(k)} <b>{_e(v)}</b></span>" for k, v in facts)
    return f'<header><h1>Comparison: {_e(s.get("task"))}</h1><p class="facts">{spans}</p></header>'


def render_html(summary: dict) -> str:
    """The whole report as one HTML page that needs no network and no JavaScript."""
    s = summary
    names = [m["method"] for m in s.get("methods") or []]
    names += [n for n in s.get("curves") or {} if n not in names]
    colors = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    tables = "".join(f"<h2>{_e(name.replace('_', ' ').capitalize())}</h2>"
                     + _table(t.get("columns") or [], t.get("rows") or [], colors)
                     + (f"<p>{_e(t['note'])}</p>" if t.get("note") else "")
                     for name, t in (s.get("tables") or {}).items() if t)
    plots = [_pareto_plot(s, colors), _curves_plot(s, colors), _sensitivity_plot(s, colors),
             _breakeven_plot(s, colors)]
    skipped = s.get("skipped") or []
    skipped_html = ("<h2>Skipped runs</h2>" + _bullets(f"{r.get('run')}: {r.get('reason')}"
                                                        for r in skipped)) if skipped else ""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<title>tailorlm: {_e(s.get("task"))}</title><style>{CSS}</style></head><body>'
            f'{_header(s)}{_recommendation(s.get("recommendation"), colors)}'
            f'{_methods_table(s, colors)}{_separability(s, colors)}{_baselines(s)}{_budget(s)}'
            f'{_fitted(s, colors)}{_classes(s, colors)}{_api(s)}{tables}'
            f'<h2>Plots</h2><div class="plots">{"".join(plots)}'
            f"</div>{skipped_html}</body></html>\n")

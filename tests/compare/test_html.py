"""report.html: every user string escaped, nothing fetched, four plots that survive missing data,
and a headless-Chromium screenshot in which every method's color is actually drawn."""

import html
import re

import numpy as np
import pytest
from PIL import Image

from compare.report_fixture import sample_summary
from tailorlm.compare.html import PALETTE, render_html
from tailorlm.compare.screenshot import find_chromium, screenshot

EVIL = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>']
PLOTS = ["pareto", "curves", "sensitivity", "breakeven"]


def _svg(page: str, plot: str) -> str:
    return re.search(rf'<svg data-plot="{plot}".*?</svg>', page, re.S).group(0)


def _evil_summary() -> dict:
    """The sample with markup for user strings: task, a method, reasons, templates, cells."""
    s = sample_summary()
    lora = EVIL[1]
    s["task"] = EVIL[0]
    s["methods"][4]["method"] = lora
    s["methods"][4]["sensitivity"]["scores"][EVIL[0]] = 0.8
    s["curves"][lora] = s["curves"].pop("lora")
    s["pareto"].append(lora)
    rec = s["recommendation"]
    rec.update(method=lora, reasons=EVIL, runner_up=EVIL[0], runner_up_reasons=EVIL)
    rec["excluded"][EVIL[0]] = EVIL[1]
    rec["constraints"]["max_memory_mb"] = EVIL[0]
    s["crossings"][0]["text"] = EVIL[1]
    s["tables"]["key_differences"]["columns"].append(EVIL[0])
    s["tables"]["cost_performance"]["rows"].append([lora, EVIL[0], "1", "2", "3"])
    s["skipped"][0]["reason"] = EVIL[1]
    return s


def test_every_user_string_is_escaped_in_text_svg_and_attributes():
    page = render_html(_evil_summary())
    for evil in EVIL:
        assert evil not in page
        assert html.escape(evil) in page
    assert "<script" not in page.lower() and "<img" not in page.lower()
    # inside the plots too: the method's label, its <title>s and the data-method attribute
    assert html.escape(EVIL[1]) in _svg(page, "pareto")
    assert f'data-method="{html.escape(EVIL[1])}"' in _svg(page, "pareto")
    assert html.escape(EVIL[0]) in _svg(page, "sensitivity")  # a template name in a <title>
    assert html.escape(EVIL[1]) in _svg(page, "curves")


def test_the_page_is_self_contained():
    page = render_html(sample_summary())
    lowered = page.lower()
    for needle in ["http://", "https://", "<script", "src=", "<link", "@import", "url("]:
        assert needle not in lowered, needle
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


def test_four_plots_with_the_front_marked_and_missing_data_said():
    s = sample_summary()
    page = render_html(s)
    assert re.findall(r'<svg data-plot="(\w+)"', page) == PLOTS
    assert page.count("<figcaption>") == 4
    pareto = _svg(page, "pareto")
    assert re.findall(r'class="front" data-method="(\w+)"', pareto) == ["prompt_template", "full"]
    assert pareto.count('class="front-line"') == 1
    for m in s["methods"]:  # every point labelled
        assert f">{m['method']}</text>" in pareto
    assert _svg(page, "curves").count("<polyline") == len(s["curves"])
    assert _svg(page, "sensitivity").count("not measured") == 3  # soft_prompt, prefix, full
    breakeven = _svg(page, "breakeven")
    assert breakeven.count("stroke-width=\"2.5\"") == len(s["methods"])
    # one color per method, the same in every plot that draws it
    for color, m in zip(PALETTE, s["methods"]):
        assert f'fill="{color}"' in pareto and f'stroke="{color}"' in breakeven
        assert f"background:{color}" in page  # its swatch in the tables
    assert "0.850 ± 0.010" in page and "9.8 MB" in page and "134,515,008" in page


NULL_METHOD = {"method": "m", "family": None, "score_mean": None, "score_std": None,
               "fit_seconds": None, "cost": None, "sensitivity": None, "overfit_gap": None,
               "break_even_queries": None}
FLAT = {"method": "flat", "score_mean": 0.5, "score_std": 0.0, "fit_seconds": 0.0,
        "sensitivity": {"std": 0.0, "range": 0.0, "n_variants": 2, "scores": {"a": 0.5, "b": 0.5}},
        "cost": {"fit_usd": 0.0, "per_query_usd": 0.0, "monthly_usd": 0.0},
        "break_even_queries": None}


@pytest.mark.parametrize("summary", [
    {},
    {"task": "t", "methods": [NULL_METHOD], "curves": {}, "pareto": [], "recommendation": None,
     "tables": None, "crossings": None},
    {"task": "t", "methods": [FLAT], "pareto": ["flat"], "queries_per_day": 10,
     "curves": {"flat": [{"k": 4, "n_train": 8, "score": 0.5}]}},
], ids=["empty", "nulls", "all-equal"])
def test_missing_or_degenerate_data_renders(summary):
    page = render_html(summary)
    assert re.findall(r'<svg data-plot="(\w+)"', page) == PLOTS
    assert not re.search(r"\b(nan|inf)\b", page, re.I)  # no division by zero reached the SVG
    if summary.get("methods") == [NULL_METHOD]:
        for plot in PLOTS:
            assert "not measured" in _svg(page, plot), plot


def test_without_costs_the_pareto_plot_uses_fit_seconds_on_a_log_scale():
    methods = [{"method": "a", "score_mean": 0.7, "fit_seconds": 2.0, "cost": None},
               {"method": "b", "score_mean": 0.8, "fit_seconds": 200.0}]
    page = render_html({"methods": methods, "curves": {"a": [], "b": [{"k": 2, "score": None}]}})
    assert "fit seconds (log scale)" in _svg(page, "pareto")
    assert "not measured" in _svg(page, "curves")


def test_screenshot_shows_every_method_drawn(tmp_path):
    assert find_chromium(), ("the screenshot test needs Chromium: apt-get install chromium, "
                             "or set TAILORLM_CHROMIUM to its path")
    s = sample_summary()
    page = tmp_path / "report.html"
    page.write_text(render_html(s), encoding="utf-8")
    png = screenshot(page, tmp_path / "report.png")
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)  # (H, W, 3)
    assert pixels.shape[1] == 1280 and pixels.shape[0] >= 1600
    assert (pixels.min(axis=2) < 230).mean() > 0.03  # not blank: text, tables, plot lines
    for color, m in zip(PALETTE, s["methods"]):
        rgb = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
        n = int((np.abs(pixels - rgb).max(axis=2) <= 6).sum())
        # The table swatches hold at most ~400 pixels of a color; the rest are its points,
        # lines and legend entries in the plots.
        assert n > 700, f"{m['method']} ({color}): only {n} pixels in the screenshot"


def test_flags_baselines_constraints_and_the_confusion_matrix_are_shown():
    s = sample_summary()
    page = render_html(s)
    assert '<p class="flag"><b>Caution:</b> lora is not separable from few_shot on 750 test ' \
        'rows' in page
    assert "majority class (always &#x27;positive&#x27;): accuracy 0.509" in page
    assert "zero-shot (prompt_template): accuracy 0.800" in page
    assert "Constraints: --max-train-minutes 2 (rules out full); 10,000 queries/day" in page
    confusion = re.search(r'<table data-table="confusion">.*?</table>', page, re.S).group(0)
    assert re.findall(r">(\d+)</td>", confusion) == ["309", "59", "50", "332"]
    assert "not the worst film this year" in page and "Per class: " in page
    assert "cheaper than few_shot" in _svg(page, "breakeven")  # the declared reference
    assert "Is the best really better?" in page and "0.020" in page and "91%" in page


def test_api_usage_and_the_budget_cuts_are_on_the_page():
    """A remote method's tier, calls, cache hits, tokens and dollars: the lines the terminal and
    markdown reports print, escaped; and what the budget gave up (compare/budget.py)."""
    from tailorlm.compare.report import api_lines, markdown

    s = sample_summary()
    s["api"] = [{"method": "prompt_template", "host": "127.0.0.1:8080", "model": EVIL[0],
                 "tier": "c", "notes": [], "calls": 1234, "cache_hits": 56, "tokens": 78901,
                 "usd": 0.0123, "latency_ms_p95": 40.0, "unparsed_rate": 0.05}]
    s["plan_gives_up"] = ["fit protocol 'no refit': no refit: the kept weights are the trial's"]
    page = render_html(s)
    section = re.search(r'<ul data-table="api">(.*?)</ul>', page, re.S).group(1)
    line = api_lines(s)[0]
    assert html.escape(line) in section and EVIL[0] not in page
    for needle in ["tier c", "1,234 calls", "56 cache hits", "78,901 tokens", "$0.0123",
                   "5% of answers matched no label"]:
        assert needle in section and needle in markdown(s)
    assert "What the budget gave up" in page and "no refit: the kept weights" in page
    assert "Budget: fit protocol 'no refit'" in markdown(s)
    bare = sample_summary()
    assert 'data-table="api"' not in render_html(bare)
    assert "What the budget gave up" not in render_html(bare)

"""The terminal table of a comparison: one row per run, quality and cost side by side."""

from __future__ import annotations

COLUMNS = [  # (header, key, format)
    ("method", "method", "{}"), ("score", "score", "{:.3f}"), ("95% CI", "score_ci", None),
    ("fit s", "fit_seconds", "{:.1f}"), ("eval s", "eval_seconds", "{:.1f}"),
    ("ms/query", "latency_ms_per_query", "{:.0f}"),
    ("prompt tok", "prompt_tokens_per_query", "{:.0f}"),
    ("trainable", "trainable_params", "{:,}"), ("bytes", "artifact_bytes", "{:,}"),
    ("peak MB", "peak_rss_mb", "{:.0f}"),
]


def _cell(row: dict, key: str, fmt: str | None) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    if key == "score_ci":
        return f"[{value[0]:.3f}, {value[1]:.3f}]"
    return fmt.format(value)


def table(rows: list[dict]) -> str:
    if not rows:
        return "(no results)"
    cells = [[h for h, _, _ in COLUMNS]] + [[_cell(r, k, f) for _, k, f in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    metric = rows[0].get("metric", "")
    return f"{rows[0].get('task', '')} — {metric} on {rows[0].get('n_eval')} examples\n" + \
        "\n".join(lines)

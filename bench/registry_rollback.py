"""How long a rollback takes on a registry of 1,000 versions (issue 11: "rollback is instant").

    PYTHONPATH=src python bench/registry_rollback.py [--versions 1000] [--rollbacks 50] [--root DIR]

Builds a registry with --versions versions of one name through the public API (each a small
adapter folder pushed with `alias="production"`, so the alias log holds one move per version),
then times --rollbacks consecutive `Registry.rollback(name, "production")` calls, each one
transaction that reads the alias log, moves the alias and appends to the log (with the index's
synchronous=FULL fsync), and `resolve("NAME@production")` after it. Prints one JSON line.
A rollback moves a pointer: the adapter's files are not touched, so its time does not grow with
the adapters' size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "src"))

from tailorlm.registry import Registry  # noqa: E402


def build(reg: Registry, n: int, work: Path) -> float:
    started = time.perf_counter()
    folder = work / "adapter"
    folder.mkdir()
    for i in range(n):
        (folder / "adapter.json").write_text(json.dumps(
            {"method": "prompt_template", "config": {}, "state": {"version": i}}))
        (folder / "card.json").write_text(json.dumps({"metrics": {"accuracy": i / n}}))
        reg.push(folder, "bench", alias="production", reason=f"version {i + 1}")
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--versions", type=int, default=1000)
    p.add_argument("--rollbacks", type=int, default=50)
    p.add_argument("--root", help="registry folder (default: a temporary one)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else Path(tmp) / "registry"
        with Registry(root) as reg:
            build_seconds = build(reg, args.versions, Path(tmp))
            times, resolves = [], []
            for _ in range(args.rollbacks):
                start = time.perf_counter()
                reg.rollback("bench", "production", reason="bench")
                times.append(time.perf_counter() - start)
                start = time.perf_counter()
                reg.resolve("bench@production")
                resolves.append(time.perf_counter() - start)
            at = reg.resolve("bench@production").version
            log = len(reg.history("bench", "production"))
    ms = sorted(t * 1000 for t in times)
    print(json.dumps({
        "versions": args.versions, "alias_log_entries": log, "rollbacks": args.rollbacks,
        "now_at": at, "build_seconds": round(build_seconds, 1),
        "rollback_ms_median": round(statistics.median(ms), 2),
        "rollback_ms_p95": round(ms[int(0.95 * (len(ms) - 1))], 2),
        "rollback_ms_max": round(ms[-1], 2),
        "resolve_ms_median": round(statistics.median(resolves) * 1000, 3)}))


if __name__ == "__main__":
    main()

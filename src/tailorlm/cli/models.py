"""`tailor models`: the built-in model catalog and whether each is installed."""

from __future__ import annotations


def add_parser(commands) -> None:
    p = commands.add_parser("models", help="list the built-in models")
    p.set_defaults(run=run)


def run(args) -> int:
    from tailorlm.errors import TailorError
    from tailorlm.models import CATALOG, DEFAULT_MODEL

    for name, entry in CATALOG.items():
        try:
            entry.locate_gguf()
            status = "installed"
        except TailorError:
            status = f"not installed: {entry.pip_line}"
        default = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name}{default}  {entry.hub_id}  {status}")
    return 0

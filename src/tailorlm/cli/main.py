"""`tailor`: the command line. Thin: every command is one call into the library.

Errors the user can cause (`TailorError`) print one line and exit 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from tailorlm import __version__
from tailorlm.errors import TailorError


def main(argv: list[str] | None = None) -> int:
    from tailorlm.cli import compare, methods, models, registry, serve, tune, upgrade
    from tailorlm.cli import eval as eval_

    parser = argparse.ArgumentParser(
        prog="tailor", description="Adapt a language model to your task: prompt tuning, fine "
        "tuning or both, measured side by side on your data.")
    parser.add_argument("--version", action="version", version=f"tailorlm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (tune, eval_, compare, methods, models, registry, serve, upgrade):
        module.add_parser(commands)
    args = parser.parse_args(argv)
    _quiet_libraries()
    try:
        return args.run(args) or 0
    except TailorError as e:
        print(f"tailor: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tailor: interrupted; finished runs and checkpoints are kept (--resume continues)",
              file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    """transformers' per-load progress bars and notices are noise next to our own progress."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())

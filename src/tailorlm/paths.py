"""Where tailorlm keeps its files: `TAILORLM_HOME`, default `~/.cache/tailorlm`.

Tests point `TAILORLM_HOME` at a temporary folder so they never touch the user's home.
"""

import os
from pathlib import Path


def tailorlm_home() -> Path:
    home = os.environ.get("TAILORLM_HOME")
    root = Path(home) if home else Path.home() / ".cache" / "tailorlm"
    root.mkdir(parents=True, exist_ok=True)
    return root

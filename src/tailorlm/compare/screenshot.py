"""A PNG of an HTML report, taken by headless Chromium: for checking how a report looks.

Chromium is a program, not a Python package, so it is looked up on the machine: `TAILORLM_CHROMIUM`
first, then the usual names on PATH. Each screenshot runs in a fresh, throw-away profile with the
network features off (no sync, updates or first-run pages), so nothing leaves the machine and no
state is shared between runs. The page is rendered at `width` x `height` CSS pixels at scale 1, so
the PNG has exactly that many pixels; the part of a page below `height` is cut off.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from tailorlm.errors import TailorError

CANDIDATES = ["/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"]
INSTALL = "install Chromium: apt-get install chromium, or set TAILORLM_CHROMIUM"
TIMEOUT_S = 120


def find_chromium() -> str | None:
    """The Chromium executable to use, or None when there is none."""
    explicit = os.environ.get("TAILORLM_CHROMIUM")
    for name in [explicit] if explicit else CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _page_height(html: str) -> int:
    """A height that holds the whole page: generous per table row and plot, never under 1600."""
    rows = len(re.findall(r"<tr[ >]", html)) + len(re.findall(r"<li[ >]", html))
    plots = html.count("<figure")
    return max(1600, 700 + 44 * rows + 230 * plots)  # rows of the wider tables wrap


def screenshot(html_path: str | Path, png_path: str | Path, width: int = 1280,
               height: int | None = None) -> Path:
    """Render `html_path` with headless Chromium into `png_path` (width x height pixels)."""
    chromium = find_chromium()
    if chromium is None:
        raise TailorError(f"Chromium not found (TAILORLM_CHROMIUM="
                          f"{os.environ.get('TAILORLM_CHROMIUM', '')!r}); {INSTALL}")
    html_path, png_path = Path(html_path).resolve(), Path(png_path).resolve()
    height = height or _page_height(html_path.read_text(encoding="utf-8"))
    png_path.parent.mkdir(parents=True, exist_ok=True)
    png_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="tailorlm-chromium-") as profile:
        command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                   "--no-first-run", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                   "--force-device-scale-factor=1", f"--user-data-dir={profile}",
                   f"--window-size={width},{height}", f"--screenshot={png_path}",
                   html_path.as_uri()]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise TailorError(f"Chromium took over {TIMEOUT_S} s to render {html_path}; "
                              f"check that {chromium} runs headless") from None
    if not png_path.exists():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise TailorError(f"Chromium wrote no screenshot (exit {done.returncode}: {last}); "
                          f"{INSTALL}")
    _trim(png_path)
    return png_path


def _trim(png_path: Path, margin: int = 24) -> None:
    """Cut the blank band below the page (the window is sized generously), where Pillow is
    installed (the test extra); without it the PNG keeps its blank bottom."""
    try:
        from PIL import Image, ImageChops
    except ImportError:
        return
    with Image.open(png_path) as image:
        rgb = image.convert("RGB")
    box = ImageChops.difference(rgb, Image.new("RGB", rgb.size, (255, 255, 255))).getbbox()
    if box and box[3] + margin < rgb.height:
        rgb.crop((0, 0, rgb.width, box[3] + margin)).save(png_path)

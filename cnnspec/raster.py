"""A diagram's SVG as a PNG, drawn by a headless Chromium where one is installed.

No Python package draws SVG text and shapes the way browsers do without a native library
(cairo) that a bare machine may lack; a browser is the renderer that the HTML diagram needs
anyway. Without one, asking for a PNG is one line of error that says what to install."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

# Where to look, in order: $CNNSPEC_BROWSER, then the names Chromium and Chrome install under.
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
# Chromium's screenshots stay exact up to this many pixels a side; larger diagrams are drawn
# at one pixel per unit, smaller ones at two (sharp on high-density screens).
MAX_SIDE = 16384
TIMEOUT_S = 120


class RasterError(Exception):
    """Why no PNG was drawn, in one line."""


def find_browser() -> str | None:
    chosen = os.environ.get("CNNSPEC_BROWSER")
    if chosen:
        return shutil.which(chosen) or (chosen if Path(chosen).is_file() else None)
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def svg_size(svg: str) -> tuple[int, int]:
    """The width and height the SVG's root element declares."""
    root = re.search(r"<svg\b[^>]*>", svg)
    sizes = {
        key: re.search(rf'\b{key}="([0-9.]+)"', root.group(0)) if root else None
        for key in ("width", "height")
    }
    if root is None or not all(sizes.values()):
        raise RasterError("the SVG declares no width and height to draw at")
    return tuple(round(float(m.group(1))) for m in sizes.values() if m)  # type: ignore[return-value]


def png_from_svg(svg: str) -> bytes:
    """The SVG drawn by the browser at its declared size (twice that when it stays small)."""
    browser = find_browser()
    if browser is None:
        raise RasterError(
            "a PNG is drawn by a headless Chromium, and none is installed (apt install "
            "chromium, or set CNNSPEC_BROWSER); write .svg or .html instead"
        )
    width, height = svg_size(svg)
    scale = 2 if max(width, height) * 2 <= MAX_SIDE else 1
    with tempfile.TemporaryDirectory(prefix="cnnspec-png-") as folder:
        page, picture = Path(folder) / "diagram.svg", Path(folder) / "diagram.png"
        page.write_text(svg, encoding="utf-8")
        command = [
            browser,
            "--headless",
            "--no-sandbox",  # as root in a container, Chromium refuses to start without it
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={Path(folder) / 'profile'}",
            f"--force-device-scale-factor={scale}",
            f"--window-size={width},{height}",
            f"--screenshot={picture}",
            page.as_uri(),
        ]
        try:
            subprocess.run(command, capture_output=True, timeout=TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise RasterError(f"{browser} did not draw the PNG in {TIMEOUT_S} s") from None
        except OSError as error:
            raise RasterError(f"cannot run {browser}: {error.strerror}") from None
        if not picture.is_file() or picture.stat().st_size == 0:
            raise RasterError(f"{browser} drew no PNG")
        return picture.read_bytes()

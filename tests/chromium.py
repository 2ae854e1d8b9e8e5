"""Render a local HTML file in headless Chromium: a screenshot and the console messages it logged."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Debian's chromium package installs /usr/bin/chromium; other distributions name it chromium-browser.
CHROMIUM_NAMES = ("chromium", "chromium-browser")
# Flags for a headless run as root that reaches no network: no sandbox (root), no GPU,
# and no background fetches of components, sync or field trials.
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
)
# With --enable-logging=stderr, Chromium writes each page console message as one line tagged CONSOLE,
# at INFO level whatever the message's own level (Chromium 156).
CONSOLE_LINE = re.compile(r":CONSOLE(?:\(\d+\))?(?::\d+)?\] (.*)$", re.MULTILINE)
RENDER_TIMEOUT_S = 120


@dataclass
class Rendering:
    screenshot: Path
    console_messages: list[str]
    stderr: str


def chromium_path() -> str | None:
    """Path of the Chromium executable, or None when it is not installed."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def render(page: Path, screenshot: Path, width: int = 1400, height: int = 2400) -> Rendering:
    """Load ``page`` through a file:// URL and save a screenshot of the top ``width`` x ``height`` pixels."""
    executable = chromium_path()
    if executable is None:
        raise FileNotFoundError(f"Chromium is not installed (looked for {', '.join(CHROMIUM_NAMES)})")
    with tempfile.TemporaryDirectory(prefix="meobench-chromium-") as profile:
        completed = subprocess.run(
            [
                executable,
                *HEADLESS_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={screenshot}",
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=RENDER_TIMEOUT_S,
            check=False,
        )
    if completed.returncode != 0 or not screenshot.is_file():
        raise RuntimeError(f"chromium exited with status {completed.returncode}:\n{completed.stderr[-3000:]}")
    return Rendering(screenshot, CONSOLE_LINE.findall(completed.stderr), completed.stderr)

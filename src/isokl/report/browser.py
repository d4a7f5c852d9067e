"""Browser: open report.html in the system's headless chromium (playwright, no browser download), with every request
but the page itself refused, and collect what went wrong. Used by the tests and by `scripts/report_screenshot.py`
(the README's screenshot), so the picture is taken the way the page is tested.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser")  # Debian's package; `scripts/setup.sh` installs it where missing


def chromium() -> str | None:
    """The system chromium ($ISOKL_CHROMIUM, else the first on PATH), or None."""
    env = os.environ.get("ISOKL_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    return next((p for c in CANDIDATES if (p := shutil.which(c))), None)


def unavailable() -> str | None:
    """Why the page cannot be opened here, in one line; None when it can."""
    if chromium() is None:
        return "no system chromium (install Debian's `chromium`: scripts/setup.sh does where apt-get can)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    return None


@dataclass
class Opened:
    page: Any  # playwright Page
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions
    refused: list[str] = field(default_factory=list)  # every request other than the page file


@contextmanager
def session() -> Iterator[Any]:
    """A headless chromium (the system's), closed on exit."""
    from playwright.sync_api import sync_playwright

    exe = chromium()
    if exe is None:
        raise RuntimeError(unavailable() or "no chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def open_page(browser, path: Path, anchor: str = "", width: int = 1280, height: int = 900) -> Opened:
    """report.html from file:// in a fresh context whose network is off: any request but the file is aborted and
    recorded. Waits for the page's load event."""
    url = Path(path).resolve().as_uri()
    ctx = browser.new_context(viewport={"width": width, "height": height}, offline=True)
    page = ctx.new_page()
    opened = Opened(page)

    def route(r) -> None:
        if r.request.url.split("#")[0] == url:
            r.continue_()
        else:
            opened.refused.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: opened.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: opened.errors.append(str(e)))
    page.goto(url + (f"#{anchor}" if anchor else ""), wait_until="load")
    return opened


def screenshot(
    path: Path, out: Path, anchor: str = "", hover: str | None = None, b=None, width: int = 1280, height: int = 900
) -> Path:
    """A PNG of report.html as the browser shows it (optionally at an anchor and hovering an element); b: an open
    browser (`session`), else one is started for it."""
    if b is None:
        with session() as started:
            return screenshot(path, out, anchor, hover, started, width, height)
    o = open_page(b, path, anchor, width, height)
    if hover:
        o.page.locator(hover).first.hover()
    Path(out).write_bytes(o.page.screenshot())
    o.page.context.close()
    if o.errors or o.refused:
        raise RuntimeError(f"{path}: errors {o.errors}, refused requests {o.refused}")
    return Path(out)

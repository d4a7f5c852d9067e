"""The README's picture of report.html: results/refusal's page in the system's headless chromium, taken by the code
path the browser tests use (`isokl.report.browser.screenshot`: file://, network off, no console error allowed).

    .venv/bin/python scripts/report_screenshot.py [--page results/refusal/report.html] [--out docs/report.png]
"""

import argparse
from pathlib import Path

from isokl.report import browser


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--page", default="results/refusal/report.html")
    ap.add_argument("--out", default="docs/report.png")
    ap.add_argument("--anchor", default="text", help="the section shown (default: the steered text)")
    args = ap.parse_args()
    why = browser.unavailable()
    if why:
        raise SystemExit(f"report_screenshot: {why}")
    # hovering the 6th token of the first steered continuation shows its KL, as a reader sees it
    print(
        browser.screenshot(
            Path(args.page), Path(args.out), args.anchor, hover="#tokens .cont:nth-child(2) .tok >> nth=5", height=760
        )
    )


if __name__ == "__main__":
    main()

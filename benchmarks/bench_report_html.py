"""report.html against its targets: <= 5 MB and <= 10 s to build for results/v2 (issue 27).

    .venv/bin/python benchmarks/bench_report_html.py [DIR ...]      # default: results/v2 results/refusal

For each folder, in one process and in memory (nothing is written): the seconds of each step `isokl report`
takes (reading and checking the CSVs, indexing them, Table 1 and the claims, the figures, then the page itself:
the evidence tables and the HTML), the page's size, and the ratios to the targets. The page's own seconds are
what report.html adds to `isokl report`; the whole build is printed beside it. Nothing else should run meanwhile.
"""

import itertools
import platform
import sys
import time
from pathlib import Path

SIZE_MB, SECONDS = 5.0, 10.0


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def bench(d: Path) -> None:
    from isokl.report.build import prompt_texts, protocol
    from isokl.report.claims import claims, provenance
    from isokl.report.evidence import evidence
    from isokl.report.figure import figure, figure2, pmass_points
    from isokl.report.index import Study
    from isokl.report.page import study_page
    from isokl.report.table import table1
    from isokl.study.records import load

    t = [time.perf_counter()]
    data = load(d)
    t.append(time.perf_counter())
    s = Study(data)
    t.append(time.perf_counter())
    rows = table1(s)
    cl = claims(s, rows)
    t.append(time.perf_counter())
    fig, fig2 = figure(s, pmass_points(s)), figure2(s)
    t.append(time.perf_counter())
    svgs = {"figure1": fig["svg"]} | ({"figure2": fig2["svg"]} if fig2 else {})
    html = study_page(s, rows, evidence(s, rows, cl), svgs, protocol(s, d), provenance(s), prompt_texts(s, d)).encode()
    t.append(time.perf_counter())
    names = ("read CSVs", "index", "table + claims", "figures", "page (evidence + HTML)")
    steps = dict(zip(names, (b - a for a, b in itertools.pairwise(t)), strict=True))
    total, page = t[-1] - t[0], steps["page (evidence + HTML)"]
    mb = len(html) / 2**20
    print(f"{d}: " + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items()) + f"; whole build {total:.1f} s")
    print(
        f"  report.html {mb:.2f} MB (size / {SIZE_MB:g} MB = {mb / SIZE_MB:.2f}); the page's own seconds / {SECONDS:g} s = "
        f"{page / SECONDS:.3f}; the whole report / {SECONDS:g} s = {total / SECONDS:.2f}"
    )


def main() -> None:
    dirs = [Path(a) for a in sys.argv[1:]] or [Path("results/v2"), Path("results/refusal")]
    print(f"CPU: {cpu()} (the report is numpy and matplotlib, no torch)")
    for d in dirs:
        bench(d)


if __name__ == "__main__":
    main()

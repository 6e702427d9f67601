"""What a cached re-run of `make run` spends: the whole command, its phases, and every cell.

Run from the project root after a run that trained every model (the cache is full):

    .venv/bin/python benchmarks/cached_run.py [--runs 3] [--warmup 1] [--profile full] [--top 12]

A first, uncounted run (`--warmup`) fills what a change of the analyses' code empties (the
analysis and prediction caches) and the operating system's file cache. Each counted run times
`make run` as a user starts it (the venv check, then `python -m tools.build run`: papermill
execution, PDF export), reads the phases from what it prints and every code cell's duration
from papermill's record in `build/ca4.ipynb`. A run that trained a model is not a cached
re-run: the script says so and stops. Writes `build/cached_run.json` (every
run's total, phases and per-cell seconds) and prints the median of each over the runs.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from ca4lib.settings import build_dir
from ca4lib.storage import write_json_atomic
from tools.build import section_titles

PHASES = {"execution": re.compile(r"^executed in (.+)$"),
          "PDF export": re.compile(r"^wrote \S+ in (.+)$")}


def parse_duration(text: str) -> float:
    """Read back tools.build's durations: '45 s', '3 min 05 s', '1 h 02 min'."""
    units = {"h": 3600, "min": 60, "s": 1}
    parts = re.findall(r"(\d+) (h|min|s)\b", text)
    if not parts:
        raise ValueError(f"text: not a duration, got {text!r}")
    return float(sum(int(value) * units[unit] for value, unit in parts))


def cell_seconds(notebook_path: Path) -> list[dict[str, Any]]:
    """Return each executed code cell's section, first line and papermill duration."""
    import nbformat

    notebook = nbformat.read(notebook_path, as_version=4)
    titles = section_titles(notebook)
    cells = []
    for index, cell in enumerate(notebook.cells):
        duration = cell.metadata.get("papermill", {}).get("duration")
        if cell.cell_type == "code" and duration is not None:
            first_line = next((line for line in cell.source.splitlines() if line.strip()), "")
            cells.append({"index": index, "section": titles.get(cell.id, ""),
                          "first_line": first_line[:60], "seconds": float(duration)})
    return cells


def one_run(profile: str) -> dict[str, Any]:
    """Time one `make run`; return its total, phases and cells, or exit if it trained."""
    environment = {**os.environ, "CA4_PROFILE": profile}
    started = time.perf_counter()
    finished = subprocess.run(["make", "--no-print-directory", "run"], cwd=PROJECT_ROOT,
                              env=environment, capture_output=True, text=True, check=False)
    total = time.perf_counter() - started
    if finished.returncode != 0:
        sys.exit(f"make run failed:\n{finished.stdout[-2000:]}{finished.stderr[-2000:]}")
    lines = finished.stdout.splitlines()
    trained = [line for line in lines if re.search(r"\b(trained|resuming)\b", line)
               and not line.startswith(" ")]
    if trained:
        sys.exit("not a cached re-run, models were trained:\n" + "\n".join(trained))
    phases = {}
    for name, pattern in PHASES.items():
        match = next((pattern.match(line) for line in lines if pattern.match(line)), None)
        phases[name] = parse_duration(match[1]) if match else None
    cells = cell_seconds(build_dir() / "ca4.ipynb")
    return {"total_s": total, "phases_s": phases, "cells_s": sum(c["seconds"] for c in cells),
            "cells": cells}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="uncounted runs first")
    parser.add_argument("--profile", default="full")
    parser.add_argument("--top", type=int, default=12, help="cells listed, slowest first")
    options = parser.parse_args()
    for number in range(options.warmup):
        print(f"warm-up run {number + 1}: {one_run(options.profile)['total_s']:.1f} s",
              flush=True)
    runs = []
    for number in range(options.runs):
        runs.append(one_run(options.profile))
        print(f"run {number + 1}: {runs[-1]['total_s']:.1f} s", flush=True)
    output = write_json_atomic(build_dir() / "cached_run.json",
                               {"profile": options.profile, "runs": runs})

    def median(values: list[float | None]) -> str:
        known = [value for value in values if value is not None]
        return f"{statistics.median(known):6.1f}" if known else "     ?"

    print(f"\nmedian of {len(runs)} cached `make run` ({options.profile}), seconds")
    print(f"{median([r['total_s'] for r in runs])}  make run, in all")
    for name in PHASES:
        print(f"{median([r['phases_s'][name] for r in runs])}  {name}")
    print(f"{median([r['cells_s'] for r in runs])}  the notebook's code cells (papermill)")
    print("\nslowest cells (median s, cell, section, first line):")
    by_cell = {}
    for run in runs:
        for cell in run["cells"]:
            by_cell.setdefault(cell["index"], (cell, []))[1].append(cell["seconds"])
    ranked = sorted(by_cell.values(), key=lambda item: -statistics.median(item[1]))
    for cell, seconds in ranked[:options.top]:
        print(f"{statistics.median(seconds):6.1f}  [{cell['index']:2d}] "
              f"{cell['section'][-40:]:40s}  {cell['first_line']}")
    print(f"\nwrote {output}")


if __name__ == "__main__":
    main()

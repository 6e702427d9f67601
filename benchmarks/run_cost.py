"""What each part of an executed notebook cost: seconds per section and per trained model.

Run from the project root after a run (no TensorFlow is imported):

    .venv/bin/python benchmarks/run_cost.py [build/ca4.ipynb]

Each code cell's time is papermill's (`metadata.papermill.duration`), summed by the headings
the cell sits under (tools.build.section_titles); each model's training time and whether this
run trained it come from build/metrics.json beside the notebook. The assignment asks for the
Task 1 autoencoder and the three VAEs of the sweep; every other model and analysis is the
report's own evidence, and the table says which is which.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from ca4lib import settings  # noqa: E402
from ca4lib.progress import format_duration  # noqa: E402
from tools.build import section_titles  # noqa: E402

# The models the assignment asks for; the rest are evidence the report adds.
ASSIGNMENT = ("autoencoder_latent10", "vae_kl0p1", "vae_kl1", "vae_kl5")


def section_seconds(path: Path) -> dict[str, float]:
    """Seconds per section (the headings a code cell sits under), in the notebook's order."""
    import nbformat

    node = nbformat.read(path, as_version=4)
    titles = section_titles(node)
    seconds: dict[str, float] = defaultdict(float)
    for cell in node.cells:
        if cell.cell_type == "code":
            duration = cell.metadata.get("papermill", {}).get("duration") or 0.0
            seconds[titles.get(cell.id, "") or "(start)"] += float(duration)
    return dict(seconds)


def main(arguments: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", nargs="?", type=Path,
                        default=settings.build_dir() / "ca4.ipynb")
    options = parser.parse_args(arguments)
    total = 0.0
    print(f"{'seconds':>8}  section")
    for title, seconds in section_seconds(options.notebook).items():
        total += seconds
        print(f"{seconds:8.1f}  {title}")
    print(f"{total:8.1f}  all cells ({format_duration(total)})")
    metrics_path = options.notebook.parent / "metrics.json"
    if metrics_path.is_file():
        training = json.loads(metrics_path.read_text())["training"]
        print(f"\n{'seconds':>8}  model (training time over every run that trained it)")
        for part in ("assignment", "beyond the assignment"):
            models = {name: run for name, run in training.items()
                      if (name in ASSIGNMENT) == (part == "assignment")}
            for name, run in models.items():
                epochs = f"{run['epochs']} epoch{'s' * (run['epochs'] != 1)}"
                print(f"{run['seconds']:8.1f}  {name}: {epochs}, {run['source']}")
            seconds = sum(run["seconds"] for run in models.values())
            print(f"{seconds:8.1f}  {part} ({format_duration(seconds)})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

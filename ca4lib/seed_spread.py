"""How much the KL-weight sweep's numbers move between training seeds, for every verdict that
compares two weights (notebook: *Task 2*, its discussion and the appendix).

The report compares weights on the test images of one trained model per weight; those
intervals leave out the spread between training runs. `experiments/sweep_seeds.py` trains the
sweep at three seeds and writes `experiments/results/sweep_seeds.json`; `SeedSpread` reads it,
and a difference between weights is called clear only when its interval over the test images
excludes zero and it is also larger than the standard deviation of the same difference over
the seeds (`clear_sign`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ca4lib.estimates import Estimate
from ca4lib.settings import PROJECT_DIR

SEEDS_RESULT = PROJECT_DIR / "experiments" / "results" / "sweep_seeds.json"


@dataclasses.dataclass(frozen=True)
class SeedSpread:
    """Per seed, the sweep's numbers: `values[section][metric][weight]` lists one value per
    seed (in `seeds` order). Sections are the experiment's: `sweep`, `latent_space` and
    `generation`."""

    seeds: tuple[int, ...]
    values: Mapping[str, Mapping[str, Mapping[float, list[float]]]]
    commit: str
    date: str

    def has(self, section: str, metric: str) -> bool:
        """Whether the experiment recorded `metric` in `section`."""
        return metric in self.values.get(section, {})

    def of(self, section: str, metric: str, weight: float) -> list[float]:
        """The value of `metric` at `weight`, one per seed."""
        return list(self.values[section][metric][float(weight)])

    def sd(self, section: str, metric: str, weight: float) -> float:
        """The standard deviation over seeds of `metric` at `weight`."""
        values = self.of(section, metric, weight)
        return statistics.stdev(values) if len(values) > 1 else math.inf

    def difference_sd(self, section: str, metric: str, first: float, second: float) -> float:
        """The standard deviation over seeds of `metric` at `second` minus at `first`."""
        differences = [b - a for a, b in zip(self.of(section, metric, first),
                                             self.of(section, metric, second))]
        return statistics.stdev(differences) if len(differences) > 1 else math.inf

    def differences(self, section: str, metric: str, first: float, second: float
                    ) -> list[float]:
        """`metric` at `second` minus at `first`, one per seed."""
        return [b - a for a, b in zip(self.of(section, metric, first),
                                      self.of(section, metric, second))]


def load_seed_spread(profile: str, epochs: int, path: str | Path = SEEDS_RESULT
                     ) -> SeedSpread | None:
    """Read the experiment's results; None when there are none for this profile and epochs
    (the fast profile's models are others, so the full profile's spread says nothing of them)."""
    try:
        found = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if found.get("profile") != profile or found.get("epochs") != epochs:
        return None
    values: dict[str, dict[str, dict[float, list[float]]]] = {}
    seeds = tuple(int(seed) for seed in found["seeds"])
    for seed in seeds:
        for section, rows in found["results"][str(seed)].items():
            if not isinstance(rows, list):
                continue
            for row in rows:
                if row.get("kl_weight") is None:
                    continue
                for metric, value in row.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        values.setdefault(section, {}).setdefault(metric, {}).setdefault(
                            float(row["kl_weight"]), []).append(float(value))
    return SeedSpread(seeds, values, found.get("commit", "unknown"), found.get("date", ""))


def clear_sign(estimate: Estimate, spread: float | None) -> int:
    """+1 or -1 when a difference between weights is clear: its 95 % interval over the test
    images excludes zero and, given the spread over seeds, it is also larger than that."""
    if estimate.sign == 0:
        return 0
    if spread is not None and abs(estimate.value) <= spread:
        return 0
    return estimate.sign


def step_signs(rows: Sequence[Mapping[str, Any]], name: str, spread: SeedSpread | None,
               section: str = "sweep") -> list[int]:
    """For each step between neighbouring rows of the sweep: the sign of the paired change of
    `name` where it is clear (clear_sign), else 0."""
    signs = []
    for before, row in zip(rows, rows[1:]):
        change = Estimate(row[f"{name}_change"], row[f"{name}_change_se"], row["n"])
        sd = None if spread is None or not spread.has(section, name) else spread.difference_sd(
            section, name, before["kl_weight"], row["kl_weight"])
        signs.append(clear_sign(change, sd))
    return signs

"""Estimates with standard errors: the numbers every comparison in the report rests on.

A difference is called clear only when its 95 % interval excludes zero (`Estimate.sign`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ca4lib.checks import check_positive_int
from ca4lib.settings import DEFAULT_SEED

# A difference is called clear when the 95 % confidence interval of its estimate excludes 0.
CONFIDENCE_LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Estimate:
    """An estimate with its standard error, from n independent items (images, seeds, samples)."""

    value: float
    se: float
    n: int

    @property
    def half_width(self) -> float:
        """Half the 95 % interval: Student's t quantile (n - 1 degrees of freedom) x SE."""
        from scipy.stats import t

        return float(t.ppf(0.5 + CONFIDENCE_LEVEL / 2, max(self.n - 1, 1)) * self.se)

    @property
    def sign(self) -> int:
        """+1 or -1 when the interval excludes 0, else 0: no clear difference."""
        return int(np.sign(self.value)) if abs(self.value) > self.half_width else 0

    def __sub__(self, other: Estimate) -> Estimate:
        """The difference of two independent estimates."""
        return Estimate(self.value - other.value, math.hypot(self.se, other.se),
                        min(self.n, other.n))

    def text(self, spec: str = ".3g") -> str:
        """Format as 'value ± SE', '148.9 ± 0.3', with as many more digits than `spec` asks
        as it takes for the printed numbers to agree with the verdict (`sign`): never
        '-0.02 ± 0.01' for -0.0225 ± 0.0140, whose interval includes zero ('-0.023 ± 0.014').
        An SE too small for `spec` gets one significant digit ('0.012 ± 0.0003')."""
        return " ± ".join(self.texts(spec))

    def texts(self, spec: str = ".3g") -> tuple[str, str]:
        """The value and the SE as `text` prints them, apart."""
        for finer in finer_specs(spec):
            value, se = number(self.value, finer), standard_error_text(self.se, finer)
            if Estimate(parsed(value), parsed(se), self.n).sign == self.sign:
                return value, se
        return value, se


def number(value: float, spec: str = ".3g") -> str:
    """Format a number for a sentence, never as '-0.00'."""
    text = format(value, spec)
    negative_zero = text.startswith("-") and not any(c in "123456789" for c in text)
    return text[1:] if negative_zero and math.isfinite(value) else text


def finer_specs(spec: str, extra: int = 4) -> list[str]:
    """`spec` and the same format with up to `extra` more digits: '.2f', '.3f', ..."""
    match = re.fullmatch(r"([^.]*)\.(\d+)([a-z%]?)", spec)
    if match is None:
        return [spec]
    head, digits, kind = match.groups()
    return [f"{head}.{int(digits) + more}{kind}" for more in range(extra + 1)]


def parsed(text: str) -> float:
    """The number a formatted text shows: '12.5' -> 12.5, '12.5%' -> 0.125."""
    return float(text[:-1]) / 100 if text.endswith("%") else float(text)


def standard_error_text(se: float, spec: str = ".3g") -> str:
    """Format a standard error with `spec`, or with one significant digit if `spec` would
    print a positive SE as zero."""
    text = number(se, spec)
    if se > 0 and not any(c in "123456789" for c in text):
        return f"{100 * se:.1g}%" if spec.endswith("%") else format(se, ".1g")
    return text


def mean_estimate(values: Any) -> Estimate:
    """Return the mean of per-item values with its standard error (sd / sqrt(n))."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError(f"values: expected finite numbers, got {values.size} values "
                         f"{'with NaN or infinity' if values.size else ''}".strip())
    se = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else math.inf
    return Estimate(float(values.mean()), se, int(values.size))


def paired_estimate(first: Any, second: Any) -> Estimate:
    """Return the mean of `first - second` over paired items, with its standard error."""
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    if first.shape != second.shape:
        raise ValueError(f"second: expected {first.shape} values paired with first, "
                         f"got {second.shape}")
    return mean_estimate(first - second)


def share_estimate(hits: Any) -> Estimate:
    """Return the share of True among `hits` with the Agresti-Coull standard error.

    The adjusted SE, sqrt(p~ (1 - p~) / (n + 4)) with p~ = (hits + 2) / (n + 4), stays above
    zero at a share of 0 or 1, where the plain binomial SE would claim certainty.
    """
    hits = np.asarray(hits, dtype=bool).ravel()
    if hits.size == 0:
        raise ValueError("hits: expected at least one outcome, got none")
    adjusted = (hits.sum() + 2) / (hits.size + 4)
    return Estimate(float(hits.mean()), float(math.sqrt(adjusted * (1 - adjusted)
                                                        / (hits.size + 4))), int(hits.size))


def bootstrap_estimate(statistic: Callable[[np.ndarray], float], items: np.ndarray,
                       seed: int = DEFAULT_SEED, replicates: int = 500) -> Estimate:
    """Return `statistic(items)` with the standard deviation of its bootstrap replicates."""
    items = np.asarray(items)
    rng = np.random.default_rng(seed)
    draws = [statistic(items[rng.integers(0, len(items), len(items))])
             for _ in range(check_positive_int(replicates, "replicates"))]
    return Estimate(float(statistic(items)), float(np.std(draws, ddof=1)), len(items))


def compared_rows(evidence: Mapping[Any, Mapping[str, Any]], key: str,
                  measures: Mapping[str, Callable[[Any], Estimate]], against: str = "previous"
                  ) -> list[dict[str, Any]]:
    """One row per run: each measure's value and SE, and the paired change against another run.

    `evidence[run][name]` holds per-item values of the same items for every run; `measures`
    maps each name to how it is estimated (mean_estimate, share_estimate). A row's
    `{name}_change` and `{name}_change_se` compare it, item by item, with the row before
    (`against="previous"`) or with the first row (`against="first"`).
    """
    if against not in ("previous", "first"):
        raise ValueError(f"against: expected 'previous' or 'first', got {against!r}")
    rows: list[dict[str, Any]] = []
    previous = None
    for run, values in evidence.items():
        row: dict[str, Any] = {key: run}
        for name, estimate in measures.items():
            found = estimate(values[name])
            row[name], row[f"{name}_se"], row["n"] = found.value, found.se, found.n
            if previous is not None:
                change = paired_estimate(np.asarray(values[name], np.float64),
                                         np.asarray(previous[name], np.float64))
                row[f"{name}_change"], row[f"{name}_change_se"] = change.value, change.se
        rows.append(row)
        previous = values if against == "previous" or previous is None else previous
    return rows


def estimate_of(row: Mapping[str, Any], name: str) -> Estimate:
    """Return the Estimate stored in a row as `name`, `name_se` and `n`."""
    return Estimate(float(row[name]), float(row[f"{name}_se"]), int(row["n"]))


def change_of(row: Mapping[str, Any], name: str) -> Estimate:
    """Return a row's paired change of `name` against the row before, as an Estimate."""
    return Estimate(row[f"{name}_change"], row[f"{name}_change_se"], row["n"])

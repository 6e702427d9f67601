"""Small helpers that write numbers into sentences: counts, percentages, lists, verdicts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ca4lib.estimates import Estimate, number


def joined(values: Sequence[Any], spec: str = "", separator: str = " / ") -> str:
    """Format values for a sentence: `joined([0.1, 1, 5], "g")` gives '0.1 / 1 / 5'."""
    return separator.join(format(value, spec) for value in values)


def plural(count: int, word: str) -> str:
    """'1 epoch', '20 epochs'."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def percent(value: float, digits: int = 1) -> str:
    """Format a share as a percentage for a sentence, never '-0.0%'."""
    return number(100 * value, f".{digits}f") + "%"


def percent_estimate(estimate: Estimate, digits: int = 1) -> str:
    """'97.3% ± 0.2%'."""
    return f"{percent(estimate.value, digits)} ± {percent(estimate.se, digits)}"


def listed(names: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def weights_text(weights: Sequence[float]) -> str:
    """'0.1 / 1 / 5'."""
    return joined([number(w, "g") for w in weights])


def verdict(estimate: Estimate, smaller: str, larger: str, spec: str = ".3g") -> str:
    """Word a difference with its uncertainty: 'lower (-0.012 ± 0.003)', or 'no clearly
    different (0.001 ± 0.002)' when the 95 % interval includes zero."""
    word = {-1: smaller, 1: larger, 0: "not clearly different"}[estimate.sign]
    return f"{word} ({estimate.text(spec)})"

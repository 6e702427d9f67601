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
    """Format a share as a percentage for a sentence, never '-0.0%', and never '100%' or
    '0%' for a share that is not exactly that ('99.7%' with a digit more)."""
    for shown in range(digits, digits + 4):
        text = number(100 * value, f".{shown}f")
        if float(text) not in (0.0, 100.0) or value in (0.0, 1.0):
            break
    return text + "%"


def percent_estimate(estimate: Estimate, digits: int = 1) -> str:
    """'97.3% ± 0.2%', with more digits where fewer would print a verdict the interval does
    not support (Estimate.text)."""
    return estimate.text(f".{digits}%")


def listed(names: Sequence[Any]) -> str:
    """'a', 'a and b', 'a, b and c' (numbers and other values as str() writes them)."""
    names = [str(name) for name in names]
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def weights_text(weights: Sequence[float]) -> str:
    """'0.1 / 1 / 5'."""
    return joined([number(w, "g") for w in weights])


def verdict(estimate: Estimate, smaller: str, larger: str, spec: str = ".3g") -> str:
    """Word a difference with its uncertainty: 'lower (-0.012 ± 0.003)', or 'no clearly
    different (0.001 ± 0.002)' when the 95 % interval includes zero."""
    word = {-1: smaller, 1: larger, 0: "not clearly different"}[estimate.sign]
    return f"{word} ({estimate.text(spec)})"


def steps_text(weights: Sequence[float], signs: Sequence[int], up: str = "rose",
               down: str = "fell", flat: str = "did not change clearly") -> str:
    """Say what a quantity did at each step between neighbouring weights, from the clear sign
    of each step (+1, -1, or 0 for no clear change): 'rose at each step', 'fell from 0.1 to 1,
    then did not change clearly from 1 to 5', 'rose from 0.1 to 1, then fell from 1 to 5'."""
    if len(signs) != len(weights) - 1 or not signs:
        raise ValueError(f"signs: expected one per step between the {len(weights)} weights, "
                         f"got {len(signs)}")
    words = {1: up, -1: down, 0: flat}
    if len(set(signs)) == 1:
        if signs[0] == 0:
            return f"{flat} at any step"
        return f"{words[signs[0]]} at each step" if len(signs) > 1 else (
            f"{words[signs[0]]} from {number(weights[0], 'g')} to {number(weights[1], 'g')}")
    return ", then ".join(f"{words[sign]} from {number(a, 'g')} to {number(b, 'g')}"
                          for sign, a, b in zip(signs, weights, weights[1:]))


def verdict_by(estimate: Estimate, smaller: str, larger: str, spec: str = ".3g") -> str:
    """Word a difference by how much: 'higher by 0.100 ± 0.006', 'lower by 0.012 ± 0.003', or
    'not clearly different (0.001 ± 0.002)' when the 95 % interval includes zero."""
    if estimate.sign == 0:
        return f"not clearly different ({estimate.text(spec)})"
    size = Estimate(abs(estimate.value), estimate.se, estimate.n)
    return f"{larger if estimate.sign > 0 else smaller} by {size.text(spec)}"

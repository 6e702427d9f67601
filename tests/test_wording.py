"""Numbers in sentences (ca4lib.wording): lists, percentages, steps, verdicts, on constructed
values and estimates whose wording is known."""

from __future__ import annotations

import pytest

from ca4lib import wording
from ca4lib.estimates import Estimate


def test_joined_formats_values_for_a_sentence():
    assert wording.joined([0.1, 1.0, 5.0], "g") == "0.1 / 1 / 5"
    assert wording.joined([0.12345, 2], ".2f", ", ") == "0.12, 2.00"
    assert wording.joined([]) == ""


@pytest.mark.parametrize("names, text", [
    (["a"], "a"), (["a", "b"], "a and b"), (["a", "b", "c"], "a, b and c"), ([2, 10], "2 and 10")])
def test_listed_names(names, text):
    assert wording.listed(names) == text


@pytest.mark.parametrize("value, digits, text", [
    (0.997, 0, "99.7%"),  # not '100%': the referee's '100% of the images resolved' for 99.7%
    (1.0, 0, "100%"), (0.0004, 1, "0.04%"), (0.5, 0, "50%"), (0.0, 1, "0.0%")])
def test_percent_never_rounds_to_all_or_nothing(value, digits, text):
    assert wording.percent(value, digits) == text


@pytest.mark.parametrize("signs, words", [
    ([1, 1], "rose at each step"),
    ([-1, -1], "fell at each step"),
    ([0, 0], "did not change clearly at any step"),
    ([1, -1], "rose from 0.1 to 1, then fell from 1 to 5"),  # the recognised digits' pattern
    ([-1, 1], "fell from 0.1 to 1, then rose from 1 to 5"),
    ([0, -1], "did not change clearly from 0.1 to 1, then fell from 1 to 5"),
])
def test_steps_text_says_what_happened_at_each_step(signs, words):
    assert wording.steps_text([0.1, 1.0, 5.0], signs) == words


def test_steps_text_needs_one_sign_per_step():
    with pytest.raises(ValueError, match="signs"):
        wording.steps_text([0.1, 1.0, 5.0], [1])


@pytest.mark.parametrize("value, se, words", [
    (0.1, 0.0058, "higher by 0.100 ± 0.006"), (-0.1, 0.0058, "lower by 0.100 ± 0.006"),
    (0.0017, 0.006, "not clearly different (0.002 ± 0.006)")])
def test_verdict_by_says_by_how_much(value, se, words):
    assert wording.verdict_by(Estimate(value, se, 1000), "lower", "higher", ".3f") == words

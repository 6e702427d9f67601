"""Estimates with standard errors (ca4lib.estimates): the 95 % interval and its sign, the
printed numbers, mean, paired, share and bootstrap estimates, and rows compared run by run.

Every expected value is computed here, independently of ca4lib (NumPy, SciPy, by hand), or
is the known answer of a constructed case. `sd_over_root_n` is the independent standard error
that the room tests of the analyses import from this file.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ca4lib import estimates


def sd_over_root_n(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


# ---------------------------------------------------------------------------------------------
# Estimate: the 95 % interval, its sign, differences
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 10, 1000])
def test_half_width_is_the_t_quantile_with_n_minus_one_degrees_of_freedom(n):
    se = 0.37
    expected = stats.t.ppf(0.975, df=n - 1) * se
    assert estimates.Estimate(1.0, se, n).half_width == pytest.approx(expected, rel=1e-12)


def test_half_width_against_textbook_t_quantiles():
    # Student's t tables: t(0.975, 2) = 4.303, t(0.975, 9) = 2.262; the normal 1.960 for large n.
    assert estimates.Estimate(0.0, 1.0, 3).half_width == pytest.approx(4.303, abs=5e-4)
    assert estimates.Estimate(0.0, 2.0, 10).half_width == pytest.approx(2 * 2.262, abs=1e-3)
    assert estimates.Estimate(0.0, 1.0, 100_000).half_width == pytest.approx(1.960, abs=5e-4)


def test_half_width_of_a_zero_standard_error_is_zero():
    assert estimates.Estimate(3.0, 0.0, 50).half_width == 0.0
    assert estimates.Estimate(3.0, 0.0, 50).sign == 1
    assert estimates.Estimate(0.0, 0.0, 50).sign == 0


@pytest.mark.parametrize("value, se, n, sign", [
    (1.0, 0.1, 1000, 1),  # interval about 1 +- 0.196: excludes 0
    (-1.0, 0.1, 1000, -1),
    (0.05, 0.1, 1000, 0),  # 0.05 +- 0.196 contains 0
    (-0.05, 0.1, 1000, 0),
    (0.3, 0.1, 3, 0),  # 0.3 +- 0.43 with 2 degrees of freedom: not clear with 3 items
    (0.3, 0.1, 1000, 1),  # ... but clear with 1000
    (5.0, math.inf, 1, 0),  # one item: no spread, never clear
])
def test_sign_is_zero_inside_the_interval_and_the_direction_outside(value, se, n, sign):
    assert estimates.Estimate(value, se, n).sign == sign


@pytest.mark.parametrize("direction", [1, -1])
def test_sign_exactly_at_the_boundary_is_not_clear(direction):
    se, n = 0.25, 12
    boundary = stats.t.ppf(0.975, n - 1) * se
    at = estimates.Estimate(direction * boundary, se, n)
    assert at.half_width == pytest.approx(boundary, rel=1e-15)
    # The interval [0, 2 x boundary] still contains 0: no clear difference.
    assert estimates.Estimate(direction * at.half_width, se, n).sign == 0
    beyond = np.nextafter(at.half_width, math.inf)
    assert estimates.Estimate(direction * beyond, se, n).sign == direction


def test_difference_of_independent_estimates():
    first, second = estimates.Estimate(10.0, 0.3, 100), estimates.Estimate(7.5, 0.4, 40)
    difference = first - second
    assert difference.value == pytest.approx(2.5)
    assert difference.se == pytest.approx(0.5)  # sqrt(0.3^2 + 0.4^2)
    assert difference.n == 40
    assert isinstance(difference, estimates.Estimate)


def test_estimate_text():
    assert estimates.Estimate(148.93, 0.31, 100).text(".1f") == "148.9 ± 0.3"
    assert estimates.Estimate(0.012, 0.0003, 100).text(".3f") == "0.012 ± 0.0003"
    assert estimates.Estimate(-0.0004, 0.002, 100).text(".2f") == "0.00 ± 0.002"


@pytest.mark.parametrize("value, se, spec, shown", [
    (-0.0225, 0.0140, ".2f", "-0.022 ± 0.014"),  # '-0.02 ± 0.01' would read as clear
    (148.93, 0.31, ".1f", "148.9 ± 0.3"),  # agrees already: no digit added
    (0.0166, 0.0083, ".1%", "1.7% ± 0.8%"),
    (0.02, 0.0098, ".2f", "0.02 ± 0.01"),  # clear (2.04 SE), and printed as clear
])
def test_estimate_text_prints_the_digits_its_verdict_needs(value, se, spec, shown):
    estimate = estimates.Estimate(value, se, 1000)
    assert estimate.text(spec) == shown
    printed, printed_se = (estimates.parsed(part) for part in shown.split(" ± "))
    # An independent reading of the printed pair: |value| against 1.96 x SE (n = 1000).
    assert (abs(printed) > 1.9623 * printed_se) == (abs(value) > 1.9623 * se)


# ---------------------------------------------------------------------------------------------
# number and standard_error_text: never '-0.00'
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, spec, text", [
    (-0.0, ".2f", "0.00"),
    (-0.001, ".2f", "0.00"),
    (-0.004999, ".2f", "0.00"),
    (-0.005001, ".2f", "-0.01"),
    (-0.0, "g", "0"),
    (-1e-9, ".1%", "0.0%"),
    (-1e-5, ".3g", "-1e-05"),
    (-2.5, ".1f", "-2.5"),
    (0.1234, ".3g", "0.123"),
    (1234567.0, ",.0f", "1,234,567"),
])
def test_number_never_prints_a_negative_zero(value, spec, text):
    assert estimates.number(value, spec) == text


def test_number_keeps_the_sign_of_minus_infinity():
    assert estimates.number(-math.inf) == "-inf"


@pytest.mark.parametrize("se, spec, text", [
    (0.31, ".1f", "0.3"),
    (0.0003, ".3f", "0.0003"),  # .3f would print 0.000
    (0.04, ".1f", "0.04"),
    (0.00049, ".3f", "0.0005"),
    (0.0, ".3f", "0.000"),  # a zero SE is zero
    (0.0012, ".3f", "0.001"),  # visible with the spec: kept as it is
    (math.inf, ".2f", "inf"),
])
def test_standard_error_text_gives_a_too_small_se_one_significant_digit(se, spec, text):
    assert estimates.standard_error_text(se, spec) == text


@pytest.mark.parametrize("se, spec, text", [(0.003, ".0%", "0.3%"), (0.0004, ".1%", "0.04%")])
def test_standard_error_text_of_a_small_percentage(se, spec, text):
    assert estimates.standard_error_text(se, spec) == text


# ---------------------------------------------------------------------------------------------
# mean, paired, share and bootstrap estimates
# ---------------------------------------------------------------------------------------------


def test_mean_estimate_against_numpy():
    values = np.random.default_rng(0).normal(3.0, 2.0, size=(40, 5))
    found = estimates.mean_estimate(values)
    flat = values.ravel()
    assert found.value == pytest.approx(np.mean(flat), rel=1e-12)
    assert found.se == pytest.approx(np.std(flat, ddof=1) / np.sqrt(flat.size), rel=1e-12)
    assert found.n == 200


def test_mean_estimate_of_known_values():
    found = estimates.mean_estimate([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, sample variance 5/3, SE sqrt(5/3 / 4)
    assert (found.value, found.n) == (2.5, 4)
    assert found.se == pytest.approx(math.sqrt(5 / 12))


def test_mean_estimate_of_one_value_has_an_infinite_standard_error():
    found = estimates.mean_estimate([4.2])
    assert (found.value, found.n) == (4.2, 1)
    assert found.se == math.inf
    assert found.sign == 0


@pytest.mark.parametrize("values", [[1.0, math.nan], [math.inf, 2.0], []])
def test_mean_estimate_rejects_nan_infinity_and_no_values(values):
    with pytest.raises(ValueError, match="values: expected finite numbers"):
        estimates.mean_estimate(values)


def test_paired_estimate_is_the_mean_difference_and_pairing_removes_shared_spread():
    rng = np.random.default_rng(1)
    shared = rng.normal(0.0, 10.0, 500)  # large differences between items
    first = shared + 0.2 + rng.normal(0.0, 0.1, 500)
    second = shared
    paired = estimates.paired_estimate(first, second)
    differences = first - second
    assert paired.value == pytest.approx(differences.mean(), rel=1e-12)
    assert paired.se == pytest.approx(differences.std(ddof=1) / math.sqrt(500), rel=1e-12)
    assert paired.n == 500
    assert paired.sign == 1
    # Unpaired, the shared spread hides the difference.
    assert (estimates.mean_estimate(first) - estimates.mean_estimate(second)).sign == 0


def test_paired_estimate_rejects_a_shape_mismatch():
    with pytest.raises(ValueError, match=r"second: expected \(3,\) values paired with first"):
        estimates.paired_estimate([1.0, 2.0, 3.0], [1.0, 2.0])


@pytest.mark.parametrize("hits, count", [(7, 20), (0, 10), (10, 10), (1, 1), (480, 1000)])
def test_share_estimate_uses_the_agresti_coull_standard_error(hits, count):
    outcomes = np.zeros(count, bool)
    outcomes[:hits] = True
    np.random.default_rng(0).shuffle(outcomes)
    adjusted = (hits + 2) / (count + 4)
    found = estimates.share_estimate(outcomes)
    assert found.value == pytest.approx(hits / count)
    assert found.se == pytest.approx(math.sqrt(adjusted * (1 - adjusted) / (count + 4)))
    assert found.n == count
    assert found.se > 0  # also at a share of 0 or 1


def test_share_estimate_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="hits: expected at least one outcome"):
        estimates.share_estimate([])


def test_bootstrap_estimate_of_constant_data_has_no_spread():
    found = estimates.bootstrap_estimate(np.mean, np.full(30, 2.5), seed=3)
    assert (found.value, found.se, found.n) == (2.5, 0.0, 30)


def test_bootstrap_se_of_a_mean_matches_sd_over_root_n():
    sample = np.random.default_rng(7).normal(5.0, 3.0, 2000)
    found = estimates.bootstrap_estimate(np.mean, sample, seed=11)
    assert found.value == pytest.approx(sample.mean(), rel=1e-12)
    analytic = sample.std(ddof=1) / math.sqrt(len(sample))
    # 500 replicates estimate an SD to about 1/sqrt(2 x 500) = 3 %: 15 % is five times that.
    assert found.se == pytest.approx(analytic, rel=0.15)


def test_bootstrap_estimate_is_reproducible_and_rejects_no_replicates():
    sample = np.random.default_rng(0).uniform(size=50)
    assert estimates.bootstrap_estimate(np.median, sample, seed=4) == estimates.bootstrap_estimate(
        np.median, sample, seed=4)
    with pytest.raises(ValueError, match="replicates: expected a positive integer"):
        estimates.bootstrap_estimate(np.median, sample, replicates=0)


# ---------------------------------------------------------------------------------------------
# compared_rows
# ---------------------------------------------------------------------------------------------


EVIDENCE = {"a": {"x": np.array([1.0, 2.0, 3.0, 4.0]), "hit": np.array([1, 0, 0, 1], bool)},
            "b": {"x": np.array([2.0, 4.0, 6.0, 8.0]), "hit": np.array([1, 1, 0, 1], bool)},
            "c": {"x": np.array([2.0, 4.0, 9.0, 8.0]), "hit": np.array([1, 1, 1, 1], bool)}}
MEASURES = {"x": estimates.mean_estimate, "hit": estimates.share_estimate}


@pytest.mark.parametrize("against, base_of", [("previous", {"b": "a", "c": "b"}),
                                              ("first", {"b": "a", "c": "a"})])
def test_compared_rows_pair_each_run_with_the_previous_or_the_first(against, base_of):
    rows = estimates.compared_rows(EVIDENCE, "run", MEASURES, against=against)
    assert [row["run"] for row in rows] == ["a", "b", "c"]
    for row in rows:
        values = EVIDENCE[row["run"]]
        assert row["x"] == pytest.approx(values["x"].mean())
        assert row["x_se"] == pytest.approx(sd_over_root_n(values["x"]))
        assert row["hit"] == pytest.approx(values["hit"].mean())
        assert row["n"] == 4
    assert "x_change" not in rows[0] and "hit_change" not in rows[0]
    for row in rows[1:]:
        base = EVIDENCE[base_of[row["run"]]]
        for name in ("x", "hit"):
            difference = EVIDENCE[row["run"]][name].astype(float) - base[name].astype(float)
            assert row[f"{name}_change"] == pytest.approx(difference.mean())
            assert row[f"{name}_change_se"] == pytest.approx(sd_over_root_n(difference))


def test_compared_rows_known_changes():
    previous = estimates.compared_rows(EVIDENCE, "run", {"x": estimates.mean_estimate})
    first = estimates.compared_rows(EVIDENCE, "run", {"x": estimates.mean_estimate}, against="first")
    # c - b = (0, 0, 3, 0): mean 0.75; c - a = (1, 2, 6, 4): mean 3.25.
    assert previous[2]["x_change"] == pytest.approx(0.75)
    assert previous[2]["x_change_se"] == pytest.approx(0.75)  # sd 1.5 over sqrt(4)
    assert first[2]["x_change"] == pytest.approx(3.25)


def test_compared_rows_rejects_another_comparison():
    with pytest.raises(ValueError, match="against: expected 'previous' or 'first', got 'best'"):
        estimates.compared_rows(EVIDENCE, "run", MEASURES, against="best")

"""Estimates with standard errors, the per-image measures and row builders of Task 1, and the
reporting helpers (tables, title block, run record, environment check, figures).

Every expected value is computed here, independently of ca4_helpers (NumPy, SciPy, by hand),
or is the known answer of a constructed case.
"""

from __future__ import annotations

import doctest
import io
import math
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import keras
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import PIL.Image
import pytest
from scipy import stats

from ca4lib import estimates, figures, generation, measures, report, settings, task1_analyses

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
# Per-image measures
# ---------------------------------------------------------------------------------------------


def images_and_predictions(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.uniform(size=(5, 28, 28, 1)).astype(np.float32)
    targets[0] = 1.0  # every pixel ink
    targets[1] = 0.0
    predictions = rng.uniform(size=(5, 28, 28, 1)).astype(np.float32)
    predictions[0, :5] = 0.0  # clipped to 1e-7: a large but finite loss
    predictions[1, :5] = 1.0  # clipped to 1 - 1e-7
    return targets, predictions


def test_per_image_bce_against_numpy_with_keras_clipping():
    targets, predictions = images_and_predictions()
    epsilon = np.float32(1e-7)
    clipped = np.clip(predictions, epsilon, np.float32(1) - epsilon).astype(np.float64)
    t = targets.astype(np.float64)
    expected = -(t * np.log(clipped) + (1 - t) * np.log(1 - clipped)).reshape(5, -1).mean(axis=1)
    found = measures.per_image_bce(targets, predictions)
    assert found.shape == (5,) and found.dtype == np.float64
    np.testing.assert_allclose(found, expected, rtol=1e-5)
    # Five rows of 28 zero predictions under ink: 140 pixels at -log(1e-7) = 16.1 each.
    assert found[0] > 140 * 16.0 / 784


def test_per_image_squared_error_against_numpy():
    targets, predictions = images_and_predictions(1)
    expected = ((targets.astype(np.float64) - predictions.astype(np.float64)) ** 2).reshape(
        5, -1).mean(axis=1)
    found = measures.per_image_squared_error(targets, predictions)
    assert found.dtype == np.float64
    np.testing.assert_allclose(found, expected, rtol=1e-12)
    half = np.zeros((1, 28, 28, 1), np.float32)
    half[0, :14] = 1.0  # half of the pixels off by 1
    assert measures.per_image_squared_error(half, np.zeros_like(half))[0] == pytest.approx(0.5)


def test_per_image_measures_reject_mismatched_images():
    targets, predictions = images_and_predictions()
    with pytest.raises(ValueError, match="predictions: expected shape"):
        measures.per_image_bce(targets, predictions[:3])
    with pytest.raises(ValueError, match="predictions: expected shape"):
        measures.per_image_squared_error(targets, predictions[:3])


def test_knn_correct_votes_by_the_majority_of_the_neighbours():
    # Three codes of digit 1 at 0, two of digit 2 at 0.1: the 5 neighbours of 0.06 vote 3 to 2
    # for digit 1, its single nearest neighbour is digit 2.
    train_codes = np.array([[0.0], [0.0], [0.0], [0.1], [0.1]])
    train_labels = np.array([1, 1, 1, 2, 2])
    test_codes, test_labels = np.array([[0.06], [0.06]]), np.array([1, 2])
    np.testing.assert_array_equal(
        measures.knn_correct(train_codes, train_labels, test_codes, test_labels), [True, False])
    np.testing.assert_array_equal(
        measures.knn_correct(train_codes, train_labels, test_codes, test_labels, neighbours=1),
        [False, True])


def test_knn_correct_rejects_codes_of_another_dimension():
    with pytest.raises(ValueError, match=r"test_codes: expected an array of shape \(N, 2\)"):
        measures.knn_correct(np.zeros((5, 2)), np.zeros(5, int), np.zeros((2, 3)), np.zeros(2, int))


# ---------------------------------------------------------------------------------------------
# compared_rows, latent_size_rows
# ---------------------------------------------------------------------------------------------

EVIDENCE = {"a": {"x": np.array([1.0, 2.0, 3.0, 4.0]), "hit": np.array([1, 0, 0, 1], bool)},
            "b": {"x": np.array([2.0, 4.0, 6.0, 8.0]), "hit": np.array([1, 1, 0, 1], bool)},
            "c": {"x": np.array([2.0, 4.0, 9.0, 8.0]), "hit": np.array([1, 1, 1, 1], bool)}}
MEASURES = {"x": estimates.mean_estimate, "hit": estimates.share_estimate}


def sd_over_root_n(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


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


def test_latent_size_rows_with_known_gains():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.08, 0.12, 200)
    wiggle = rng.normal(0.0, 0.002, 200)
    bce = {2: base + 0.05, 10: base + 0.01 + wiggle, 32: base}
    # Gains per image: 0.04 - wiggle from 2 to 10, 0.01 + wiggle from 10 to 32; the gain shrinks
    # by 0.03 - 2 x wiggle per image.
    hits = {2: rng.uniform(size=200) < 0.6, 10: rng.uniform(size=200) < 0.9,
            32: rng.uniform(size=200) < 0.95}
    knn = {2: rng.uniform(size=200) < 0.7, 10: rng.uniform(size=200) < 0.8,
           32: rng.uniform(size=200) < 0.8}
    evidence = {size: {"bce": bce[size], "recognised": hits[size], "knn": knn[size]}
                for size in (2, 10, 32)}
    rows = task1_analyses.latent_size_rows(evidence, {2: 3, 10: 4, 32: 5})
    assert [row["latent_dim"] for row in rows] == [2, 10, 32]
    assert [row["epochs"] for row in rows] == [3, 4, 5]
    assert rows[1]["bce_change"] == pytest.approx(-0.04 + wiggle.mean())
    assert rows[2]["bce_change"] == pytest.approx(-0.01 - wiggle.mean())
    assert "gain_shrink" not in rows[0] and "gain_shrink" not in rows[1]
    shrink = 0.03 - 2 * wiggle
    assert rows[2]["gain_shrink"] == pytest.approx(shrink.mean())
    assert rows[2]["gain_shrink_se"] == pytest.approx(sd_over_root_n(shrink))
    assert rows[2]["recognised"] == pytest.approx(hits[32].mean())
    assert rows[1]["knn_change"] == pytest.approx(knn[10].mean() - knn[2].mean())


def test_latent_size_rows_of_constant_gains_have_no_spread():
    base = np.linspace(0.1, 0.2, 50)
    evidence = {size: {"bce": base + offset, "recognised": np.ones(50, bool),
                       "knn": np.ones(50, bool)}
                for size, offset in ((4, 0.3), (8, 0.1), (16, 0.05))}
    rows = task1_analyses.latent_size_rows(evidence, dict.fromkeys((4, 8, 16), 1))
    assert rows[2]["gain_shrink"] == pytest.approx(0.2 - 0.05)
    assert rows[2]["gain_shrink_se"] == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# grey_share, denoising_rows
# ---------------------------------------------------------------------------------------------


def test_grey_share_counts_pixels_strictly_between_0_1_and_0_9():
    images = np.zeros((4, 28, 28, 1))
    images[1, :7] = 0.5  # a quarter of the pixels grey
    images[2, :14] = 0.1  # the boundaries are not grey
    images[2, 14:] = 0.9
    images[3] = 0.899  # all grey
    np.testing.assert_allclose(measures.grey_share(images), [0.0, 0.25, 0.0, 1.0])


def test_denoising_rows_of_constructed_images():
    count = 6
    clean = np.zeros((count, 28, 28, 1), np.float32)
    clean[:, 10:18] = 1.0  # a bar of ink, 8 rows of 28 pixels
    noisy, denoised, plain = clean.copy(), clean.copy(), clean.copy()
    noisy[:, :4] = 0.5  # 112 pixels off by 0.5 in every image
    for i in range(count):
        denoised[i, 0, : i + 1] = 0.5  # i + 1 pixels off by 0.5: grey
        plain[i, 0, : 2 * i + 2] = 0.5
    rows = task1_analyses.denoising_rows(clean, noisy, denoised, plain)
    assert [row["images"] for row in rows] == ["noisy inputs", "denoiser",
                                              "clean-trained autoencoder"]
    noisy_mse = np.full(count, 112 * 0.25 / 784)
    denoised_mse = (np.arange(count) + 1) * 0.25 / 784
    plain_mse = 2 * denoised_mse
    assert rows[0]["mse"] == pytest.approx(noisy_mse.mean())
    assert rows[0]["mse_se"] == pytest.approx(0.0, abs=1e-15)
    assert rows[1]["mse"] == pytest.approx(denoised_mse.mean())
    assert rows[1]["mse_se"] == pytest.approx(sd_over_root_n(denoised_mse))
    assert rows[1]["mse_change"] == pytest.approx(denoised_mse.mean() - noisy_mse.mean())
    assert rows[2]["mse_change"] == pytest.approx(plain_mse.mean() - noisy_mse.mean())
    assert rows[1]["mse_vs_plain"] == pytest.approx((denoised_mse - plain_mse).mean())
    assert rows[1]["mse_vs_plain_se"] == pytest.approx(sd_over_root_n(denoised_mse - plain_mse))
    # Grey pixels: none in the clean images, 112 in each noisy one, i + 1 in denoised image i.
    assert rows[0]["grey"] == pytest.approx(112 / 784)
    assert rows[1]["clean_grey"] == 0.0
    assert rows[1]["grey"] == pytest.approx(3.5 / 784)
    assert rows[1]["grey_vs_clean"] == pytest.approx(3.5 / 784)
    assert rows[1]["grey_vs_clean_se"] == pytest.approx(
        sd_over_root_n((np.arange(count) + 1) / 784))


# ---------------------------------------------------------------------------------------------
# random_pairs, path_smoothness
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count, size", [(10, 5), (1000, 40), (3, 1)])
def test_random_pairs_are_distinct_and_use_no_index_twice(count, size):
    pairs = generation.random_pairs(count, size, seed=5)
    assert pairs.shape == (size, 2)
    assert np.all(pairs[:, 0] != pairs[:, 1])
    assert len(np.unique(pairs)) == 2 * size
    assert pairs.min() >= 0 and pairs.max() < count
    np.testing.assert_array_equal(pairs, generation.random_pairs(count, size, seed=5))


def test_random_pairs_rejects_more_pairs_than_items_allow():
    with pytest.raises(ValueError, match="size: expected at most 5 pairs of 11 items, got 6"):
        generation.random_pairs(11, 6)


def even_path(frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    start, end = rng.uniform(size=(2, 28, 28, 1))
    weights = np.linspace(0.0, 1.0, frames)[:, None, None, None]
    return (1 - weights) * start + weights * end


@pytest.mark.parametrize("frames", [2, 5, 10])
def test_path_smoothness_of_an_even_path(frames):
    assert generation.path_smoothness(even_path(frames)) == pytest.approx(1 / (frames - 1))


def test_path_smoothness_of_one_jump_is_one():
    start, end = np.zeros((28, 28, 1)), np.ones((28, 28, 1))
    path = np.stack([start] * 4 + [end] * 6)
    assert generation.path_smoothness(path) == pytest.approx(1.0)


@pytest.mark.parametrize("frames", [3, 10])
def test_path_smoothness_of_a_constant_path_counts_as_even(frames):
    assert generation.path_smoothness(np.full((frames, 28, 28, 1), 0.3)) == pytest.approx(
        1 / (frames - 1))


@pytest.mark.parametrize("scale", [0.01, 0.5, 3.0])
def test_path_smoothness_does_not_depend_on_the_amplitude(scale):
    rng = np.random.default_rng(2)
    path = np.cumsum(rng.uniform(size=(8, 28, 28, 1)), axis=0)
    assert generation.path_smoothness(scale * path) == pytest.approx(generation.path_smoothness(path))


def test_path_smoothness_needs_two_frames():
    with pytest.raises(ValueError, match="frames: expected at least 2 frames"):
        generation.path_smoothness(np.zeros((1, 28, 28, 1)))


# ---------------------------------------------------------------------------------------------
# markdown_table, merge_rows
# ---------------------------------------------------------------------------------------------


def test_markdown_table_doctest():
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(verbose=False)
    (test,) = finder.find(report.markdown_table, "markdown_table", globs={
        "markdown_table": report.markdown_table})
    result = runner.run(test)
    assert result.attempted == 1 and result.failed == 0


def test_markdown_table_with_standard_errors_and_missing_values():
    rows = [{"kl_weight": 0.1, "loss": 148.93, "loss_se": 0.31, "share": 0.973,
             "share_se": 0.0021, "note": "first"},
            {"kl_weight": 5.0, "loss": None, "share": 0.5, "share_se": 0.012},
            {"kl_weight": 1.0, "loss": -0.001, "loss_se": 0.0004, "share": 1.0, "share_se": 0.0,
             "note": "last"}]
    table = report.markdown_table(rows, {"kl_weight": "Weight|g", "loss": "Loss|±.1f",
                                      "share": "Share|±.1%", "note": "Note"})
    lines = table.splitlines()
    assert len(lines) == 5
    assert lines[0] == "| Weight | Loss | Share | Note |"
    assert lines[2] == "| 0.1 | 148.9 ± 0.3 | 97.3% ± 0.2% | first |"
    # A missing key or None prints '–'.
    assert lines[3] == "| 5 | – | 50.0% ± 1.2% | – |"
    # Never '-0.0'; an SE too small for the format keeps one significant digit.
    assert lines[4] == "| 1 | 0.0 ± 0.0004 | 100.0% ± 0.0% | last |"
    # The dashes under each header are as many as the column's widest entry (at least 3).
    cells = [line[2:-2].split(" | ") for line in (lines[0], *lines[2:])]
    widths = [len(part) for part in lines[1][1:-1].split("|")]
    assert widths == [max(3, *(len(row[i]) for row in cells)) for i in range(4)]
    assert widths == [len("Weight"), len("0.0 ± 0.0004"), len("100.0% ± 0.0%"), len("first")]


def test_markdown_table_small_standard_error_of_a_percentage_stays_a_percentage():
    table = report.markdown_table([{"share": 0.5, "share_se": 0.00004}], {"share": "Share|±.1%"})
    assert table.splitlines()[2] == "| 50.0% ± 0.004% |"


@pytest.mark.parametrize("se, spec, text", [(0.003, ".0%", "0.3%"), (0.0004, ".1%", "0.04%")])
def test_standard_error_text_of_a_small_percentage(se, spec, text):
    assert estimates.standard_error_text(se, spec) == text


def test_markdown_table_thousands_and_plain_columns():
    table = report.markdown_table([{"name": "dense", "count": 1234567}],
                               {"name": "Layer", "count": "Parameters|,"})
    assert table.splitlines() == ["| Layer | Parameters |", "|-----|----------|",
                                  "| dense | 1,234,567 |"]


def test_markdown_table_needs_rows():
    with pytest.raises(ValueError, match="rows: expected at least one row"):
        report.markdown_table([], {"a": "A"})


def test_merge_rows_joins_on_the_key_in_the_first_rows_order():
    first = [{"w": 0.1, "a": 1, "shared": "first"}, {"w": 1.0, "a": 2, "shared": "first"}]
    second = [{"w": 1.0, "b": 20, "shared": "second"}, {"w": 0.1, "b": 10, "shared": "second"}]
    assert report.merge_rows(first, second, "w") == [
        {"w": 0.1, "a": 1, "b": 10, "shared": "second"},
        {"w": 1.0, "a": 2, "b": 20, "shared": "second"}]
    assert first[0] == {"w": 0.1, "a": 1, "shared": "first"}  # the inputs stay as they were


def test_merge_rows_rejects_rows_of_other_keys():
    with pytest.raises(ValueError, match=r"second: expected rows for the same ws as first, "
                                         r"got \[0.1, 5.0\]"):
        report.merge_rows([{"w": 0.1}, {"w": 1.0}], [{"w": 0.1}, {"w": 5.0}], "w")


# ---------------------------------------------------------------------------------------------
# title_block, start_run_record
# ---------------------------------------------------------------------------------------------


def test_title_block_of_the_full_profile_has_no_banner_and_prints_the_given_values():
    block = report.title_block("  Group 7 ", "Ada Lovelace (123), Alan Turing (456)", "full")
    assert block.startswith(f"# {report.TITLE}\n")
    assert "Smoke run" not in block
    assert "| **Group** | Group 7 |" in block
    assert "| **Members** | Ada Lovelace (123), Alan Turing (456) |" in block
    assert "not set" not in block


@pytest.mark.parametrize("profile", ["fast", "smoke"])
def test_title_block_of_another_profile_starts_with_the_banner(profile):
    block = report.title_block("7", "Ada", profile)
    assert block.startswith(f"> **Smoke run (profile `{profile}`): not the assignment.**")
    assert block.index("Smoke run") < block.index(f"# {report.TITLE}")


@pytest.mark.parametrize("group, members", [(None, None), ("", "  "), (" ", "")])
def test_title_block_notes_a_missing_group_and_members(group, members):
    block = report.title_block(group, members, "full")
    assert ("| **Group** | **not set** (set GROUP in the parameters cell, or CA4_GROUP in the "
            "environment) |") in block
    assert ("| **Members** | **not set** (set MEMBERS in the parameters cell, or CA4_MEMBERS in "
            "the environment) |") in block


def test_short_commit_keeps_12_digits_of_a_full_hash_and_the_rest():
    full = "0123456789abcdef0123456789abcdef01234567"
    assert report.short_commit(full) == "0123456789ab"
    assert report.short_commit(f"{full} (with uncommitted changes)") == (
        "0123456789ab (with uncommitted changes)")
    assert report.short_commit("unknown (not a git checkout)") == "unknown (not a git checkout)"
    assert report.short_commit("0123abc") == "0123abc"  # not a full hash: as it is


def test_start_run_record_removes_the_last_metrics_and_records_the_provenance():
    metrics = settings.build_dir() / "metrics.json"
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text('{"old": true}')
    before = datetime.now(UTC)
    record = report.start_run_record("FAST", 7)
    assert not metrics.exists()
    assert set(record) == {"commit", "date", "profile", "seed", "versions"}
    assert record["profile"] == "fast" and record["seed"] == 7
    date = datetime.fromisoformat(record["date"])  # ISO 8601 with a UTC offset
    assert date.tzinfo is not None
    assert abs((date - before).total_seconds()) < 60
    assert record["versions"] == {"python": platform.python_version(),
                                  "tensorflow": metadata.version("tensorflow"),
                                  "keras": keras.__version__, "numpy": np.__version__}
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=settings.PROJECT_DIR, capture_output=True,
                          text=True)
    if head.returncode == 0:
        assert record["commit"].split()[0] == head.stdout.strip()
    # Without a file to remove it works too.
    assert report.start_run_record("full", 0)["profile"] == "full"


def test_start_run_record_outside_a_git_checkout(tmp_path, patch_lookup):
    patch_lookup(report.provenance, "PROJECT_DIR", tmp_path)
    assert report.start_run_record("full", 1)["commit"] == "unknown (not a git checkout)"


@pytest.mark.parametrize("profile, seed, message", [
    ("huge", 1, "profile: expected one of"), ("full", -1, "seed: expected a non-negative"),
])
def test_start_run_record_rejects_bad_settings(profile, seed, message):
    with pytest.raises(ValueError, match=message):
        report.start_run_record(profile, seed)


# ---------------------------------------------------------------------------------------------
# check_environment
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def strict_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CA4_ALLOW_OTHER_VERSIONS", raising=False)


def pins(tmp_path: Path, tensorflow: str, keras_version: str) -> Path:
    path = tmp_path / "requirements.txt"
    path.write_text(f"# pins\ntensorflow=={tensorflow}\nkeras=={keras_version}\nnumpy==0.0.1\n")
    return path


def test_check_environment_passes_with_matching_pins(tmp_path, strict_versions):
    assert settings.check_environment(pins(tmp_path, metadata.version("tensorflow"),
                                      metadata.version("keras"))) is None


@pytest.mark.parametrize("package", ["tensorflow", "keras"])
def test_check_environment_names_a_wrong_pin_and_make_lab(tmp_path, strict_versions, package):
    versions = {"tensorflow": metadata.version("tensorflow"), "keras": metadata.version("keras")}
    versions[package] = "0.0.1"
    requirements = pins(tmp_path, versions["tensorflow"], versions["keras"])
    with pytest.raises(ImportError, match=rf"{package} .*needs {package}==0\.0\.1") as error:
        settings.check_environment(requirements)
    assert "make lab" in str(error.value)
    assert "CA4_ALLOW_OTHER_VERSIONS=1" in str(error.value)


def test_check_environment_lets_other_versions_through_when_allowed(tmp_path, monkeypatch):
    monkeypatch.setenv("CA4_ALLOW_OTHER_VERSIONS", "1")
    assert settings.check_environment(pins(tmp_path, "0.0.1", "0.0.1")) is None


def test_check_environment_without_a_requirements_file(tmp_path, strict_versions):
    assert settings.check_environment(tmp_path / "missing.txt") is None


# ---------------------------------------------------------------------------------------------
# show_figure
# ---------------------------------------------------------------------------------------------


def test_show_figure_saves_a_png_under_the_build_folder_and_closes_the_figure():
    figure, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    number = figure.number
    path = settings.build_dir() / "figures" / "task1_loss.png"
    path.unlink(missing_ok=True)
    figures.show_figure(figure, "task1_loss")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert not plt.fignum_exists(number)


def test_show_figure_shows_the_saved_png_cropped_like_the_inline_backend(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    with matplotlib.rc_context(figures.REPORT_STYLE):
        figure, axis = plt.subplots(figsize=(4, 3))
        axis.plot([0, 1], [1, 0])
        axis.set_title("a title")
        cropped = io.BytesIO()
        # What matplotlib-inline shows for a figure: print_figure with bbox_inches="tight".
        figure.savefig(cropped, format="png", bbox_inches="tight")
        figures.show_figure(figure, "task1_pca", latent_dim=10, test_images=10000)
    image, caption = shown
    assert caption.data == ("**Figure 3.** The 10-number codes of the 10,000 test images "
                            "projected on their first two principal components, coloured by "
                            "digit.")
    saved = (settings.build_dir() / "figures" / "task1_pca.png").read_bytes()
    assert image.data == saved
    assert PIL.Image.open(io.BytesIO(saved)).size == PIL.Image.open(cropped).size
    # Cropped: narrower than the uncropped 4 x 3 in canvas at the report's resolution.
    assert PIL.Image.open(io.BytesIO(saved)).size[0] < 4 * figures.REPORT_STYLE["figure.dpi"]


@pytest.mark.parametrize("name", ["Task1", "task-1", "../escape", "a b", "", "figure.png",
                                  "task1_pcaa"])
def test_show_figure_refuses_a_figure_the_report_does_not_declare(name):
    figure, _ = plt.subplots()
    with pytest.raises(ValueError, match="name: expected one of the report's figures"):
        figures.show_figure(figure, name)
    assert not (settings.build_dir() / "figures" / f"{name}.png").exists()


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

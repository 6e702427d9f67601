"""Generation and interpolation (ca4lib.generation): judging generated digits, sampling a
fitted Gaussian, random pairs, straight paths between codes, their smoothness and the
interpolation rows, on constructed histograms, frames, decoders and classifiers whose answer
is known (a classifier that reads the lit pixel row, one that always reads 3)."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from test_models import uniform_images

import ca4_helpers as ca4
from ca4lib import generation, measures

# ---------------------------------------------------------------------------------------------
# Judging generated digits: normalised_entropy, generation_row
# ---------------------------------------------------------------------------------------------


def test_normalised_entropy_of_known_histograms():
    assert generation.normalised_entropy([7] * 10) == pytest.approx(1.0)
    assert generation.normalised_entropy([0, 0, 0, 12, 0, 0, 0, 0, 0, 0]) == pytest.approx(0.0, abs=1e-12)
    two_bins = [0, 5, 0, 0, 0, 0, 0, 5, 0, 0]
    assert generation.normalised_entropy(two_bins) == pytest.approx(math.log(2) / math.log(10))
    # Only the shares matter, and not the order of the bins.
    assert generation.normalised_entropy([1, 3]) == pytest.approx(generation.normalised_entropy([30, 10]))


def test_generation_row_of_ten_samples_per_digit():
    digits = np.repeat(np.arange(10), 10)
    confidences = np.full(100, 0.5)
    confidences[:36] = 0.99
    confidences[36] = measures.CONFIDENCE  # reaching the threshold counts as confident
    confidences[37] = np.nextafter(measures.CONFIDENCE, 0.0)  # just below does not
    row = generation.generation_row("ten of each", digits, confidences)
    assert row["model"] == "ten of each"
    assert row["samples"] == row["n"] == 100
    assert row["confident_share"] == pytest.approx(0.37)
    assert row["digit_entropy"] == pytest.approx(1.0)
    assert row["least_digit_share"] == pytest.approx(0.1)
    assert row["digit_counts"] == [10] * 10


def test_generation_row_of_a_single_digit_and_of_two_digits():
    one = generation.generation_row("fours", np.full(50, 4), np.full(50, 0.95))
    assert one["digit_entropy"] == pytest.approx(0.0, abs=1e-12)
    assert one["least_digit_share"] == 0.0
    assert one["confident_share"] == 1.0
    assert one["digit_counts"] == [0, 0, 0, 0, 50, 0, 0, 0, 0, 0]
    # The same digit in every bootstrap replicate: no spread.
    assert one["digit_entropy_se"] == 0.0 and one["least_digit_share_se"] == 0.0
    two = generation.generation_row("ones and sevens", np.array([1, 7] * 20), np.zeros(40))
    assert two["digit_entropy"] == pytest.approx(math.log(2) / math.log(10))
    assert two["least_digit_share"] == 0.0
    assert two["confident_share"] == 0.0
    assert two["confident_share_se"] > 0  # Agresti-Coull: a share of 0 is not certain


def test_generation_row_of_an_uneven_set_of_digits():
    counts = np.array([30, 20, 10, 10, 10, 5, 5, 5, 3, 2])
    digits = np.repeat(np.arange(10), counts)
    confidences = np.where(np.arange(100) % 4 == 0, 0.5, 0.97)  # 25 unconfident
    row = generation.generation_row("uneven", digits, confidences, seed=1)
    shares = counts / 100
    assert row["samples"] == row["n"] == 100
    assert row["digit_counts"] == counts.tolist()
    assert row["confident_share"] == 0.75
    assert row["confident_share_se"] == pytest.approx(math.sqrt(77 / 104 * 27 / 104 / 104))
    assert row["digit_entropy"] == pytest.approx(-(shares * np.log(shares)).sum() / math.log(10))
    assert row["least_digit_share"] == pytest.approx(0.02)
    assert 0 < row["digit_entropy_se"] < 0.1 and 0 < row["least_digit_share_se"] < 0.05


def test_generation_row_of_a_digit_that_is_never_read():
    digits = np.repeat(np.arange(9), 10)  # no 9
    row = generation.generation_row("no nines", digits, np.ones(90))
    assert row["least_digit_share"] == 0.0
    assert row["digit_entropy"] == pytest.approx(math.log(9) / math.log(10))


@pytest.mark.parametrize("digits, confidences, message", [
    (np.array([], int), np.array([]), "digits: expected at least one classified image"),
    (np.array([1, 2]), np.array([0.5]), r"confidences: expected one per digit, shape \(2,\)"),
    (np.array([1, 10]), np.array([0.5, 0.5]), "digits: expected digits 0-9"),
])
def test_generation_row_rejects_bad_input(digits, confidences, message):
    with pytest.raises(ValueError, match=message):
        generation.generation_row("bad", digits, confidences)


# ---------------------------------------------------------------------------------------------
# Sampling and interpolating latent codes
# ---------------------------------------------------------------------------------------------


def test_sample_fitted_gaussian_reproduces_mean_and_covariance():
    rng = np.random.default_rng(0)
    mean = np.array([1.0, -2.0])
    covariance = np.array([[2.0, 1.2], [1.2, 1.0]])
    codes = rng.standard_normal((5000, 2)) @ np.linalg.cholesky(covariance).T + mean
    samples = generation.sample_fitted_gaussian(codes, 20000, seed=5)
    assert samples.shape == (20000, 2)
    np.testing.assert_allclose(samples.mean(axis=0), mean, atol=0.1)
    np.testing.assert_allclose(np.cov(samples, rowvar=False), covariance, atol=0.12)
    np.testing.assert_array_equal(samples, generation.sample_fitted_gaussian(codes, 20000, seed=5))


def test_interpolate_codes_runs_evenly_along_the_segment():
    start, end = np.array([1.0, -2.0, 0.5]), np.array([-3.0, 4.0, 2.5])
    frames = 5
    path = generation.interpolate_codes(start, end, frames)
    assert path.shape == (frames, 3)
    np.testing.assert_array_equal(path[0], start)
    np.testing.assert_array_equal(path[-1], end)
    length = np.linalg.norm(end - start)
    from_start = np.linalg.norm(path - start, axis=1)
    to_end = np.linalg.norm(end - path, axis=1)
    # On the segment: the two distances add up to its length; evenly spaced along it.
    np.testing.assert_allclose(from_start + to_end, length, rtol=1e-12)
    np.testing.assert_allclose(from_start, np.arange(frames) / (frames - 1) * length, rtol=1e-12,
                               atol=1e-12)
    steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
    np.testing.assert_allclose(steps, length / (frames - 1), rtol=1e-12)


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


# ---------------------------------------------------------------------------------------------
# path_smoothness
# ---------------------------------------------------------------------------------------------


def test_path_smoothness_of_constructed_frames():
    frames = np.zeros((5, 28, 28, 1), np.float32)
    frames[1, :7] = 1.0  # a quarter of the pixels change by 1: step 0.25
    frames[2] = frames[1]  # no change: step 0
    frames[3] = 1.0  # the other three quarters change by 1: step 0.75, the largest
    frames[4] = frames[3]
    frames[4, 14:] = 0.5  # half of the pixels change by 0.5: step 0.25
    # Largest step 0.75 of a total change of 0.25 + 0 + 0.75 + 0.25 = 1.25.
    assert generation.path_smoothness(frames) == pytest.approx(0.75 / 1.25)


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
# decode_paths, interpolation_rows
# ---------------------------------------------------------------------------------------------


def test_decode_paths_run_from_one_mean_code_to_the_other():
    ca4.set_seed(0)
    model = ca4.build_vae(2, kl_weight=1.0, seed=0)
    images = uniform_images(4, seed=3)
    pairs = np.array([[0, 3], [2, 1]])
    paths = generation.decode_paths(model, images, pairs, frames=5)
    assert paths.shape == (2, 5, 28, 28, 1)
    z_mean = np.asarray(model.encoder(images, training=False)[0])

    def decode(code):
        return np.asarray(model.decoder(np.asarray([code], np.float32)))[0]

    for path, (a, b) in zip(paths, pairs):
        np.testing.assert_allclose(path[0], decode(z_mean[a]), atol=1e-5)
        np.testing.assert_allclose(path[-1], decode(z_mean[b]), atol=1e-5)
        np.testing.assert_allclose(path[2], decode((z_mean[a] + z_mean[b]) / 2), atol=1e-5)
    with pytest.raises(ValueError, match=r"pairs: expected an array of index pairs \(P, 2\)"):
        generation.decode_paths(model, images, np.array([0, 1, 2]))


def stamp_classifier() -> keras.Model:
    """Reads digit d where pixel row d is lit: Flatten -> Dense(10, softmax), weight 1 from each
    pixel of row d to digit d. One lit row gives that digit with probability ~1; two lit rows
    give each 0.5; a blank image gives 0.1 for every digit."""
    pixels = keras.Input((28, 28, 1))
    dense = keras.layers.Dense(10, activation="softmax")
    model = keras.Model(pixels, dense(keras.layers.Flatten()(pixels)))
    kernel = np.zeros((784, 10), np.float32)
    for digit in range(10):
        kernel[28 * digit:28 * (digit + 1), digit] = 1.0
    dense.set_weights([kernel, np.zeros(10, np.float32)])
    return model


def constant_classifier(digit: int) -> keras.Model:
    """Always reads `digit` with probability ~1: zero kernel, a large bias."""
    pixels = keras.Input((28, 28, 1))
    dense = keras.layers.Dense(10, activation="softmax")
    model = keras.Model(pixels, dense(keras.layers.Flatten()(pixels)))
    bias = np.zeros(10, np.float32)
    bias[digit] = 30.0
    dense.set_weights([np.zeros((784, 10), np.float32), bias])
    return model


def frame(*rows: int) -> np.ndarray:
    image = np.zeros((28, 28, 1), np.float32)
    for row in rows:
        image[row] = 1.0
    return image


def test_interpolation_rows_unclear_share_of_constructed_frames():
    # Paths of 6 frames between digit 2 and digit 7; the 4 interior frames are read as:
    # path 0: 2, 7, 7, 2 (all clear); path 1: 2, 5 (another digit), 2+7 (probability 0.5
    # each), blank (0.1): 3 of 4 unclear.
    clear = [frame(2), frame(2), frame(7), frame(7), frame(2), frame(7)]
    mixed = [frame(2), frame(2), frame(5), frame(2, 7), frame(), frame(7)]
    paths = {"baseline": np.stack([np.stack(clear), np.stack(mixed)]),
             "vae": np.stack([np.stack(mixed), np.stack(mixed)])}
    ends = np.array([[2, 7], [7, 2]])
    rows = generation.interpolation_rows(paths, ends, stamp_classifier())
    assert [row["model"] for row in rows] == ["baseline", "vae"]
    assert [row["frames"] for row in rows] == [6, 6]
    assert rows[0]["unclear"] == pytest.approx((0 + 0.75) / 2)
    assert rows[1]["unclear"] == pytest.approx(0.75)
    assert rows[1]["unclear_change"] == pytest.approx(0.75 / 2)
    smoothness = {name: [generation.path_smoothness(p) for p in path] for name, path in paths.items()}
    assert rows[0]["smoothness"] == pytest.approx(np.mean(smoothness["baseline"]))
    assert rows[1]["smoothness_change"] == pytest.approx(
        np.mean(np.subtract(smoothness["vae"], smoothness["baseline"])))
    assert rows[0]["n"] == 2


def test_interpolation_rows_with_a_classifier_that_always_reads_3():
    rng = np.random.default_rng(0)
    frames = rng.uniform(size=(4, 10, 28, 28, 1)).astype(np.float32)
    ends = np.array([[3, 5], [1, 3], [3, 3], [0, 9]])
    rows = generation.interpolation_rows({"model": frames, "other": frames[::-1].copy()}, ends,
                                  constant_classifier(3))
    # Unclear per path: 0 where an end is a 3, 1 otherwise; the first model's mean is 1/4.
    assert rows[0]["unclear"] == pytest.approx(0.25)
    assert rows[0]["unclear_se"] == pytest.approx(0.25)  # sd of (0, 0, 0, 1) is 0.5, over 2
    assert rows[1]["unclear"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match=r"ends: expected the two digits of each of 4 paths"):
        generation.interpolation_rows({"model": frames}, ends[:3], constant_classifier(3))

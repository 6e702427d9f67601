"""Evaluation, reporting and run-progress helpers on constructed cases whose answer is known."""

from __future__ import annotations

import json
import math
import os
import re

import keras
import nbformat
import numpy as np
import pytest

import ca4_helpers as ca4
from ca4lib import (
    generation,
    latent_space,
    measures,
    progress,
    report,
    settings,
    storage,
    task1_analyses,
    training_log,
    vae_analyses,
    wording,
)
from tools import build

# ---------------------------------------------------------------------------------------------
# k-nearest-neighbour accuracy of latent codes
# ---------------------------------------------------------------------------------------------


def clusters(per_digit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ten tight clusters of 2-D codes, digit d around (10 d, -5 d): far apart from each other."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_digit)
    centres = np.stack([10.0 * labels, -5.0 * labels], axis=1)
    return centres + rng.normal(scale=0.1, size=centres.shape), labels


def test_knn_correct_of_separated_clusters_is_all_true():
    train_codes, train_labels = clusters(20, seed=0)
    test_codes, test_labels = clusters(10, seed=1)
    correct = measures.knn_correct(train_codes, train_labels, test_codes, test_labels)
    assert correct.shape == (100,) and correct.dtype == bool
    assert correct.all()


def test_knn_correct_of_labels_unrelated_to_the_codes_is_near_chance():
    rng = np.random.default_rng(0)
    train_codes, test_codes = rng.uniform(size=(2000, 2)), rng.uniform(size=(1000, 2))
    train_labels, test_labels = rng.integers(0, 10, 2000), rng.integers(0, 10, 1000)
    accuracy = measures.knn_correct(train_codes, train_labels, test_codes, test_labels).mean()
    assert 0.0 <= accuracy < 0.3  # chance is 0.1 with ten classes


def test_knn_correct_flips_exactly_the_test_point_beside_a_mislabelled_isolated_neighbour():
    train_codes, train_labels = clusters(20, seed=0)
    test_codes, test_labels = clusters(10, seed=1)
    # One training code far from every cluster, and one test code right beside it (digit 3).
    train_codes = np.vstack([train_codes, [[500.0, 500.0]]])
    test_codes = np.vstack([test_codes, [[500.1, 500.0]]])
    test_labels = np.append(test_labels, 3)
    right = measures.knn_correct(train_codes, np.append(train_labels, 3), test_codes, test_labels,
                            neighbours=1)
    wrong = measures.knn_correct(train_codes, np.append(train_labels, 7), test_codes, test_labels,
                            neighbours=1)
    assert right.all()
    np.testing.assert_array_equal(np.flatnonzero(~wrong), [len(test_labels) - 1])


def test_knn_correct_rejects_more_neighbours_than_training_codes():
    train_codes, train_labels = clusters(1, seed=0)
    with pytest.raises(ValueError, match="neighbours: expected at most the 10 training codes"):
        measures.knn_correct(train_codes, train_labels, train_codes, train_labels, neighbours=11)


# ---------------------------------------------------------------------------------------------
# Judging generated digits
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


# ---------------------------------------------------------------------------------------------
# Sampling and interpolating latent codes
# ---------------------------------------------------------------------------------------------


def test_sample_prior_is_standard_normal_and_reproducible():
    codes = vae_analyses.sample_prior(20000, seed=3, latent_dim=3)
    assert codes.shape == (20000, 3)
    np.testing.assert_allclose(codes.mean(axis=0), 0.0, atol=0.05)
    np.testing.assert_allclose(np.cov(codes, rowvar=False), np.eye(3), atol=0.05)
    np.testing.assert_array_equal(vae_analyses.sample_prior(50, seed=3, latent_dim=3),
                                  vae_analyses.sample_prior(50, seed=3, latent_dim=3))
    assert not np.allclose(vae_analyses.sample_prior(50, seed=3), vae_analyses.sample_prior(50, seed=4))


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


def test_path_smoothness_of_constructed_frames():
    frames = np.zeros((5, 28, 28, 1), np.float32)
    frames[1, :7] = 1.0  # a quarter of the pixels change by 1: step 0.25
    frames[2] = frames[1]  # no change: step 0
    frames[3] = 1.0  # the other three quarters change by 1: step 0.75, the largest
    frames[4] = frames[3]
    frames[4, 14:] = 0.5  # half of the pixels change by 0.5: step 0.25
    # Largest step 0.75 of a total change of 0.25 + 0 + 0.75 + 0.25 = 1.25.
    assert generation.path_smoothness(frames) == pytest.approx(0.75 / 1.25)


# ---------------------------------------------------------------------------------------------
# KL per latent dimension
# ---------------------------------------------------------------------------------------------


def closed_form_kl(z_mean: np.ndarray, z_log_var: np.ndarray) -> np.ndarray:
    """KL(N(m, exp(lv)) || N(0, 1)) = 0.5 (exp(lv) + m^2 - 1 - lv), in float64."""
    z_mean, z_log_var = np.asarray(z_mean, np.float64), np.asarray(z_log_var, np.float64)
    return 0.5 * (np.exp(z_log_var) + z_mean**2 - 1.0 - z_log_var)


def test_kl_per_dimension_is_zero_for_the_prior_and_matches_the_closed_form():
    z_mean = np.array([[1.5, 0.0], [-0.3, 0.0], [0.0, 0.0]], np.float32)
    z_log_var = np.array([[0.2, 0.0], [-1.0, 0.0], [0.7, 0.0]], np.float32)
    kl = np.asarray(ca4.kl_per_dimension(z_mean, z_log_var))
    assert kl.shape == (3, 2)
    np.testing.assert_array_equal(kl[:, 1], 0.0)
    np.testing.assert_allclose(kl[:, 0], closed_form_kl(z_mean[:, 0], z_log_var[:, 0]), rtol=1e-5)
    assert np.all(kl[:, 0] > 0)


@pytest.fixture(scope="module")
def vae_with_collapsed_dimension():
    """An untrained 2-D VAE whose dimension 1 is exactly the prior; dimension 0 is shifted."""
    ca4.set_seed(0)
    model = ca4.build_vae(2, kl_weight=1.0, seed=0)
    for name in ("z_mean", "z_log_var"):
        layer = model.encoder.get_layer(name)
        kernel, bias = (np.array(w) for w in layer.get_weights())
        kernel[:, 1] = 0.0
        bias[1] = 0.0
        if name == "z_mean":
            bias[0] = 1.0  # mean >= about 1 in dimension 0: KL about 0.5, clearly active
        layer.set_weights([kernel, bias])
    images = np.random.default_rng(0).uniform(size=(16, 28, 28, 1)).astype(np.float32)
    return model, images


def test_vae_test_terms_of_a_dimension_that_is_the_prior(vae_with_collapsed_dimension):
    model, images = vae_with_collapsed_dimension
    terms = ca4.vae_test_terms(model, images, seed=0)
    z_mean, z_log_var = (np.asarray(t, np.float64) for t in model.encoder(images, training=False))
    np.testing.assert_array_equal(z_mean[:, 1], 0.0)  # the construction holds
    kl = terms["kl_per_dimension"]
    assert kl.shape == (16, 2)
    np.testing.assert_allclose(kl[:, 1], 0.0, atol=1e-7)
    np.testing.assert_allclose(kl[:, 0], closed_form_kl(z_mean[:, 0], z_log_var[:, 0]),
                               rtol=1e-4)
    np.testing.assert_allclose(terms["kl"], kl.sum(axis=1), rtol=1e-12)
    assert np.all(kl[:, 0] > 10 * vae_analyses.PRIOR_LIKE_NATS)


def test_vae_sweep_rows_count_the_prior_dimension_as_inactive(vae_with_collapsed_dimension):
    model, images = vae_with_collapsed_dimension
    terms = ca4.vae_test_terms(model, images, seed=0)
    z_mean = np.asarray(model.encoder(images, training=False)[0], np.float64)
    rows = vae_analyses.vae_sweep_rows({0.5: terms, 5.0: terms}, {0.5: 2, 5.0: 3})
    assert [row["kl_weight"] for row in rows] == [0.5, 5.0]
    assert [row["epochs"] for row in rows] == [2, 3]
    reconstruction, kl = terms["reconstruction"].mean(), terms["kl"].mean()
    for row, weight in zip(rows, (0.5, 5.0)):
        # The negative ELBO weighs the KL by 1 whatever the training weight.
        assert row["neg_elbo"] == pytest.approx(reconstruction + kl, rel=1e-12)
        assert row["weighted_loss"] == pytest.approx(reconstruction + weight * kl, rel=1e-12)
        assert row["prior_like_share"] == [0.0, 1.0]
        assert row["mean_variance"][1] == 0.0
        assert row["active_dimensions"] == int(z_mean[:, 0].var() > vae_analyses.ACTIVE_VARIANCE)
    json.dumps(rows, allow_nan=False)  # plain Python numbers, ready for metrics.json
    (table,) = table_records(report.markdown_table(report.dimension_rows(rows),
                                                   report.DIMENSION_COLUMNS))
    assert [row["KL weight"] for row in table] == ["0.5", "5"]


# ---------------------------------------------------------------------------------------------
# Latent grids
# ---------------------------------------------------------------------------------------------


def test_latent_grid_coverage_of_constructed_codes():
    centres = np.array([(x, y) for x in (-1.0, 0.0, 1.0) for y in (-1.0, 0.0, 1.0)])
    # 3 x 3 cells over [-1.5, 1.5]^2 with edges at -1.5, -0.5, 0.5, 1.5: one code per cell.
    assert latent_space.latent_grid_coverage(centres, points_per_side=3, extent=1.5) == 1.0
    one_cell = np.random.default_rng(0).uniform(0.6, 1.4, size=(50, 2))
    assert latent_space.latent_grid_coverage(one_cell, 3, 1.5) == pytest.approx(1 / 9)
    outside = np.array([[2.0, 2.0], [-5.0, 0.0], [0.0, 1.6]])
    assert latent_space.latent_grid_coverage(outside, 3, 1.5) == 0.0
    diagonal = np.array([[-1.0, -1.0], [0.0, 0.0], [0.1, 0.2], [1.0, 1.0], [9.0, 9.0]])
    assert latent_space.latent_grid_coverage(diagonal, 3, 1.5) == pytest.approx(3 / 9)


def test_latent_grid_cells_count_as_numpy_histogram2d_does():
    rng = np.random.default_rng(1)
    edges = np.linspace(-2.0, 2.0, 16)
    # Random points inside and outside, and points exactly on cell edges and grid corners.
    points = np.concatenate([rng.uniform(-2.5, 2.5, size=(500, 2)),
                             rng.choice(edges, size=(200, 2)), [[2.0, 2.0], [-2.0, 2.0]]])
    counts, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=[edges, edges])
    cells = latent_space.latent_grid_cells(points, points_per_side=15, extent=2.0)
    np.testing.assert_array_equal(
        np.bincount(cells[cells >= 0], minlength=15 * 15).reshape(15, 15), counts)
    assert latent_space.covered_share(cells, 15) == pytest.approx(np.mean(counts > 0))

def grid_of_constant_tiles(values: list[list[float]]) -> np.ndarray:
    return np.kron(np.array(values, dtype=np.float64), np.ones((28, 28)))


def neighbour_summary(grid: np.ndarray) -> tuple[float, float, list[float]]:
    changes = latent_space.grid_neighbour_changes(grid)
    along_z0, along_z1 = changes["along"]
    np.testing.assert_array_equal(np.sort(changes["all"]),
                                  np.sort(np.concatenate([along_z0, along_z1])))
    return (float(changes["all"].mean()), float(changes["all"].max()),
            [float(along_z0.mean()), float(along_z1.mean())])


def test_grid_neighbour_changes_of_constant_tiles():
    # Left-right neighbours differ by 0.1 (6 pairs), top-bottom ones by 0.3 (6 pairs).
    grid = grid_of_constant_tiles([[0.0, 0.1, 0.2], [0.3, 0.4, 0.5], [0.6, 0.7, 0.8]])
    assert len(latent_space.grid_neighbour_changes(grid)["all"]) == 12
    mean, largest, along = neighbour_summary(grid)
    assert mean == pytest.approx(0.2)
    assert largest == pytest.approx(0.3)
    # A step along z[0] is a step to the right (0.1), along z[1] a step down (0.3).
    assert along == pytest.approx([0.1, 0.3])
    # One bright tile among four: two of the four neighbour pairs change by 1.
    mean, largest, along = neighbour_summary(grid_of_constant_tiles([[0.0, 1.0], [0.0, 0.0]]))
    assert (mean, largest) == pytest.approx((0.5, 1.0))
    assert along == pytest.approx([0.5, 0.5])
    # Rows that repeat (z[1] collapsed): nothing changes from one row to the next.
    _, _, along = neighbour_summary(grid_of_constant_tiles([[0.0, 0.5, 1.0]] * 3))
    assert along == pytest.approx([0.5, 0.0])
    assert neighbour_summary(grid_of_constant_tiles([[0.4] * 4] * 4)) == (0.0, 0.0, [0.0, 0.0])


@pytest.mark.parametrize("shape", [(28, 28), (56, 84), (50, 50), (56,)])
def test_grid_neighbour_changes_rejects_a_grid_that_is_not_square_tiles(shape):
    with pytest.raises(ValueError, match=r"grid_image: expected a \(28n, 28n\) image"):
        latent_space.grid_neighbour_changes(np.zeros(shape))


def test_joined_formats_values_for_a_sentence():
    assert wording.joined([0.1, 1.0, 5.0], "g") == "0.1 / 1 / 5"
    assert wording.joined([0.12345, 2], ".2f", ", ") == "0.12, 2.00"
    assert wording.joined([]) == ""


@pytest.mark.parametrize("channel_axis", [False, True])
def test_tile_images_places_image_k_at_row_k_div_columns(channel_axis):
    images = np.random.default_rng(0).uniform(size=(6, 28, 28))
    sheet = latent_space.tile_images(images[..., np.newaxis] if channel_axis else images, 3)
    assert sheet.shape == (2 * 28, 3 * 28)
    for k in range(6):
        row, column = k // 3, k % 3
        tile = sheet[28 * row:28 * (row + 1), 28 * column:28 * (column + 1)]
        np.testing.assert_array_equal(tile, images[k])


def test_latent_grid_points_cover_the_bounds_from_the_top_left():
    points = latent_space.latent_grid_points(4, bounds=((-1.0, 3.0), (0.5, 2.0)))
    assert points.shape == (16, 2)
    np.testing.assert_array_equal(points[0], [-1.0, 2.0])  # top left: low z[0], high z[1]
    np.testing.assert_array_equal(points[3], [3.0, 2.0])  # end of the first row
    np.testing.assert_array_equal(points[-1], [3.0, 0.5])  # bottom right
    rows = points.reshape(4, 4, 2)
    for row in range(4):
        np.testing.assert_allclose(rows[row, :, 0], [-1.0, 1 / 3, 5 / 3, 3.0], rtol=1e-6)
        np.testing.assert_array_equal(rows[row, :, 1], 2.0 - 0.5 * row)
    assert (points[:, 0].min(), points[:, 0].max()) == (-1.0, 3.0)
    assert (points[:, 1].min(), points[:, 1].max()) == (0.5, 2.0)


def test_latent_grid_points_default_to_the_square_of_the_extent():
    points = latent_space.latent_grid_points(5, extent=2.0)
    np.testing.assert_array_equal(points[:5, 0], [-2, -1, 0, 1, 2])
    np.testing.assert_array_equal(points[::5, 1], [2, 1, 0, -1, -2])


def test_latent_grid_points_at_gaussian_quantiles():
    points = latent_space.latent_grid_points(3, spacing="gaussian")
    # The 5 %, 50 % and 95 % quantiles of N(0, 1): -1.6449, 0, 1.6449.
    np.testing.assert_allclose(points[:3, 0], [-1.644854, 0.0, 1.644854], atol=1e-5)
    np.testing.assert_allclose(points[::3, 1], [1.644854, 0.0, -1.644854], atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Dead ReLU units
# ---------------------------------------------------------------------------------------------


def relu_unit_count(encoder: keras.Model) -> int:
    """Channels of the encoder's ReLU layers, read from the layer configurations."""
    count = 0
    for layer in encoder.layers:
        config = layer.get_config()
        if config.get("activation") == "relu":
            count += config.get("filters") or config["units"]
    return count


def test_dead_unit_share_counts_channels_that_stay_zero():
    ca4.set_seed(0)
    encoder = ca4.build_autoencoder_encoder(2)
    first, second = [layer for layer in encoder.layers if isinstance(layer, keras.layers.Conv2D)]
    (dense,) = [layer for layer in encoder.layers
                if isinstance(layer, keras.layers.Dense) and layer.get_config()["activation"] == "relu"]
    # First conv: zero kernel; bias -1 in channels 0-7 (dead), +0.5 in the others (always on).
    kernel, bias = (np.array(w) for w in first.get_weights())
    bias[:] = 0.5
    bias[:8] = -1.0
    first.set_weights([np.zeros_like(kernel), bias])
    # The layers after it: zero kernel, bias +1, so that every one of their units is on.
    for layer in (second, dense):
        kernel, bias = layer.get_weights()
        layer.set_weights([np.zeros_like(kernel), np.ones_like(bias)])
    images = np.random.default_rng(0).uniform(size=(8, 28, 28, 1)).astype(np.float32)
    first_output = np.asarray(keras.Model(encoder.input, first.output)(images))
    assert np.all(first_output[..., :8] == 0) and np.all(first_output[..., 8:] > 0)
    assert measures.dead_unit_share(encoder, images) == pytest.approx(8 / relu_unit_count(encoder))


def test_dead_unit_share_when_the_first_layer_is_dead():
    ca4.set_seed(0)
    encoder = ca4.build_autoencoder_encoder(2)
    layers = [layer for layer in encoder.layers if layer.get_config().get("activation") == "relu"]
    kernel, bias = layers[0].get_weights()
    layers[0].set_weights([np.zeros_like(kernel), np.full_like(bias, -1.0)])
    for layer in layers[1:]:  # zero input and zero bias after a dead layer: nothing turns on
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel, np.zeros_like(bias)])
    images = np.random.default_rng(1).uniform(size=(8, 28, 28, 1)).astype(np.float32)
    assert measures.dead_unit_share(encoder, images) == 1.0


def test_dead_unit_share_of_an_untrained_encoder(mnist_small):
    ca4.set_seed(0)
    share = measures.dead_unit_share(ca4.build_autoencoder_encoder(10),
                                mnist_small["validation_images"][:64])
    assert 0.0 <= share < 1.0


# ---------------------------------------------------------------------------------------------
# metrics.json
# ---------------------------------------------------------------------------------------------


def refuse_constant(name: str):
    raise AssertionError(f"not strict JSON: {name}")


def test_write_json_atomic_names_the_key_path_of_a_nan(tmp_path):
    path = tmp_path / "metrics.json"
    data = {"autoencoder": {"val_bce": 0.1},
            "vae_sweep": [{"kl_weight": 1.0, "val_loss": float("nan")}]}
    with pytest.raises(ValueError, match=r"metrics\['vae_sweep'\]\[0\]\['val_loss'\]"):
        storage.write_json_atomic(path, data)
    assert not path.exists()
    nested = {"runs": {"a": [1.0, np.float64("-inf")], "b": (2.0, float("inf"))}}
    with pytest.raises(ValueError) as error:
        storage.write_json_atomic(path, nested)
    assert "metrics['runs']['a'][1]" in str(error.value)
    assert "metrics['runs']['b'][1]" in str(error.value)
    assert os.listdir(tmp_path) == []  # no file, and no temporary file left behind


def test_write_json_atomic_writes_strict_json(tmp_path):
    path = tmp_path / "out" / "metrics.json"
    first = {"old": 1}
    data = {"vae_sweep": [{"kl_weight": 0.1, "val_kl_per_dimension": [1.5, 0.002]}],
            "generation": {"samples": 1000, "name": "VAE KL weight 1", "note": None, "ok": True}}
    storage.write_json_atomic(path, first)
    assert storage.write_json_atomic(path, data) == path
    text = path.read_text()
    assert json.loads(text, parse_constant=refuse_constant) == data
    assert sorted(os.listdir(path.parent)) == ["metrics.json"]


# ---------------------------------------------------------------------------------------------
# Report tables of the VAE analyses
# ---------------------------------------------------------------------------------------------


def table_records(text: str) -> list[list[dict[str, str]]]:
    """Each Markdown table in `text` (tables apart by a blank line) as rows keyed by header."""
    tables = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        assert re.fullmatch(r"\|(-{3,}\|)+", lines[1]), block  # the dashes under the headers
        header, *body = ([cell.strip() for cell in line[1:-1].split(" | ")]
                         for line in (lines[0], *lines[2:]))
        assert all(len(cells) == len(header) for cells in body), block
        tables.append([dict(zip(header, cells)) for cells in body])
    return tables


def test_dimension_table_of_constructed_rows():
    rows = [{"kl_weight": 0.1, "reconstruction": 141.04, "reconstruction_se": 0.31, "kl": 12.004,
             "kl_se": 0.052, "neg_elbo": 153.04, "neg_elbo_se": 0.3,
             "mean_code_reconstruction": 135.0, "mean_code_reconstruction_se": 0.29,
             "kl_per_dimension": [6.0, 6.004], "mean_variance": [1.0, 0.5],
             "active_dimensions": 2, "aggregate_variance": [1.2, 0.9]},
            {"kl_weight": 5.0, "reconstruction": 170.0, "reconstruction_se": 0.3, "kl": 2.0,
             "kl_se": 0.02, "neg_elbo": 172.0, "neg_elbo_se": 0.3,
             "mean_code_reconstruction": 165.0, "mean_code_reconstruction_se": 0.3,
             "kl_per_dimension": [1.997, 0.003], "mean_variance": [0.9, 0.0042],
             "active_dimensions": 1, "aggregate_variance": [0.9, 0.104]}]
    (dimensions,) = table_records(report.markdown_table(report.dimension_rows(rows),
                                                        report.DIMENSION_COLUMNS))
    assert [row["KL weight"] for row in dimensions] == ["0.1", "5"]
    assert [row["KL per dimension"] for row in dimensions] == ["6.00 / 6.00", "2.00 / 0.00"]
    assert [row["Active"] for row in dimensions] == ["2", "1"]
    assert "0.9 / 0.0042" in [value for row in dimensions for value in row.values()]


def test_latent_space_table_leaves_the_prior_rows_grid_columns_empty():
    rows = [{"model": "prior N(0, I)", "kl_weight": None, "coverage": 0.95, "coverage_se": 0.012},
            {"model": "KL weight 5", "active_dimensions": 1, "coverage": 0.754,
             "coverage_se": 0.021, "active_coverage": 0.4, "active_coverage_se": 0.01,
             "prior_active_coverage": 1.0, "prior_active_coverage_se": 0.001,
             "own_neighbour_change": 0.0201, "own_neighbour_change_se": 0.0015,
             "own_active_neighbour_change": 0.0401, "own_active_neighbour_change_se": 0.0015,
             "knn": 0.8123, "knn_se": 0.0039}]
    (table,) = table_records(report.markdown_table(rows, report.LATENT_SPACE_COLUMNS))
    assert table == [
        {"Codes": "prior N(0, I)", "Active": "–", "Coverage": "95% ± 1%",
         "Active coverage": "–", "Prior's": "–", "Active change": "–", "kNN": "–"},
        {"Codes": "KL weight 5", "Active": "1", "Coverage": "75% ± 2%",
         "Active coverage": "40% ± 1%", "Prior's": "100% ± 0.1%",
         "Active change": "0.040 ± 0.002", "kNN": "81.2% ± 0.4%"}]


def test_latent_space_table_small_coverage_se_stays_a_percentage():
    rows = [{"model": "prior N(0, I)", "coverage": 0.95, "coverage_se": 0.003}]
    assert table_records(report.markdown_table(rows, report.LATENT_SPACE_COLUMNS))[0][0][
        "Coverage"] == "95% ± 0.3%"


def test_generation_and_interpolation_tables():
    generation = [{"model": "MNIST test images", "samples": 10000, "confident_share": 0.9712,
                   "confident_share_se": 0.0017, "digit_entropy": 0.99812,
                   "digit_entropy_se": 0.0004, "least_digit_share": 0.0892,
                   "least_digit_share_se": 0.0028}]
    assert table_records(report.markdown_table(generation, report.GENERATION_COLUMNS)) == [[
        {"Images": "MNIST test images", "Count": "10,000", "Confident": "97.1% ± 0.2%",
         "Digit entropy": "0.998 ± 0.0004", "Least digit": "8.9% ± 0.3%"}]]
    interpolation = [{"model": "baseline, weight 0", "n": 200, "smoothness": 0.3012,
                      "smoothness_se": 0.0101, "unclear": 0.4, "unclear_se": 0.021}]
    assert table_records(report.markdown_table(interpolation, report.INTERPOLATION_COLUMNS)) == [[
        {"Model": "baseline, weight 0", "Paths": "200", "Largest step / total": "0.301 ± 0.010",
         "Unclear interior frames": "40.0% ± 2.1%"}]]


# ---------------------------------------------------------------------------------------------
# Headless execution: section titles, progress lines
# ---------------------------------------------------------------------------------------------


def test_section_titles_map_code_cells_to_their_headings():
    v4 = nbformat.v4
    cells = [
        v4.new_code_cell("PROFILE = 'full'"),
        v4.new_markdown_cell("# CA4 report\n\nIntroduction text with a # that is no heading."),
        v4.new_code_cell("import ca4_helpers"),
        v4.new_markdown_cell("## Task 1\n\nText.\n\n### Training\n"),
        v4.new_code_cell("train()"),
        v4.new_markdown_cell("#### Detail below level three\n"),
        v4.new_code_cell("# ## a comment, not a heading\nplot()"),
        v4.new_markdown_cell("## Task 2"),
        v4.new_code_cell("vae()"),
        v4.new_markdown_cell("### Sampling"),
        v4.new_code_cell("sample()"),
    ]
    notebook = v4.new_notebook(cells=cells)
    code = [cell.id for cell in cells if cell.cell_type == "code"]
    assert build.section_titles(notebook) == {
        code[0]: "",
        code[1]: "CA4 report",
        code[2]: "CA4 report > Task 1 > Training",
        code[3]: "CA4 report > Task 1 > Training",
        code[4]: "CA4 report > Task 2",
        code[5]: "CA4 report > Task 2 > Sampling",
    }


def test_epoch_line_matches_progress_lines_and_not_the_record(tmp_path):
    lines: list[str] = []
    log = training_log.TrainingLog("vae_kl0p1", 3, lines.append)
    for epoch in range(3):
        log.on_epoch_begin(epoch)
        log.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1), "val_loss": 2.0})
    run_lines: list[str] = []
    with_run = training_log.TrainingLog("autoencoder_latent10", 20, run_lines.append,
                                        progress.RunProgress({"autoencoder_latent10": 20},
                                                             "full", tmp_path))
    with_run.on_epoch_begin(0)
    with_run.on_epoch_end(0, {"loss": 0.25})
    assert len(lines) == 3 and len(run_lines) == 1
    assert "epoch 1/3" in lines[0] and "epoch 3/3" in lines[2]
    assert "loss 1.0000" in lines[0] and "val_loss 2.0000" in lines[0]
    # Trailing zeros stay, so that the column of losses lines up epoch after epoch.
    assert "loss 0.5000" in lines[1] and "loss 0.3333" in lines[2]
    assert "epoch 1/20" in run_lines[0] and "run: about" in run_lines[0]
    for line in lines + run_lines:
        assert progress.EPOCH_LINE.match(line), line
    records: list[str] = []
    history = {"loss": [0.3, 0.2], "val_loss": [0.31, 0.25]}
    record_log = training_log.TrainingLog("vae_kl1", 2, records.append)
    record_log.record("trained", history, 75.0)
    record_log.finished("from the cache", history, 75.0, tmp_path / "vae_kl1-0.npz")
    record_log.resumed(1)
    training_log.TrainingLog("autoencoder_latent10", 1, records.append).record(
        "trained", {"loss": [0.3], "val_loss": [0.31]}, 5.0)
    assert all("1 min 15 s" in line for line in records[:2]) and "5 s" in records[3]
    assert "from the cache" in records[1] and "resuming after epoch 1 of 2" in records[2]
    for line in records:
        assert not progress.EPOCH_LINE.match(line), line


def test_a_vae_record_gives_its_negative_elbo_not_its_weighted_loss():
    records: list[str] = []
    history = {"loss": [160.0], "val_loss": [152.5], "val_reconstruction_loss": [140.0],
               "val_kl_loss": [2.5]}  # weight 5: 140 + 5 x 2.5
    training_log.TrainingLog("vae_kl5", 1, records.append).record("trained", history, 3.0)
    assert records == ["vae_kl5 trained: 1 epoch in 3 s, val. negative ELBO 142.5"]


def test_run_progress_seconds_left(tmp_path):
    run = progress.RunProgress({"a": 4, "b": 6}, "full", tmp_path)
    assert run.seconds_left() == 0.0  # nothing trained yet: no estimate
    run.start_model("a", 4)
    run.add_trained_epoch("a", 2.0)
    run.add_trained_epoch("a", 4.0)  # 3 s per trained epoch
    assert run.seconds_left() == pytest.approx(8 * 3.0)
    run.finish_model("a", tmp_path / "a-0.npz")
    assert run.seconds_left() == pytest.approx(6 * 3.0)
    run.start_model("b", 6)
    run.add_skipped_epochs("b", 2)  # resumed after epoch 2: counted as done, not in the mean
    assert run.seconds_left() == pytest.approx(4 * 3.0)
    run.finish_model("b", tmp_path / "b-0.npz")
    assert run.seconds_left() == 0.0


def test_run_progress_leaves_out_the_models_the_cache_holds(tmp_path):
    (tmp_path / "vae-1.npz").touch()
    first = progress.RunProgress({"ae": 20, "vae": 20}, "full", tmp_path)
    first.finish_model("vae", tmp_path / "vae-1.npz")  # the index now points at vae-1.npz
    again = progress.RunProgress({"ae": 20, "vae": 20, "new": 5}, "full", tmp_path)
    assert again.expected_cached == {"vae"}
    again.start_model("ae", 20)
    again.add_trained_epoch("ae", 1.0)
    assert again.epochs_left() == 19 + 5  # not the 20 epochs of the cached VAE
    # Another profile's entries do not count; an entry whose file is gone does not either.
    assert progress.RunProgress({"vae": 2}, "fast", tmp_path).expected_cached == set()
    (tmp_path / "vae-1.npz").unlink()
    assert progress.RunProgress({"vae": 20}, "full", tmp_path).expected_cached == set()


def test_run_progress_counts_a_model_the_cache_was_expected_to_serve_once_it_trains(tmp_path):
    (tmp_path / "vae-1.npz").touch()
    progress.RunProgress({"vae": 20}, "full", tmp_path).finish_model("vae", tmp_path / "vae-1.npz")
    run = progress.RunProgress({"ae": 10, "vae": 20}, "full", tmp_path)
    assert run.epochs_left() == 10
    run.start_model("vae", 20)  # its code changed since: train_model trains it after all
    assert run.epochs_left() == 30


@pytest.mark.parametrize("seconds, text", [
    (0, "0 s"), (-3.0, "0 s"), (44.6, "45 s"), (59.4, "59 s"), (59.6, "1 min 00 s"),
    (185, "3 min 05 s"), (3599.4, "59 min 59 s"), (3600, "1 h 00 min"), (3720, "1 h 02 min"),
    (36000 + 59 * 60, "10 h 59 min"),
])
def test_format_duration(seconds, text):
    assert progress.format_duration(seconds) == text


@pytest.mark.parametrize("folder", [None, "elsewhere/out"])
def test_the_build_tools_find_the_build_folder_where_ca4_does(folder, monkeypatch, tmp_path):
    # tools.build keeps its own copy of the rule so as not to import TensorFlow.
    monkeypatch.chdir(tmp_path)
    if folder is None:
        monkeypatch.delenv("CA4_BUILD_DIR", raising=False)
    else:
        monkeypatch.setenv("CA4_BUILD_DIR", folder)
    assert build.build_dir() == settings.build_dir()
    assert build.build_dir() == (settings.PROJECT_DIR / "build" if folder is None
                                 else tmp_path / folder)


def test_pca_overlap_of_constructed_clusters():
    # Digits 0-7 in clusters of their own; 8 and 9 drawn from one and the same cluster.
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 50)
    centres = np.stack([np.arange(10) * 10.0, np.zeros(10)], axis=1)
    centres[9] = centres[8]
    points = centres[labels] + rng.normal(0.0, 0.5, (500, 2))
    found = task1_analyses.pca_overlap(points, labels, neighbours=10)
    assert found["purity"][:8] == [1.0] * 8
    assert 0.3 < found["purity"][8] < 0.7 and 0.3 < found["purity"][9] < 0.7
    top = found["pairs"][0]
    assert top["digits"] == [8, 9] and top["share"] == pytest.approx(
        (1 - found["purity"][8] + 1 - found["purity"][9]) / 2)
    assert all(pair["share"] == 0.0 for pair in found["pairs"][1:])


def test_a_long_epoch_prints_a_line_within_it_and_the_pdf_drops_it():
    lines: list[str] = []
    log = training_log.TrainingLog("vae_kl1", 20, lines.append)
    log.set_params({"steps": 469})
    log.on_epoch_begin(2)
    log.on_train_batch_end(99)  # 20 s have not passed: quiet
    assert lines == []
    log.QUIET_SECONDS = 0.0  # as if 20 s had passed at each batch
    log.on_train_batch_end(234)
    (line,) = lines
    assert line.startswith("  vae_kl1 epoch 3/20  batch 235/469  ")
    assert line.endswith("left in this epoch") and progress.EPOCH_LINE.match(line)

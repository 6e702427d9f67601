"""Continuity and coverage along a model's active dimensions only (ca4lib.latent_space): a
dimension the encoder ignores holds prior noise, which must not count as covered or smooth."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from scipy import stats

from ca4lib import latent_space

GRID_SIZE, GRID_EXTENT = 15, 2.0


def decoder_of_z0(weights: np.ndarray, bias: np.ndarray) -> keras.Model:
    """p = sigmoid(w z[0] + b): a decoder that ignores z[1]."""
    latent = keras.Input((2,))
    dense = keras.layers.Dense(784, activation="sigmoid")
    model = keras.Model(latent, keras.layers.Reshape((28, 28, 1))(dense(latent)))
    kernel = np.zeros((2, 784), np.float32)
    kernel[0] = weights
    dense.set_weights([kernel, bias.astype(np.float32)])
    return model


def test_one_active_dimension_is_measured_along_itself_only():
    count, rng = 3000, np.random.default_rng(1)
    labels = rng.integers(0, 10, count)
    z_mean = np.stack([rng.uniform(-0.5, 0.5, count), np.full(count, 0.3)], axis=1)
    # Samples: the active coordinate where the means are, the ignored one the prior's noise.
    z = np.stack([z_mean[:, 0], rng.standard_normal(count)], axis=1)
    weights, bias = rng.normal(0.0, 1.0, 784), rng.normal(0.0, 1.0, 784)
    reference = (z_mean[:300], labels[:300])
    _, row = latent_space.latent_space_rows({5.0: {"z": z, "z_mean": z_mean}},
                                            {5.0: decoder_of_z0(weights, bias)}, labels,
                                            {5.0: reference}, GRID_SIZE, GRID_EXTENT, seed=0)
    assert row["active"] == [0] and row["active_dimensions"] == 1
    # Along z[0] the samples fill [-0.5, 0.5]: cells 5 to 9 of the 15 over [-2, 2].
    edges = np.linspace(-GRID_EXTENT, GRID_EXTENT, GRID_SIZE + 1)
    reached = np.unique(np.digitize(z[:, 0], edges) - 1)
    assert reached.tolist() == [5, 6, 7, 8, 9]
    assert row["active_coverage"] == pytest.approx(5 / GRID_SIZE)
    # The prior in one dimension, with as many samples, reaches every cell.
    expected_1d = float(np.mean(1 - (1 - np.diff(stats.norm.cdf(edges))) ** count))
    assert row["prior_active_coverage"] == pytest.approx(expected_1d, abs=0.02)
    # Both coordinates together look far more covered: the noise spreads the samples.
    assert row["coverage"] > 2 * row["active_coverage"] / GRID_SIZE
    # The decoded grid changes along z[0] only: measured along it, the change is the
    # whole change per step; over all steps, half the steps (along z[1]) change nothing.
    steps = np.linspace(-GRID_EXTENT, GRID_EXTENT, GRID_SIZE)
    pixels = 1 / (1 + np.exp(-(np.multiply.outer(steps, weights) + bias)))
    per_step = np.abs(np.diff(pixels, axis=0)).mean()
    assert row["active_neighbour_change"] == pytest.approx(per_step, rel=1e-4)
    assert row["neighbour_change"] == pytest.approx(per_step / 2, rel=1e-4)


def test_no_active_dimension_gives_no_active_measures():
    count, rng = 500, np.random.default_rng(2)
    labels = rng.integers(0, 10, count)
    z_mean = np.zeros((count, 2))
    z = rng.standard_normal((count, 2))
    _, row = latent_space.latent_space_rows(
        {5.0: {"z": z, "z_mean": z_mean}},
        {5.0: decoder_of_z0(np.zeros(784), np.zeros(784))}, labels,
        {5.0: (rng.normal(size=(50, 2)), labels[:50])}, GRID_SIZE, GRID_EXTENT, seed=0)
    assert row["active"] == [] and "active_coverage" not in row


@pytest.mark.parametrize("points, cells", [
    (np.array([[-2.0], [1.99], [2.0], [2.1]]), [0, 14, 14, -1]),
    (np.array([[-2.0, -2.0], [2.0, -2.0], [0.0, 2.5]]), [0, 14 * 15, -1]),
])
def test_grid_cells_in_one_and_two_dimensions(points, cells):
    assert latent_space.latent_grid_cells(points, GRID_SIZE, GRID_EXTENT).tolist() == cells

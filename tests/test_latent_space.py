"""Latent grids, coverage and continuity (ca4lib.latent_space): grid points, tiling and decoding,
the cells codes fall in, coverage, the change between neighbouring tiles and the latent-space
rows, checked against NumPy (`histogram2d`, the normal quantiles), decoders whose output is
known and constant tiles. Continuity and coverage are measured along a model's active
dimensions only: a dimension the encoder ignores holds prior noise, which must not count as
covered or smooth."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from scipy import stats
from test_models import linear_decoder

import ca4_helpers as ca4
from ca4lib import latent_space

GRID_SIZE, GRID_EXTENT = 15, 2.0


# ---------------------------------------------------------------------------------------------
# Grid points, tiles and decoded grids
# ---------------------------------------------------------------------------------------------


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


def test_linear_grid_covers_the_extent():
    points = latent_space.latent_grid_points(15, extent=2.0)
    assert points.shape == (225, 2) and points.dtype == np.float32
    corners = {(x, y) for x, y in np.round(points, 6).tolist() if abs(x) == 2 and abs(y) == 2}
    assert corners == {(-2.0, -2.0), (-2.0, 2.0), (2.0, -2.0), (2.0, 2.0)}
    assert points.min() == -2.0 and points.max() == 2.0
    np.testing.assert_allclose(points[0], [-2.0, 2.0])  # top-left first
    np.testing.assert_allclose(points[-1], [2.0, -2.0])
    assert len(np.unique(points[:, 0])) == 15 and len(np.unique(points[:, 1])) == 15


def test_gaussian_grid_is_symmetric():
    points = latent_space.latent_grid_points(7, spacing="gaussian")
    axis = np.unique(points[:, 0])
    assert len(axis) == 7
    np.testing.assert_allclose(axis, -axis[::-1], atol=1e-6)
    np.testing.assert_allclose(np.unique(points[:, 1]), axis, atol=1e-6)
    # Quantiles 5 % ... 95 %: steps widen towards the tails.
    steps = np.diff(axis)
    assert steps[0] > steps[len(steps) // 2]
    assert axis[-1] == pytest.approx(1.6448536, rel=1e-5)


@pytest.mark.parametrize("channel_axis", [False, True])
def test_tile_images_places_image_k_at_row_k_div_columns(channel_axis):
    images = np.random.default_rng(0).uniform(size=(6, 28, 28))
    sheet = latent_space.tile_images(images[..., np.newaxis] if channel_axis else images, 3)
    assert sheet.shape == (2 * 28, 3 * 28)
    for k in range(6):
        row, column = k // 3, k % 3
        tile = sheet[28 * row:28 * (row + 1), 28 * column:28 * (column + 1)]
        np.testing.assert_array_equal(tile, images[k])


class CountingDecoder:
    """Wraps a decoder and records each call (the helper must decode the grid in one batch)."""

    def __init__(self, decoder):
        self.decoder = decoder
        self.batch_sizes: list[int] = []

    @property
    def input_shape(self):
        return self.decoder.input_shape

    def __call__(self, points, training=False):
        self.batch_sizes.append(len(points))
        return self.decoder(points, training=training)


@pytest.fixture(scope="module")
def decoder_2d():
    ca4.set_seed(0)
    return ca4.build_decoder(2)


@pytest.mark.parametrize("n", [15, 4])
def test_decode_latent_grid_decodes_once(n, decoder_2d):
    counting = CountingDecoder(decoder_2d)
    grid = latent_space.decode_latent_grid(counting, points_per_side=n)
    assert counting.batch_sizes == [n * n]
    assert grid.shape == (28 * n, 28 * n)
    assert np.all((grid > 0) & (grid < 1))


def test_decode_latent_grid_tiles_row_major_from_the_top():
    n = 3
    points = latent_space.latent_grid_points(n)

    class IndexDecoder:
        """Decodes point k to an image filled with k, to see where each tile lands."""

        input_shape = (None, 2)

        def __call__(self, batch, training=False):
            index = np.array([np.flatnonzero((points == p).all(axis=1))[0] for p in np.asarray(batch)])
            return np.broadcast_to(index[:, None, None, None], (len(batch), 28, 28, 1)).astype(float)

    grid = latent_space.decode_latent_grid(IndexDecoder(), points_per_side=n)
    for row in range(n):
        for column in range(n):
            tile = grid[28 * row:28 * (row + 1), 28 * column:28 * (column + 1)]
            assert np.all(tile == row * n + column)
            z0, z1 = points[row * n + column]
            # Left to right z[0] grows, top to bottom z[1] falls.
            assert z0 == pytest.approx([-2, 0, 2][column]) and z1 == pytest.approx([2, 0, -2][row])


def test_decode_latent_grid_rejects_other_latent_sizes():
    with pytest.raises(ValueError, match="decoder"):
        latent_space.decode_latent_grid(CountingDecoder(ca4.build_decoder(3)), points_per_side=2)


# ---------------------------------------------------------------------------------------------
# Grid cells and coverage
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


@pytest.mark.parametrize("points, cells", [
    (np.array([[-2.0], [1.99], [2.0], [2.1]]), [0, 14, 14, -1]),
    (np.array([[-2.0, -2.0], [2.0, -2.0], [0.0, 2.5]]), [0, 14 * 15, -1]),
])
def test_grid_cells_in_one_and_two_dimensions(points, cells):
    assert latent_space.latent_grid_cells(points, GRID_SIZE, GRID_EXTENT).tolist() == cells


# ---------------------------------------------------------------------------------------------
# Change between neighbouring tiles
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# latent_space_rows
# ---------------------------------------------------------------------------------------------


def cluster_codes(labels: np.ndarray, seed: int) -> np.ndarray:
    centres = np.stack([np.cos(labels * 0.6), np.sin(labels * 0.6)], axis=1) * 1.5
    return centres + np.random.default_rng(seed).normal(0.0, 0.02, centres.shape)


def expected_prior_coverage(samples: int) -> float:
    """The expected share of the grid's cells that `samples` draws of N(0, I) reach."""
    edges = np.linspace(-GRID_EXTENT, GRID_EXTENT, GRID_SIZE + 1)
    mass = np.diff(stats.norm.cdf(edges))
    cell = np.outer(mass, mass)
    return float(np.mean(1 - (1 - cell) ** samples))


def test_latent_space_rows_of_constructed_codes_and_decoders():
    count = 2000
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, count)
    reference_labels = np.repeat(np.arange(10), 30)
    w0, bias = rng.normal(0.0, 1.0, 784), rng.normal(0.0, 1.0, 784)
    terms = {1.0: {"z": np.full((count, 2), 0.1), "z_mean": cluster_codes(labels, 1)},
             5.0: {"z": rng.uniform(-GRID_EXTENT, GRID_EXTENT, (count, 2)),
                   "z_mean": cluster_codes((labels + 1) % 10, 2)}}
    decoders = {1.0: linear_decoder(np.zeros(784), bias), 5.0: linear_decoder(w0, bias)}
    reference = {w: (cluster_codes(reference_labels, 3), reference_labels) for w in terms}
    rows = latent_space.latent_space_rows(terms, decoders, labels, reference, GRID_SIZE, GRID_EXTENT,
                                 seed=0)
    prior, constant, spread = rows
    assert prior["model"] == "prior N(0, I)" and prior["kl_weight"] is None
    assert prior["coverage"] == pytest.approx(expected_prior_coverage(count), abs=0.05)
    assert 0 < prior["coverage_se"] < 0.05 and prior["n"] == count
    # Every sample in one cell.
    assert constant["model"] == "KL weight 1" and constant["kl_weight"] == 1.0
    assert constant["coverage"] == pytest.approx(1 / GRID_SIZE**2)
    assert constant["coverage_se"] == 0.0
    assert spread["coverage"] > 0.99
    # A decoder that ignores z: no change between neighbouring tiles.
    assert (constant["neighbour_change"], constant["own_neighbour_change"],
            constant["largest_change"]) == (0.0, 0.0, 0.0)
    # A decoder that reads z[0] only: tiles change along z[0] and not along z[1]; half of the
    # neighbour pairs are along z[0].
    steps = np.linspace(-GRID_EXTENT, GRID_EXTENT, GRID_SIZE)
    w0, bias = (v.astype(np.float64) for v in (decoders[5.0].layers[1].get_weights()[0][0],
                                               decoders[5.0].layers[1].get_weights()[1]))
    pixels = 1 / (1 + np.exp(-(np.multiply.outer(steps, w0) + bias)))
    along_z0 = np.abs(np.diff(pixels, axis=0)).mean(axis=1)
    assert spread["change_along"][1] == 0.0
    assert spread["change_along"][0] == pytest.approx(along_z0.mean(), rel=1e-4)
    assert spread["neighbour_change"] == pytest.approx(along_z0.mean() / 2, rel=1e-4)
    assert spread["largest_change"] == pytest.approx(along_z0.max(), rel=1e-4)
    low, high = np.percentile(terms[5.0]["z"][:, 0], [1, 99])
    own_pixels = 1 / (1 + np.exp(-(np.multiply.outer(np.linspace(low, high, GRID_SIZE), w0)
                                   + bias)))
    assert spread["own_neighbour_change"] == pytest.approx(
        np.abs(np.diff(own_pixels, axis=0)).mean() / 2, rel=1e-4)
    # kNN: weight 1's codes sit at their digit's cluster, weight 5's at the next digit's.
    assert constant["knn"] == 1.0 and spread["knn"] == 0.0
    adjusted = (count + 2) / (count + 4)
    assert constant["knn_se"] == pytest.approx(math.sqrt(adjusted * (1 - adjusted) / (count + 4)))
    assert constant["z_std"] == pytest.approx(terms[1.0]["z_mean"].std(axis=0).tolist())


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

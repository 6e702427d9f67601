"""The VAE analyses on constructed models and data with known answers: Bernoulli likelihoods,
the loss terms per image, the sweep, latent-space, generation and interpolation rows, the
analysis cache, and the rate-distortion and latent-grid plots (log p(x): test_likelihood.py)."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from scipy import stats

import ca4_helpers as ca4
from ca4lib import (
    figures,
    generation,
    inference,
    latent_space,
    measures,
    settings,
    vae_analyses,
)

EPSILON = np.float32(1e-7)  # Keras' clipping of probabilities


def numpy_log_likelihood(images: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """log p(x|z) summed over the pixels, in float64, probabilities clipped as Keras does."""
    x = np.asarray(images, np.float64).reshape(len(images), -1)
    p = np.clip(np.asarray(probabilities, np.float32), EPSILON, np.float32(1) - EPSILON)
    p = p.astype(np.float64).reshape(len(images), -1, x.shape[1])
    return (x[:, None] * np.log(p) + (1 - x[:, None]) * np.log(1 - p)).sum(axis=-1)


def closed_form_kl(z_mean: np.ndarray, z_log_var: np.ndarray) -> np.ndarray:
    """KL(N(m, exp(lv)) || N(0, 1)) = 0.5 (exp(lv) + m^2 - 1 - lv) per dimension."""
    return 0.5 * (np.exp(z_log_var) + np.square(z_mean) - 1.0 - z_log_var)


def uniform_images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(count, 28, 28, 1)).astype(np.float32)


def constant_posterior_vae(z_mean, z_log_var, kl_weight: float = 1.0) -> ca4.VariationalAutoencoder:
    """A VAE whose encoder ignores the image: z_mean and z_log_var are the given constants."""
    model = ca4.build_vae(2, kl_weight=kl_weight, seed=0)
    for name, bias in (("z_mean", z_mean), ("z_log_var", z_log_var)):
        dense = model.encoder.get_layer(name)
        dense.kernel.assign(np.zeros(dense.kernel.shape, np.float32))
        dense.bias.assign(np.asarray(bias, np.float32))
    return model


def linear_decoder(w0: np.ndarray, bias: np.ndarray, w1: np.ndarray | None = None
                   ) -> keras.Model:
    """Input(2) -> Dense(784, sigmoid) -> Reshape(28, 28, 1): p = sigmoid(w0 z0 + w1 z1 + b)."""
    latent = keras.Input((2,))
    dense = keras.layers.Dense(784, activation="sigmoid")
    model = keras.Model(latent, keras.layers.Reshape((28, 28, 1))(dense(latent)))
    kernel = np.zeros((2, 784), np.float32)
    kernel[0] = w0
    if w1 is not None:
        kernel[1] = w1
    dense.set_weights([kernel, np.asarray(bias, np.float32)])
    return model


# ---------------------------------------------------------------------------------------------
# Bernoulli log-likelihood and the floor of grey pixels
# ---------------------------------------------------------------------------------------------


def test_bernoulli_log_likelihood_of_one_output_per_image_against_numpy():
    images = uniform_images(4)
    images[0] = np.round(images[0])  # a binary image too
    probabilities = uniform_images(4, seed=1)
    probabilities[1, :3] = 0.0  # clipped to 1e-7
    probabilities[2, :3] = 1.0
    found = vae_analyses.bernoulli_log_likelihood(images, probabilities)
    assert found.shape == (4,)
    np.testing.assert_allclose(found, numpy_log_likelihood(images, probabilities)[:, 0],
                               rtol=1e-5)


def test_bernoulli_log_likelihood_of_several_outputs_per_image_against_numpy():
    images = uniform_images(3)
    probabilities = np.random.default_rng(2).uniform(size=(3, 5, 28, 28, 1)).astype(np.float32)
    found = vae_analyses.bernoulli_log_likelihood(images, probabilities)
    assert found.shape == (3, 5)
    np.testing.assert_allclose(found, numpy_log_likelihood(images, probabilities), rtol=1e-5)
    # Sample k of image i is scored against image i, not another.
    single = vae_analyses.bernoulli_log_likelihood(images[1:2], probabilities[1:2, 3])
    assert single[0] == pytest.approx(found[1, 3], rel=1e-6)


def test_pixel_entropy_floor_of_binary_images_is_about_zero():
    images = np.round(uniform_images(3))
    # Clipping keeps each pixel's term at -log(1 - 1e-7): 784 x 1e-7 nats in all.
    np.testing.assert_allclose(vae_analyses.pixel_entropy_floor(images), 0.0, atol=1e-3)


def test_pixel_entropy_floor_of_half_grey_images_is_784_ln_2():
    images = np.full((2, 28, 28, 1), 0.5, np.float32)
    np.testing.assert_allclose(vae_analyses.pixel_entropy_floor(images), 784 * math.log(2), rtol=1e-5)


def test_aggregate_posterior_variance_against_a_monte_carlo_sample():
    rng = np.random.default_rng(0)
    z_mean = np.stack([rng.normal(1.0, 2.0, 300), rng.normal(0.0, 0.1, 300)], axis=1)
    z_log_var = np.stack([rng.uniform(-3, 0, 300), rng.uniform(-1, 1, 300)], axis=1)
    found = vae_analyses.aggregate_posterior_variance(z_mean, z_log_var)
    # Draw from q(z) = the mixture over images of q(z|x): pick an image, then sample its posterior.
    picks = rng.integers(0, 300, 400_000)
    samples = z_mean[picks] + np.exp(0.5 * z_log_var[picks]) * rng.standard_normal((400_000, 2))
    np.testing.assert_allclose(found, samples.var(axis=0), rtol=0.02)
    assert found.shape == (2,)


# ---------------------------------------------------------------------------------------------
# vae_test_terms on a VAE with known posteriors
# ---------------------------------------------------------------------------------------------


def test_vae_test_terms_of_known_posteriors():
    mean, log_var = np.array([1.0, -0.5]), np.array([0.5, -1.0])
    model = constant_posterior_vae(mean, log_var)
    images = uniform_images(6)
    terms = ca4.vae_test_terms(model, images, seed=3)
    np.testing.assert_allclose(terms["z_mean"], np.tile(mean, (6, 1)), rtol=1e-6)
    np.testing.assert_allclose(terms["z_log_var"], np.tile(log_var, (6, 1)), rtol=1e-6)
    expected_kl = closed_form_kl(mean, log_var)
    np.testing.assert_allclose(terms["kl_per_dimension"], np.tile(expected_kl, (6, 1)),
                               rtol=1e-6)
    np.testing.assert_allclose(terms["kl"], np.full(6, expected_kl.sum()), rtol=1e-6)
    decoded_mean = np.asarray(model.decoder(np.tile(mean, (6, 1)).astype(np.float32)))
    np.testing.assert_allclose(terms["mean_reconstruction"],
                               -numpy_log_likelihood(images, decoded_mean)[:, 0], rtol=1e-5)
    decoded_sample = np.asarray(model.decoder(terms["z"].astype(np.float32)))
    np.testing.assert_allclose(terms["reconstruction"],
                               -numpy_log_likelihood(images, decoded_sample)[:, 0], rtol=1e-5)
    # One sample per image from q(z|x), away from the mean, reproducible by its seed.
    assert terms["z"].shape == (6, 2) and not np.allclose(terms["z"], terms["z_mean"])
    np.testing.assert_array_equal(terms["z"], ca4.vae_test_terms(model, images, seed=3)["z"])
    assert not np.allclose(terms["z"], ca4.vae_test_terms(model, images, seed=4)["z"])


def test_vae_test_terms_samples_follow_the_posterior():
    mean, log_var = np.array([2.0, -1.0]), np.array([-2.0, 1.0])
    # A dense encoder and decoder are fast: 2,000 images and samples.
    images = np.zeros((2000, 28, 28, 1), np.float32)
    vae = ca4.VariationalAutoencoder(fitted_encoder(images[:1], mean[None], log_var[None]),
                                     linear_decoder(np.zeros(784), np.zeros(784)))
    z = ca4.vae_test_terms(vae, images, seed=0)["z"]
    standardised = (z - mean) / np.exp(0.5 * log_var)
    np.testing.assert_allclose(standardised.mean(axis=0), 0.0, atol=0.1)  # SE 0.022
    np.testing.assert_allclose(standardised.std(axis=0), 1.0, atol=0.06)  # SE 0.016


def fitted_encoder(images: np.ndarray, z_mean: np.ndarray, z_log_var: np.ndarray) -> keras.Model:
    """An encoder (Flatten -> two Dense) that maps each given image to its given posterior."""
    pixels = keras.Input((28, 28, 1))
    flat = keras.layers.Flatten()(pixels)
    outputs = [keras.layers.Dense(2, name=name)(flat) for name in ("z_mean", "z_log_var")]
    encoder = keras.Model(pixels, outputs)
    # Least squares: a kernel K with x_i K = target_i for each (linearly independent) image;
    # an image of zeros gets its target from the bias.
    pixels = images.reshape(len(images), -1).astype(np.float64)
    for name, target in (("z_mean", z_mean), ("z_log_var", z_log_var)):
        target = np.asarray(target, np.float64)
        if not pixels.any():
            weights = [np.zeros((784, 2), np.float32), target[0].astype(np.float32)]
        else:
            weights = [(np.linalg.pinv(pixels) @ target).astype(np.float32),
                       np.zeros(2, np.float32)]
        encoder.get_layer(name).set_weights(weights)
    return encoder


def sd_over_root_n(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


# ---------------------------------------------------------------------------------------------
# vae_sweep_rows
# ---------------------------------------------------------------------------------------------

COUNT = 400


def sweep_terms(seed: int = 0) -> dict[float, dict[str, np.ndarray]]:
    """Per-image terms of three constructed models. Dimension 1 of weight 5 is inactive
    (Var(mu) = 0.05^2); a quarter of the images have a prior-like posterior in dimension 1."""
    rng = np.random.default_rng(seed)
    base = rng.normal(150.0, 20.0, COUNT)
    terms = {}
    for weight, (offset, spread, kl_level) in {0.1: (0.0, 1.5, 8.0), 1.0: (5.0, 1.0, 4.0),
                                              5.0: (12.0, 0.05, 1.0)}.items():
        z_mean = np.stack([rng.normal(0.0, 1.0, COUNT), rng.normal(0.0, spread, COUNT)], axis=1)
        z_log_var = rng.uniform(-2.0, -0.5, (COUNT, 2))
        kl = np.stack([np.full(COUNT, kl_level), np.where(np.arange(COUNT) < COUNT // 4, 0.001,
                                                          kl_level / 2)], axis=1)
        reconstruction = base + offset + rng.normal(0.0, 1.0, COUNT)
        terms[weight] = {"reconstruction": reconstruction, "mean_reconstruction":
                         reconstruction - 3.0, "kl_per_dimension": kl, "kl": kl.sum(axis=1),
                         "z_mean": z_mean, "z_log_var": z_log_var}
    return terms


def test_vae_sweep_rows_of_constructed_terms():
    terms = sweep_terms()
    recognised = {w: np.random.default_rng(int(10 * w)).uniform(size=COUNT) < share
                  for w, share in ((0.1, 0.9), (1.0, 0.8), (5.0, 0.5))}
    rows = vae_analyses.vae_sweep_rows(terms, {0.1: 20, 1.0: 21, 5.0: 22}, recognised)
    weights = [0.1, 1.0, 5.0]
    assert [row["kl_weight"] for row in rows] == weights
    assert [row["epochs"] for row in rows] == [20, 21, 22]
    neg_elbo = {w: terms[w]["reconstruction"] + terms[w]["kl"] for w in weights}
    best = min(weights, key=lambda w: neg_elbo[w].mean())
    for index, (row, weight) in enumerate(zip(rows, weights)):
        t = terms[weight]
        assert row["n"] == COUNT
        for name, values in (("reconstruction", t["reconstruction"]), ("kl", t["kl"]),
                             ("neg_elbo", neg_elbo[weight]),
                             ("mean_code_reconstruction", t["mean_reconstruction"])):
            assert row[name] == pytest.approx(values.mean())
            assert row[f"{name}_se"] == pytest.approx(sd_over_root_n(values))
        assert row["weighted_loss"] == pytest.approx(
            t["reconstruction"].mean() + weight * t["kl"].mean())
        assert row["recognised"] == pytest.approx(recognised[weight].mean())
        above = neg_elbo[weight] - neg_elbo[best]
        assert row["neg_elbo_above_best"] == pytest.approx(above.mean(), abs=1e-12)
        assert row["neg_elbo_above_best_se"] == pytest.approx(
            sd_over_root_n(above) if weight != best else 0.0, abs=1e-12)
        assert row["kl_per_dimension"] == pytest.approx(t["kl_per_dimension"].mean(axis=0).tolist())
        assert row["prior_like_share"] == pytest.approx([0.0, 0.25])
        variance = t["z_mean"].var(axis=0)
        assert row["mean_variance"] == pytest.approx(variance.tolist())
        aggregate = variance + np.exp(t["z_log_var"]).mean(axis=0)
        assert row["aggregate_variance"] == pytest.approx(aggregate.tolist())
        assert row["prior_mismatch"] == pytest.approx(np.abs(aggregate - 1).sum())
        if index:
            previous = terms[weights[index - 1]]
            difference = t["reconstruction"] - previous["reconstruction"]
            assert row["reconstruction_change"] == pytest.approx(difference.mean())
            assert row["reconstruction_change_se"] == pytest.approx(sd_over_root_n(difference))
            assert row["kl_change"] == pytest.approx(t["kl"].mean() - previous["kl"].mean())
            assert row["recognised_change"] == pytest.approx(
                recognised[weight].mean() - recognised[weights[index - 1]].mean())
            assert row["prior_mismatch_change"] == pytest.approx(
                row["prior_mismatch"] - rows[index - 1]["prior_mismatch"])
        else:
            assert "reconstruction_change" not in row and "prior_mismatch_change" not in row
    # Burda et al.: a dimension is active where Var_x(mu_d) > 0.01; dimension 1 of weight 5
    # has Var about 0.0025.
    assert [row["active_dimensions"] for row in rows] == [2, 2, 1]
    # Weight 1 has the lowest mean negative ELBO by construction: 10.5 + base against 11.0
    # and 13.4.
    assert best == 1.0 and rows[1]["neg_elbo_above_best"] == 0.0


def test_vae_sweep_rows_prior_mismatch_standard_error_against_an_own_bootstrap():
    terms = sweep_terms(1)
    rows = vae_analyses.vae_sweep_rows(terms, dict.fromkeys(terms, 1))
    rng = np.random.default_rng(123)
    draws = [rng.integers(0, COUNT, COUNT) for _ in range(2000)]

    def mismatch(t, index):
        variance = t["z_mean"][index].var(axis=0) + np.exp(t["z_log_var"][index]).mean(axis=0)
        return np.abs(variance - 1).sum()

    replicated = {w: np.array([mismatch(t, d) for d in draws]) for w, t in terms.items()}
    for row, weight in zip(rows, terms):
        # 200 replicates estimate an SD to within about 5 %.
        assert row["prior_mismatch_se"] == pytest.approx(replicated[weight].std(ddof=1), rel=0.25)
    assert rows[2]["prior_mismatch_change_se"] == pytest.approx(
        (replicated[5.0] - replicated[1.0]).std(ddof=1), rel=0.25)
    assert "recognised" not in rows[0]


def test_vae_sweep_rows_of_constant_posteriors_have_an_exact_prior_mismatch():
    z_mean, z_log_var = np.zeros((50, 2)), np.tile([math.log(0.25), 0.0], (50, 1))
    terms = {1.0: {"reconstruction": np.full(50, 100.0), "mean_reconstruction": np.full(50, 90.0),
                   "kl_per_dimension": closed_form_kl(z_mean, z_log_var),
                   "kl": closed_form_kl(z_mean, z_log_var).sum(axis=1), "z_mean": z_mean,
                   "z_log_var": z_log_var}}
    (row,) = vae_analyses.vae_sweep_rows(terms, {1.0: 3})
    assert row["aggregate_variance"] == pytest.approx([0.25, 1.0])
    assert row["prior_mismatch"] == pytest.approx(0.75)
    assert row["prior_mismatch_se"] == 0.0
    assert row["active_dimensions"] == 0  # no mean moves with the image
    assert row["prior_like_share"] == [0.0, 1.0]


# ---------------------------------------------------------------------------------------------
# latent_space_rows
# ---------------------------------------------------------------------------------------------

GRID_SIZE, GRID_EXTENT = 15, 2.0


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


# ---------------------------------------------------------------------------------------------
# generation_row
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# cached_analysis
# ---------------------------------------------------------------------------------------------

class Calls:
    """Counts calls. An object, not a dict: the cache key describes a dict that a function
    reads by its contents, and a count in it would change the key at every call."""

    count = 0


CALLS = Calls()


def counted_analysis(values: np.ndarray, scale: float = 1.0) -> dict:
    CALLS.count += 1
    return {"total": float(np.sum(values) * scale), "doubled": 2 * np.asarray(values),
            "name": "sum"}


def counted_analysis_edited(values: np.ndarray, scale: float = 1.0) -> dict:
    CALLS.count += 1
    return {"total": float(np.sum(values) * scale) + 1.0, "doubled": 2 * np.asarray(values),
            "name": "sum"}


def model_analysis(model: keras.Model) -> dict:
    CALLS.count += 1
    return {"total": float(sum(np.sum(w) for w in model.get_weights()))}


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CA4_BUILD_DIR", str(tmp_path))
    CALLS.count = 0
    return tmp_path / "cache" / "analyses"


def test_cached_analysis_computes_once_then_loads(private_cache):
    values = np.arange(5.0)
    first = inference.cached_analysis(counted_analysis, values, scale=2.0)
    second = inference.cached_analysis(counted_analysis, values, scale=2.0)
    assert CALLS.count == 1
    assert first["total"] == second["total"] == 20.0
    assert isinstance(second["total"], float) and second["name"] == "sum"
    np.testing.assert_array_equal(second["doubled"], 2 * values)
    assert len(list(private_cache.glob("counted_analysis-*.npz"))) == 1


def test_cached_analysis_recomputes_for_other_arguments(private_cache):
    values = np.arange(5.0)
    inference.cached_analysis(counted_analysis, values, scale=2.0)
    assert inference.cached_analysis(counted_analysis, values, scale=3.0)["total"] == 30.0
    assert inference.cached_analysis(counted_analysis, values + 1, scale=2.0)["total"] == 30.0
    assert inference.cached_analysis(counted_analysis, values.astype(np.float32), scale=2.0)[
        "total"] == 20.0
    assert CALLS.count == 4
    inference.cached_analysis(counted_analysis, values, scale=3.0)
    assert CALLS.count == 4


def test_cached_analysis_recomputes_for_an_edited_function(private_cache, monkeypatch):
    values = np.arange(5.0)
    assert inference.cached_analysis(counted_analysis, values)["total"] == 10.0
    # The same function, its code replaced (as an edit with %autoreload would).
    monkeypatch.setattr(counted_analysis, "__code__", counted_analysis_edited.__code__)
    assert inference.cached_analysis(counted_analysis, values)["total"] == 11.0
    assert CALLS.count == 2


def test_cached_analysis_recomputes_for_a_changed_model_weight(private_cache):
    ca4.set_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    before = inference.cached_analysis(model_analysis, model)["total"]
    inference.cached_analysis(model_analysis, model)
    assert CALLS.count == 1
    kernel = model.layers[0].kernel
    original = kernel.numpy()
    kernel.assign(original + 1.0)
    assert inference.cached_analysis(model_analysis, model)["total"] == pytest.approx(before + 6.0)
    assert CALLS.count == 2
    kernel.assign(original)
    assert inference.cached_analysis(model_analysis, model)["total"] == pytest.approx(before)
    assert CALLS.count == 2  # the first result, from the cache


@pytest.mark.parametrize("damage", [b"", b"not a zip archive", b"PK\x03\x04broken"])
def test_cached_analysis_recomputes_a_damaged_cache_file(private_cache, damage):
    values = np.arange(3.0)
    inference.cached_analysis(counted_analysis, values)
    (path,) = private_cache.glob("counted_analysis-*.npz")
    path.write_bytes(damage)
    assert inference.cached_analysis(counted_analysis, values)["total"] == 3.0
    assert CALLS.count == 2
    assert inference.cached_analysis(counted_analysis, values)["total"] == 3.0
    assert CALLS.count == 2  # the file was written again, whole


# ---------------------------------------------------------------------------------------------
# cache_predictions: predict and decode_codes through the analysis cache
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def counted_batches(private_cache, monkeypatch, patch_lookup):
    """Count the model runs of run_in_batches; the prediction cache on for this test only."""
    real = inference.run_in_batches

    def counted(model, inputs, batch_size):
        CALLS.count += 1
        return real(model, inputs, batch_size)

    patch_lookup(inference.outputs_of, "run_in_batches", counted)
    patch_lookup(measures.unit_activity, "run_in_batches", counted)
    monkeypatch.setattr(inference.PREDICTION_CACHE, "enabled", False)
    return private_cache


def pixel_sums_model(outputs: int = 1) -> keras.Model:
    ca4.set_seed(0)
    images = keras.Input(settings.IMAGE_SHAPE)
    flat = keras.layers.Flatten()(images)
    heads = [keras.layers.Dense(2, name=f"head_{i}")(flat) for i in range(outputs)]
    return keras.Model(images, heads if outputs > 1 else heads[0])


def test_cached_predictions_run_the_model_once_and_return_its_outputs(counted_batches):
    model = pixel_sums_model()
    images = np.random.default_rng(0).random((inference.CACHED_PREDICTION_MIN, 28, 28, 1),
                                             dtype=np.float32)
    kernel, bias = (np.asarray(w, np.float64) for w in model.get_weights())
    expected = images.reshape(len(images), -1) @ kernel + bias  # the Dense layer by hand
    inference.cache_predictions()
    first, second = inference.predict(model, images), inference.predict(model, images)
    assert CALLS.count == 1
    np.testing.assert_allclose(first, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(second, first)
    assert len(list(counted_batches.glob("model_outputs-*.npz"))) == 1
    model.layers[-1].bias.assign(np.ones(2, np.float32))
    np.testing.assert_allclose(inference.predict(model, images), first + 1.0, rtol=1e-5)
    assert CALLS.count == 2  # new weights: run again


def test_cached_predictions_keep_a_list_of_outputs_a_list(counted_batches):
    model = pixel_sums_model(outputs=2)
    images = np.zeros((inference.CACHED_PREDICTION_MIN, 28, 28, 1), np.float32)
    inference.cache_predictions()
    computed, loaded = inference.predict(model, images), inference.predict(model, images)
    assert CALLS.count == 1
    assert isinstance(loaded, list) and len(loaded) == 2
    for fresh, stored in zip(computed, loaded):
        np.testing.assert_array_equal(stored, fresh)


def test_predictions_are_not_kept_when_off_few_or_inside_a_cached_analysis(counted_batches):
    model = pixel_sums_model()
    many = np.zeros((inference.CACHED_PREDICTION_MIN, 28, 28, 1), np.float32)
    inference.predict(model, many), inference.predict(model, many)
    assert CALLS.count == 2  # off by default
    inference.cache_predictions()
    few = many[:inference.CACHED_PREDICTION_MIN - 1]
    inference.predict(model, few), inference.predict(model, few)
    assert CALLS.count == 4
    assert not list(counted_batches.glob("model_outputs-*.npz"))
    inference.cached_analysis(model_analysis_of_images, model, many)
    # The analysis is kept as a whole, its predictions not on their own.
    assert [path.name.split("-")[0] for path in counted_batches.glob("*.npz")] == [
        "model_analysis_of_images"]


def model_analysis_of_images(model: keras.Model, images: np.ndarray) -> dict:
    return {"total": float(np.sum(inference.predict(model, images)))}


class Scaling(keras.layers.Layer):
    """A layer without weights: an edit of its call changes outputs, never the variables."""

    def call(self, inputs):
        return 2.0 * inputs


def tripled(self, inputs):
    return 3.0 * inputs


def test_cached_predictions_recompute_when_a_layer_s_code_changes(counted_batches, monkeypatch):
    images = np.full((inference.CACHED_PREDICTION_MIN, 28, 28, 1), 0.5, np.float32)
    model = keras.Sequential([keras.Input(settings.IMAGE_SHAPE), Scaling()])
    inference.cache_predictions()
    np.testing.assert_array_equal(inference.predict(model, images), 2.0 * images)
    # As an edit with %autoreload would: the same class, its method's code replaced.
    monkeypatch.setattr(Scaling.call, "__code__", tripled.__code__)
    np.testing.assert_array_equal(inference.predict(model, images), 3.0 * images)
    assert CALLS.count == 2

def test_dead_unit_share_is_read_back_once_cached(counted_batches):
    ca4.set_seed(0)
    images_in = keras.Input(settings.IMAGE_SHAPE)
    encoder = keras.Model(images_in, keras.layers.Dense(4, activation="relu")(
        keras.layers.Flatten()(images_in)))
    # Units 0 and 1 see the pixel sum, units 2 and 3 its negative: on positive images the
    # last two stay 0 whatever the image, half the units are dead.
    kernel = np.zeros((28 * 28, 4), np.float32)
    kernel[:, :2], kernel[:, 2:] = 1.0, -1.0
    encoder.layers[-1].set_weights([kernel, np.zeros(4, np.float32)])
    images = np.full((20, 28, 28, 1), 0.5, np.float32)
    inference.cache_predictions()
    assert measures.dead_unit_share(encoder, images) == measures.dead_unit_share(encoder, images) == 0.5
    assert CALLS.count == 1


def test_cache_predictions_names_a_wrong_argument():
    with pytest.raises(ValueError, match="enabled: expected True or False"):
        inference.cache_predictions("yes")


# ---------------------------------------------------------------------------------------------
# Plots: rate-distortion plane, latent grids over given bounds
# ---------------------------------------------------------------------------------------------

RATE_ROWS = [
    {"kl_weight": 0.1, "kl": 9.0, "kl_se": 0.2, "reconstruction": 140.0,
     "reconstruction_se": 1.0, "neg_elbo": 149.0, "n": 1000},
    {"kl_weight": 1.0, "kl": 6.0, "kl_se": 0.1, "reconstruction": 145.0,
     "reconstruction_se": 0.8, "neg_elbo": 151.0, "n": 1000},
    {"kl_weight": 5.0, "kl": 2.5, "kl_se": 0.05, "reconstruction": 160.0,
     "reconstruction_se": 1.2, "neg_elbo": 162.5, "n": 1000},
]


def test_plot_rate_distortion_lines_of_equal_elbo():
    figure = figures.plot_rate_distortion(RATE_ROWS)
    (axis,) = figure.axes
    dashed = [line for line in axis.lines if line.get_linestyle() == "--"]
    assert len(dashed) == len(RATE_ROWS)
    for line, row in zip(dashed, RATE_ROWS):
        x, y = (np.asarray(v, float) for v in line.get_data())
        np.testing.assert_allclose(x + y, row["neg_elbo"], rtol=1e-12)
    # No segments of slope -weight: that a model sits where the frontier has its weight's
    # slope holds only at the objective's optimum, which these models may not reach.
    assert not [line for line in axis.lines
                if line.get_linestyle() == "-" and len(line.get_xdata()) == 2]
    _, labels = axis.get_legend_handles_labels()
    assert labels == ["equal negative ELBO", "KL weight 0.1: negative ELBO 149.0",
                      "KL weight 1: negative ELBO 151.0", "KL weight 5: negative ELBO 162.5"]
    assert "rate" in axis.get_xlabel() and "distortion" in axis.get_ylabel()


def test_plot_rate_distortion_error_bars_are_95_percent_intervals():
    figure = figures.plot_rate_distortion(RATE_ROWS)
    (axis,) = figure.axes
    quantile = stats.t.ppf(0.975, 999)
    for container, row in zip(axis.containers, RATE_ROWS):
        horizontal, vertical = container.lines[2]
        (x0, y0), (x1, _) = horizontal.get_segments()[0]
        assert (x1 - x0) / 2 == pytest.approx(quantile * row["kl_se"])
        assert y0 == pytest.approx(row["reconstruction"])
        (_, y0), (_, y1) = vertical.get_segments()[0]
        assert (y1 - y0) / 2 == pytest.approx(quantile * row["reconstruction_se"])


def test_plot_rate_distortion_needs_rows():
    with pytest.raises(ValueError, match="rows: expected at least one row of the sweep"):
        figures.plot_rate_distortion([])


def tick_values(axis, which: str) -> tuple[np.ndarray, np.ndarray]:
    get_ticks, get_labels = ((axis.get_xticks, axis.get_xticklabels) if which == "x"
                             else (axis.get_yticks, axis.get_yticklabels))
    labels = np.array([float(label.get_text().replace("\u2212", "-")) for label in get_labels()])
    return np.asarray(get_ticks(), float), labels


@pytest.mark.parametrize("bounds", [((-1.0, 3.0), (0.5, 2.0)), ((10.0, 12.0), (-6.0, -1.0))])
def test_plot_latent_grids_ticks_follow_the_bounds(bounds):
    rng = np.random.default_rng(0)
    decoder = linear_decoder(rng.normal(size=784), np.zeros(784), rng.normal(size=784))
    points = 9
    figure = figures.plot_latent_grids({"vae": decoder}, points_per_side=points,
                                   bounds={"vae": bounds})
    (axis,) = figure.axes
    (x_low, x_high), (y_low, y_high) = bounds
    positions, labels = tick_values(axis, "x")
    assert len(labels) >= 2 and labels.min() >= x_low and labels.max() <= x_high
    # The centre of tile i (pixel 28 i + 13.5) sits at low + i (high - low) / (points - 1).
    np.testing.assert_allclose(x_low + (positions - 13.5) / 28 * (x_high - x_low) / (points - 1),
                               labels, atol=1e-6)
    positions, labels = tick_values(axis, "y")
    assert len(labels) >= 2 and labels.min() >= y_low and labels.max() <= y_high
    # Rows run from high z[1] at the top.
    np.testing.assert_allclose(y_high - (positions - 13.5) / 28 * (y_high - y_low) / (points - 1),
                               labels, atol=1e-6)
    # The top-left tile decodes (z0 low, z1 high).
    grid = np.asarray(axis.images[0].get_array())
    np.testing.assert_allclose(grid[:28, :28], np.asarray(decoder(np.array(
        [[x_low, y_high]], np.float32)))[0, ..., 0], atol=1e-6)


def test_plot_latent_grids_rejects_bounds_for_other_runs():
    decoder = linear_decoder(np.zeros(784), np.zeros(784))
    with pytest.raises(ValueError, match=r"bounds: expected bounds for \['a'\]"):
        figures.plot_latent_grids({"a": decoder}, bounds={"b": ((0, 1), (0, 1))})

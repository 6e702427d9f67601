"""log p(x) by importance sampling and by quadrature (ca4lib.likelihood) against independent
computations with known answers (a decoder that ignores z, Gaussian-shaped integrands with a
closed form, a 1-D model integrated with SciPy), the nested K sweep, and the rows and the
checks they summarise on constructed estimates. (The paragraph and its tables:
test_discussion_likelihood.py.)"""

from __future__ import annotations

import functools
import json
import math
import re

import keras
import numpy as np
import pytest
from keras import ops
from scipy import integrate, stats
from test_estimates import sd_over_root_n
from test_models import (
    constant_posterior_vae,
    fitted_encoder,
    linear_decoder,
    numpy_log_likelihood,
    uniform_images,
)

import ca4_helpers as ca4
from ca4lib import estimates, likelihood, progress, vae_analyses
from ca4lib.estimates import Estimate

LOG_ROOT_2PI = 0.5 * math.log(2 * math.pi)
COARSE = likelihood.COARSE_POINTS
COARSE_STEP = 2 * likelihood.COARSE_EXTENT / COARSE
ONES = np.ones((1, 28, 28, 1), np.float32)


class GaussianBumps(keras.layers.Layer):
    """Every pixel is p(z) = g(z)^(1/784), g(z) = sum_i w_i exp(-sum_d (z_d - a_id)^2 / (2 s_id^2)):
    an image of ones then has log p(x|z) = log g(z) (up to Keras' clipping at 1 - 1e-7, a few
    1e-5 nats), and log p(x) has a closed form (`bumps_log_likelihood`)."""

    def __init__(self, centres, scales, weights, **kwargs):
        super().__init__(**kwargs)
        self.centres = np.asarray(centres, np.float32)
        self.scales = np.asarray(scales, np.float32)
        self.log_weights = np.log(np.asarray(weights, np.float32))

    def call(self, z):
        exponents = -0.5 * ops.sum(ops.square((z[:, None, :] - self.centres) / self.scales),
                                   axis=-1) + self.log_weights
        pixel = ops.exp(ops.logsumexp(exponents, axis=1) / 784.0)
        return ops.reshape(pixel, (-1, 1, 1, 1)) * ops.ones((1, 28, 28, 1))


def bumps_decoder(centres, scales, weights=(1.0,)) -> keras.Model:
    latent = keras.Input((2,))
    return keras.Model(latent, GaussianBumps(centres, scales, weights)(latent))


def bumps_log_likelihood(centres, scales, weights=(1.0,)) -> float:
    """log of the integral of g(z) N(z; 0, I): per bump and dimension,
    the integral of exp(-(z - a)^2 / (2 s^2)) N(z; 0, 1) = s / sqrt(1 + s^2) exp(-a^2 / (2 (1 + s^2)))."""
    a, s = np.asarray(centres, float), np.asarray(scales, float)
    terms = np.log(np.asarray(weights, float)) + np.sum(
        np.log(s / np.sqrt(1 + s ** 2)) - a ** 2 / (2 * (1 + s ** 2)), axis=1)
    return float(np.logaddexp.reduce(terms))


# ---------------------------------------------------------------------------------------------
# Importance sampling: exact cases, nested K
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def decoder_ignoring_z():
    """A VAE whose q(z|x) is the prior and whose decoder's output does not depend on z:
    p(x) = p(x|z) for any z, exactly."""
    model = constant_posterior_vae([0.0, 0.0], [0.0, 0.0])
    pixels = model.decoder.get_layer("pixels")
    pixels.kernel.assign(np.zeros(pixels.kernel.shape, np.float32))
    pixels.bias.assign(np.array([-0.7], np.float32))
    images = uniform_images(3, seed=5)
    images[0] = np.round(images[0])
    probabilities = np.asarray(model.decoder(np.zeros((1, 2), np.float32)))
    np.testing.assert_allclose(probabilities, 1 / (1 + math.exp(0.7)), rtol=1e-6)
    exact = numpy_log_likelihood(images, np.repeat(probabilities, 3, axis=0))[:, 0]
    return model, images, exact


def test_importance_sampling_is_exact_when_q_is_the_posterior(decoder_ignoring_z):
    model, images, exact = decoder_ignoring_z
    found = likelihood.importance_log_likelihood(model, images, samples=(8, 64), seed=0)
    # Every importance weight is p(x|z) p(z) / q(z) = p(x): no Monte Carlo error at any K; the
    # float32 sum over 784 pixels of terms near -0.7 rounds at about 1e-4.
    assert found["samples"].tolist() == [8, 64]
    assert found["log_likelihood_by_samples"].shape == (2, 3)
    np.testing.assert_allclose(found["log_likelihood_by_samples"], [exact, exact], rtol=0, atol=2e-3)
    np.testing.assert_array_equal(found["log_likelihood"], found["log_likelihood_by_samples"][-1])
    np.testing.assert_allclose(found["elbo"], exact, rtol=0, atol=2e-3)  # no variational gap
    assert found["decodes"] == 3 * 64
    other = likelihood.importance_log_likelihood(model, images, samples=8, seed=1, codes_per_call=5)
    np.testing.assert_allclose(other["log_likelihood"], found["log_likelihood"], atol=1e-9)


@pytest.fixture(scope="module")
def skewed_vae():
    """A VAE whose q(z|x) (the same for every image) is not the posterior of its decoder."""
    return constant_posterior_vae([0.3, -0.2], [-1.0, -0.5])


def test_nested_samples_are_the_first_draws_of_the_largest(skewed_vae):
    images = uniform_images(3, seed=2)
    nested = likelihood.importance_log_likelihood(skewed_vae, images, samples=(10, 30), seed=4)
    alone = {count: likelihood.importance_log_likelihood(skewed_vae, images, samples=count, seed=4)
             for count in (10, 30)}
    # The first 10 of the 30 draws are the 10 draws: the same estimate, to the last bit of the
    # decoder's arithmetic, whatever the batching.
    np.testing.assert_allclose(nested["log_likelihood_by_samples"][0],
                               alone[10]["log_likelihood"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(nested["log_likelihood_by_samples"][1],
                               alone[30]["log_likelihood"], rtol=0, atol=1e-5)
    batched = likelihood.importance_log_likelihood(skewed_vae, images, samples=(10, 30), seed=4,
                                                   codes_per_call=7)
    np.testing.assert_allclose(batched["log_likelihood_by_samples"],
                               nested["log_likelihood_by_samples"], rtol=0, atol=1e-5)
    # The estimate moves with K here, and with the seed.
    assert not np.allclose(nested["log_likelihood_by_samples"][0], nested["log_likelihood_by_samples"][1])
    other_seed = likelihood.importance_log_likelihood(skewed_vae, images, samples=10, seed=5)
    assert not np.allclose(other_seed["log_likelihood"], alone[10]["log_likelihood"])


def test_image_noise_is_a_stream_per_image_and_seed():
    long, short = likelihood.image_noise(7, 3, 50), likelihood.image_noise(7, 3, 20)
    np.testing.assert_array_equal(long[:20], short)
    assert not np.allclose(likelihood.image_noise(7, 4, 20), short)
    assert not np.allclose(likelihood.image_noise(8, 3, 20), short)


@pytest.mark.parametrize("samples, match", [((), "at least one size"), ((30, 10), "increasing"),
                                            ((10, 10), "increasing"), (0, "positive integer")])
def test_importance_sampling_names_wrong_sample_sizes(skewed_vae, samples, match):
    with pytest.raises(ValueError, match=f"samples: expected .*{match}"):
        likelihood.importance_log_likelihood(skewed_vae, uniform_images(1), samples=samples)


def test_importance_sampling_prints_progress(skewed_vae, patch_lookup, capsys):
    patch_lookup(likelihood.importance_log_likelihood, "Ticker",
                 functools.partial(progress.Ticker, every=0.0))
    likelihood.importance_log_likelihood(skewed_vae, uniform_images(3), samples=(4, 8),
                                         codes_per_call=16)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[1] for line in lines] == [" K = 8: 2/3 done", " K = 8: 3/3 done"]
    assert all(progress.TICKER_LINE.match(line) for line in lines)


# ---------------------------------------------------------------------------------------------
# Quadrature against exact integrals
# ---------------------------------------------------------------------------------------------


def test_quadrature_is_exact_when_the_decoder_ignores_z(decoder_ignoring_z):
    model, images, exact = decoder_ignoring_z
    found = likelihood.quadrature_log_likelihood(model.decoder, images, points_per_side=(16, 32))
    # The coarse grid holds all but 1e-23 of the prior's mass, [-10, 10]^2, and the midpoint rule
    # over the whole grid is exact to far less for a Gaussian at this step.
    np.testing.assert_allclose(found["coarse_log_likelihood"], exact, rtol=0, atol=1e-5)
    # The window reaches six of the prior's standard deviations (LEVEL_NATS = 18).
    np.testing.assert_allclose(found["log_likelihood_by_points"], [exact, exact], rtol=0, atol=1e-4)
    np.testing.assert_allclose(found["half_width"], 6.05, atol=COARSE_STEP)
    assert found["points"].tolist() == [16, 32]
    assert found["coarse_step"] == pytest.approx(COARSE_STEP)
    assert found["covered"].tolist() == [True, True, True]
    assert found["decodes"] == likelihood.COARSE_POINTS ** 2 + 3 * (16 ** 2 + 32 ** 2)


@pytest.mark.parametrize("centre, scales", [
    ((0.731, -1.204), (0.05, 0.2)),  # narrow in one dimension, off the grid's points
    ((2.5, 1.0), (0.3, 0.03)),
    ((-0.2, 0.4), (0.6, 0.6)),
    ((0.0, 0.0), (3.0, 3.0)),  # about the prior
    ((1.0, -0.5), (3.0, 0.01)),  # as broad as the prior in one dimension, narrow in the other
])
def test_quadrature_matches_a_closed_form_gaussian_integrand(centre, scales):
    found = likelihood.quadrature_log_likelihood(bumps_decoder([centre], [scales]), ONES)
    assert found["log_likelihood"][0] == pytest.approx(bumps_log_likelihood([centre], [scales]),
                                                       abs=1e-3)
    assert found["covered"].tolist() == [True]
    # The window is centred on the coarse cell of the integrand's peak, a / (1 + s^2).
    peak = np.asarray(centre) / (1 + np.square(scales))
    assert np.all(np.abs(found["centre"][0] - peak) <= COARSE_STEP)


def test_quadrature_resolves_a_posterior_much_narrower_than_the_coarse_step():
    centre, scales = [(0.731, -1.204)], [(0.01, 0.01)]
    exact = bumps_log_likelihood(centre, scales)
    found = likelihood.quadrature_log_likelihood(bumps_decoder(centre, scales), ONES,
                                                 points_per_side=(16, 32, 64))
    # A global grid alone misses the peak between its points by nats ...
    assert abs(found["coarse_log_likelihood"][0] - exact) > 1.0
    # ... the local grid over a window of the minimum size (5 coarse cells) gets it right
    # once its step (0.0146 at 32 points) is near the posterior's 0.01,
    np.testing.assert_allclose(found["half_width"][0],
                               (likelihood.MIN_WINDOW_CELLS + 0.5) * COARSE_STEP)
    np.testing.assert_allclose(found["local_step"][0], 5 * COARSE_STEP / 64)
    assert found["log_likelihood_by_points"][1, 0] == pytest.approx(exact, abs=1e-3)
    assert found["log_likelihood_by_points"][2, 0] == pytest.approx(exact, abs=1e-4)
    # ... and halving the step shows which sizes have converged: 16 points do not.
    by_points = found["log_likelihood_by_points"][:, 0]
    assert abs(by_points[1] - by_points[0]) > 0.1 > 1e-3 > abs(by_points[2] - by_points[1])
    assert found["outside_share"][0] < 1e-20  # nothing of it lies outside the window


@pytest.mark.parametrize("larger", [0, 1])
def test_quadrature_of_a_bimodal_integrand_centres_on_the_higher_peak(larger):
    # A narrow mode and a broad one, apart: the narrow one peaks higher. Its mass is larger
    # (larger = 0) or, with a tenth of the weight, smaller (larger = 1), but the coarse grid
    # finds the highest point, which stays the narrow one's in both cases; the window holds
    # that mode, and the broad one, which the coarse step resolves, is counted outside it.
    centres, scales = [(1.0, 1.5), (-1.8, -1.2)], [(0.05, 0.05), (0.4, 0.4)]
    weights = (1.0, 1 / 200) if larger == 0 else (0.1, 1 / 30)
    exact = bumps_log_likelihood(centres, scales, weights)
    shares = np.exp([bumps_log_likelihood([c], [s], [w]) - exact
                     for c, s, w in zip(centres, scales, weights)])
    assert np.argmax(shares) == larger
    found = likelihood.quadrature_log_likelihood(bumps_decoder(centres, scales, weights), ONES)
    assert found["log_likelihood"][0] == pytest.approx(exact, abs=1e-3)
    peak = np.asarray(centres[0]) / (1 + np.square(scales[0]))
    assert np.all(np.abs(found["centre"][0] - peak) <= COARSE_STEP)
    assert np.all(found["half_width"][0] < 0.5)  # the narrow mode's six sigmas, in cells
    assert found["outside_share"][0] == pytest.approx(shares[1], rel=1e-3)


def test_an_integrand_beyond_the_coarse_grid_is_not_covered():
    # Ones peak near z = (11, 0), beyond the coarse grid's edge at 10; zeros are likely where p
    # is small, everywhere but there: the integrand is about the prior's.
    images = np.concatenate([ONES, np.zeros_like(ONES)])
    found = likelihood.quadrature_log_likelihood(bumps_decoder([(11.0, 0.0)], [(0.05, 0.05)]),
                                                 images, points_per_side=16)
    assert found["coarse_edge"].tolist() == [True, False]
    assert found["covered"].tolist() == [False, True]
    assert found["centre"][0, 0] == pytest.approx(likelihood.COARSE_EXTENT - COARSE_STEP / 2)
    # The zeros' log p(x) = log of the integral of (1 - p(z))^784 N(z; 0, I), p clipped as
    # Keras does, on a fine grid here (the integrand varies over distances of about 1).
    axis = np.linspace(-12, 12, 2401)
    z = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1)
    pixel = np.clip(np.exp(-np.sum((z - (11.0, 0.0)) ** 2, axis=-1) / (2 * 0.05 ** 2 * 784)),
                    1e-7, 1 - 1e-7)
    integrand = np.exp(784 * np.log1p(-pixel) - 0.5 * np.sum(z ** 2, axis=-1)) / (2 * np.pi)
    exact = math.log(integrand.sum() * (axis[1] - axis[0]) ** 2)
    assert found["log_likelihood"][1] == pytest.approx(exact, abs=1e-5)


def test_an_integrand_reaching_the_coarse_grid_edge_is_not_covered():
    # The integrand is N(z0; 8.5, 0.7^2) N(z1; 0, 0.7^2) up to a constant: its peak lies
    # well inside the grid, but 0.7% of its coarse mass lies on the outer ring of cells.
    found = likelihood.quadrature_log_likelihood(bumps_decoder([(16.66, 0.0)], [(0.98, 0.98)]),
                                                 ONES, points_per_side=16)
    assert found["centre"][0, 0] == pytest.approx(8.5, abs=COARSE_STEP)
    assert 1e-3 < found["edge_share"][0]
    assert found["coarse_edge"].tolist() == [True] and found["covered"].tolist() == [False]
    inside = likelihood.quadrature_log_likelihood(bumps_decoder([(4.0, 0.0)], [(0.98, 0.98)]),
                                                  ONES, points_per_side=16)
    assert inside["edge_share"][0] < likelihood.EDGE_SHARE and inside["covered"].tolist() == [True]


@pytest.mark.parametrize("arguments, match", [
    ({"points_per_side": (32, 16)}, "points_per_side: expected increasing sizes"),
    ({"coarse_points": 6}, "coarse_points: expected at least 7"),
    ({"extent": 0.0}, "extent: expected a number > 0"),
    ({"codes_per_call": 0}, "codes_per_call: expected a positive integer")])
def test_quadrature_names_a_wrong_argument(arguments, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        likelihood.quadrature_log_likelihood(bumps_decoder([(0, 0)], [(1, 1)]), ONES, **arguments)


def test_quadrature_prints_progress(patch_lookup, capsys):
    patch_lookup(likelihood.quadrature_log_likelihood, "Ticker",
                 functools.partial(progress.Ticker, every=0.0))
    likelihood.quadrature_log_likelihood(bumps_decoder([(0, 0)], [(1, 1)]),
                                         np.repeat(ONES, 2, axis=0), points_per_side=(4, 8),
                                         codes_per_call=64)
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith(f"  quadrature, codes decoded (a coarse grid of {COARSE}x{COARSE}, "
                                f"local grids of 4 and 8 points per side)")
    # In codes decoded: the coarse grid's (its pass over both images at once), then one line
    # per call: two images at 4 x 4 points, one image at 8 x 8.
    done = [COARSE ** 2, COARSE ** 2 + 32, COARSE ** 2 + 96, COARSE ** 2 + 160]
    assert [line.split(": ")[1].split(" done")[0] for line in lines] == [
        f"{count}/{done[-1]}" for count in done]
    assert all(progress.TICKER_LINE.match(line) for line in lines)


@pytest.fixture(scope="module")
def one_dimensional_model():
    """A decoder that reads z[0] only, two binary images drawn from it, the exact log p(x)
    by scipy.integrate.quad, and each image's posterior mean and variance in z[0]."""
    rng = np.random.default_rng(0)
    w0, bias = rng.normal(0.0, 0.15, 784), rng.normal(0.0, 0.5, 784)
    decoder = linear_decoder(w0, bias)
    weights = decoder.layers[1].get_weights()
    w0, bias = weights[0][0].astype(np.float64), weights[1].astype(np.float64)  # as stored
    images = np.stack([rng.uniform(size=784) < 1 / (1 + np.exp(-(w0 * z + bias)))
                       for z in (0.8, -0.5)]).astype(np.float32).reshape(2, 28, 28, 1)

    def log_px_given(x: np.ndarray, z0: np.ndarray) -> np.ndarray:
        logits = np.multiply.outer(z0, w0) + bias
        return (x * -np.logaddexp(0, -logits) + (1 - x) * -np.logaddexp(0, logits)).sum(-1)

    exact, moments = [], []
    for image in images.reshape(2, -1).astype(np.float64):
        grid = np.linspace(-8, 8, 4001)
        log_joint = log_px_given(image, grid) + stats.norm.logpdf(grid)
        mode, top = grid[np.argmax(log_joint)], log_joint.max()

        def density(z, power=0, image=image, top=top, mode=mode):
            value = math.exp(log_px_given(image, np.array([z]))[0] - 0.5 * z * z - LOG_ROOT_2PI
                             - top)
            return value * (z - mode) ** power

        mass = integrate.quad(density, -12, 12, points=[mode], epsabs=0, epsrel=1e-11,
                              limit=200)[0]
        first = integrate.quad(density, -12, 12, args=(1,), points=[mode], epsabs=0,
                               epsrel=1e-11, limit=200)[0] / mass
        second = integrate.quad(density, -12, 12, args=(2,), points=[mode], epsabs=0,
                                epsrel=1e-11, limit=200)[0] / mass
        exact.append(top + math.log(mass))
        moments.append((mode + first, second - first ** 2))
    return {"decoder": decoder, "images": images, "exact": np.array(exact),
            "posterior": np.array(moments), "log_px_given": log_px_given}


def test_one_dimensional_posteriors_are_narrower_than_the_prior(one_dimensional_model):
    posterior = one_dimensional_model["posterior"]
    # The construction gives posteriors narrower than the prior in z[0], which differ.
    assert np.all((0.05 < posterior[:, 1]) & (posterior[:, 1] < 0.5))
    assert abs(posterior[0, 0] - posterior[1, 0]) > 0.5


def test_quadrature_matches_the_exact_integral(one_dimensional_model):
    # In z[1] the integrand is the prior's: the window reaches six of its standard deviations.
    model = one_dimensional_model
    found = likelihood.quadrature_log_likelihood(model["decoder"], model["images"])
    np.testing.assert_allclose(found["log_likelihood"], model["exact"], rtol=0, atol=1e-3)
    assert found["covered"].tolist() == [True, True]
    np.testing.assert_allclose(found["centre"][:, 0], model["posterior"][:, 0], atol=COARSE_STEP)
    assert np.all(found["outside_share"] < 1e-6)


def test_importance_sampling_matches_the_exact_integral(one_dimensional_model):
    model = one_dimensional_model
    images, posterior = model["images"], model["posterior"]
    z_mean = np.stack([posterior[:, 0], np.zeros(2)], axis=1)
    z_log_var = np.stack([np.log(posterior[:, 1]), np.zeros(2)], axis=1)
    vae = ca4.VariationalAutoencoder(fitted_encoder(images, z_mean, z_log_var), model["decoder"])
    mean, log_var = vae_analyses.vae_encode(vae, images)
    np.testing.assert_allclose(mean, z_mean, atol=1e-4)
    np.testing.assert_allclose(log_var, z_log_var, atol=1e-4)
    samples = 2000
    found = likelihood.importance_log_likelihood(vae, images, samples=(500, samples), seed=0)
    # The tolerance: with weights w = p(x, z) / q(z), the estimate log mean(w) has a standard
    # deviation of about sqrt(rho / K) and a bias of about -rho / (2 K), where
    # rho = Var_q(w) / E_q[w]^2 = integral of p(z0|x)^2 / q(z0) - 1 (z[1] cancels: there q is
    # the prior and the decoder ignores it). rho is computed here for each image, by quadrature.
    tolerances = []
    for image, (m, v), exact in zip(images.reshape(2, -1), zip(mean[:, 0], np.exp(log_var[:, 0])),
                                    model["exact"]):
        def ratio(z, image=image, m=m, v=v, exact=exact):
            log_posterior = (model["log_px_given"](image.astype(np.float64), np.array([z]))[0]
                             + stats.norm.logpdf(z) - exact)
            return math.exp(2 * log_posterior - stats.norm.logpdf(z, m, math.sqrt(v)))

        rho = integrate.quad(ratio, m - 12 * math.sqrt(v), m + 12 * math.sqrt(v), epsabs=0,
                             epsrel=1e-9, limit=200)[0] - 1
        assert 0 <= rho < 0.05  # q is close to the posterior
        # 5 standard deviations, the bias, and 2e-3 for the float32 sum over 784 pixels.
        tolerances.append(5 * math.sqrt(rho / samples) + rho / (2 * samples) + 2e-3)
    assert max(tolerances) < 0.03
    np.testing.assert_array_less(np.abs(found["log_likelihood"] - model["exact"]), tolerances)
    # The ELBO of the same samples lies below log p(x) by KL(q || posterior) >= 0.
    assert np.all(found["elbo"] <= found["log_likelihood"])


# ---------------------------------------------------------------------------------------------
# Rows: headline, difference with median and tails, K sweep, step check, excluded images
# ---------------------------------------------------------------------------------------------


IMAGES = 200


def constructed(shift: float = 0.05, offset: float = 0.0, covered: np.ndarray | None = None,
                step: float = 0.01, sweep: tuple[float, ...] = (-0.5, -0.2), seed: int = 0):
    """Importance and quadrature results of IMAGES images: quadrature = importance at its
    largest K + shift + noise, importance at smaller K lower by the sweep's steps, the finer
    quadrature `step` above the coarser one."""
    rng = np.random.default_rng(seed)
    log_likelihood = -150.0 + offset + rng.normal(0.0, 10.0, IMAGES)
    by_samples = np.stack([log_likelihood + sum(sweep[index:]) + rng.normal(0, 0.01, IMAGES)
                           for index in range(len(sweep))] + [log_likelihood])
    importance = {"log_likelihood": log_likelihood, "log_likelihood_by_samples": by_samples,
                  "samples": np.array([100, 300, 1000][-len(by_samples):]),
                  "elbo": log_likelihood - rng.uniform(1.0, 3.0, IMAGES)}
    fine = log_likelihood + shift + rng.normal(0.0, 0.01, IMAGES)
    quadrature = {"log_likelihood": fine,
                  "log_likelihood_by_points": np.stack([fine - step, fine]),
                  "points": np.array([16, 32]),
                  "covered": np.ones(IMAGES, bool) if covered is None else covered,
                  "local_step": np.full((IMAGES, 2), 0.02), "coarse_step": COARSE_STEP,
                  "coarse_points": 128, "extent": 6.0}
    return importance, quadrature


def test_likelihood_row_of_constructed_estimates():
    covered = np.arange(IMAGES) % 10 != 0  # nine images in ten
    importance, quadrature = constructed(covered=covered)
    quadrature["log_likelihood"][5] += 40.0  # one image's tail
    floor = np.linspace(80.0, 120.0, 300)  # longer than the images: its first 200 count
    row = likelihood.likelihood_row(importance, quadrature, floor)
    assert (row["likelihood_images"], row["n"], row["excluded"], row["uncovered"]) == (
        IMAGES, 180, 20, 20)
    difference = (quadrature["log_likelihood"] - importance["log_likelihood"])[covered]
    expected = {"": difference.mean(), "_se": sd_over_root_n(difference),
                "_median": np.median(difference), "_min": difference.min(),
                "_max": difference.max(), "_p01": np.percentile(difference, 1),
                "_p99": np.percentile(difference, 99)}
    assert {end: row[f"quadrature_minus_importance{end}"] for end in expected} == pytest.approx(expected)
    assert row["quadrature_minus_importance_max"] > 39 > 0.1 > row["quadrature_minus_importance_median"]
    # The K sweep: -log p(x) at each K and the paired change from one K to the next.
    nll = -importance["log_likelihood_by_samples"][:, covered]
    assert row["importance_sizes"] == [100, 300, 1000]
    assert row["importance_nll_by_size"] == pytest.approx(nll.mean(axis=1).tolist())
    assert row["importance_nll_by_size_se"] == pytest.approx([sd_over_root_n(v) for v in nll])
    assert row["importance_change_by_size"] == pytest.approx([-0.5, -0.2], abs=0.01)
    assert row["importance_change_by_size_se"][1] == pytest.approx(sd_over_root_n(nll[2] - nll[1]))
    # The step check: halving the step moved every image by 0.01 nats.
    assert row["step_change"] == pytest.approx(0.01)
    assert row["quadrature_change_by_size_max_abs"] == pytest.approx([0.01])
    assert row["quadrature_change_by_size"] == pytest.approx([-0.01])
    # Quadrature converged: the headline. The one image's 40-nat tail widens the mean's
    # interval past zero, so it is not clearly above importance sampling, though 0.05 above
    # it for every other image.
    assert (row["estimate"], row["estimate_reason"]) == ("quadrature", "agree")
    assert likelihood.likelihood_row(*constructed(covered=covered), floor)["estimate_reason"] == "above"
    headline = quadrature["log_likelihood"][covered]
    assert row["test_log_likelihood"] == pytest.approx(headline.mean())
    assert row["test_log_likelihood_se"] == pytest.approx(sd_over_root_n(headline))
    assert row["importance_nll"] == pytest.approx(-importance["log_likelihood"][covered].mean())
    assert row["quadrature_nll"] == pytest.approx(-headline.mean())
    gap = headline - importance["elbo"][covered]
    assert row["variational_gap"] == pytest.approx(gap.mean())
    assert row["variational_gap_se"] == pytest.approx(sd_over_root_n(gap))
    assert row["floor"] == pytest.approx(floor[:IMAGES][covered].mean())
    assert row["local_step_median"] == row["local_step_max"] == 0.02


@pytest.mark.parametrize("step, difference, expected", [
    (None, (0.5, 0.01), ("importance", "unchecked")),
    (0.3, (0.5, 0.01), ("importance", "step")),
    (0.01, (-0.5, 0.01), ("importance", "below")),
    (0.01, (-0.02, 0.005), ("importance", "below")),  # clearly below, if within tolerance
    (0.01, (0.5, 0.01), ("quadrature", "above")),
    (0.1, (0.01, 0.01), ("quadrature", "agree")),  # at the tolerance: converged
    (0.01, (-0.05, 0.2), ("quadrature", "agree")),
])
def test_better_estimate_follows_the_checks(step, difference, expected):
    assert likelihood.better_estimate(step, Estimate(*difference, 1000)) == expected


def test_likelihood_rows_leave_out_uncovered_images_at_every_weight_and_measure_against_the_best():
    importance, quadrature = {}, {}
    for index, (weight, offset) in enumerate(((0.1, -5.0), (1.0, 0.0), (5.0, -20.0))):
        covered = np.ones(IMAGES, bool)
        covered[index] = False  # one image at each weight: three left out of every row
        importance[weight], quadrature[weight] = constructed(offset=offset, covered=covered)
    rows = likelihood.likelihood_rows(importance, quadrature, np.full(IMAGES, 90.0))
    assert [row["kl_weight"] for row in rows] == [0.1, 1.0, 5.0]
    assert {(row["n"], row["excluded"], row["uncovered"]) for row in rows} == {(197, 3, 1)}
    # The same per-image noise (seed 0) for every weight: the differences are the offsets.
    assert [row["nll_above_best"] for row in rows] == pytest.approx([5.0, 0.0, 20.0])
    assert [row["nll_above_best_se"] for row in rows] == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)
    used = np.arange(IMAGES) >= 3
    assert rows[1]["test_log_likelihood"] == pytest.approx(
        quadrature[1.0]["log_likelihood"][used].mean())
    with pytest.raises(ValueError, match="quadrature_by_weight: expected the weights"):
        likelihood.likelihood_rows(importance, {1.0: quadrature[1.0]}, np.full(IMAGES, 90.0))


def test_a_one_size_quadrature_takes_the_experiments_step_check_for_it():
    importance, quadrature = constructed(step=0.02)
    floor = np.full(IMAGES, 90.0)
    checks = likelihood.sweep_checks(importance, quadrature, np.ones(IMAGES, bool))
    coarser = quadrature["log_likelihood_by_points"][:1]
    one = {**quadrature, "log_likelihood": coarser[0], "log_likelihood_by_points": coarser,
           "points": np.array([16])}
    unchecked = likelihood.likelihood_row(importance, one, floor)
    assert (unchecked["estimate"], unchecked["estimate_reason"]) == ("importance", "unchecked")
    assert unchecked["step_change"] is None and unchecked["quadrature_change_by_size"] == []
    assert unchecked["test_log_likelihood"] == pytest.approx(importance["log_likelihood"].mean())
    step_check = likelihood.experiment_step_check(checks, 16)
    row = likelihood.likelihood_row(importance, one, floor, step_check=step_check)
    assert (row["step_check_source"], row["quadrature_points"]) == ("experiment", 16)
    assert row["quadrature_sizes"] == [16, 32] and row["step_change"] == pytest.approx(0.02)
    assert row["estimate"] == "quadrature"
    assert row["quadrature_nll"] == pytest.approx(-coarser[0].mean())
    assert row["step_check_offset"] == 0.0
    # The tolerance is the standard error of the experiment's mean: 10-nat noise over 200 images.
    assert row["step_check_tolerance"] == pytest.approx(
        np.std(-coarser[0], ddof=1) / np.sqrt(IMAGES))
    rows = likelihood.likelihood_rows({1.0: importance}, {1.0: one}, floor, {1.0: step_check})
    assert rows[0]["step_check_source"] == "experiment" and rows[0]["step_check_refused"] is None
    # The same models trained on another CPU: a few hundredths of a nat lower, still checked.
    rounded = {**one, "log_likelihood_by_points": coarser + 0.05}
    row = likelihood.likelihood_row(importance, rounded, floor, step_check=step_check)
    assert row["step_check_source"] == "experiment"
    assert row["step_check_offset"] == pytest.approx(-0.05)
    # Other models (-log p(x) 2 nats lower, beyond the SE of about 0.7) at one of two weights:
    # no weight takes the experiment's check, and every row says which weight refused it.
    other = {**one, "log_likelihood_by_points": coarser + 2.0}
    rows = likelihood.likelihood_rows({1.0: importance, 5.0: importance},
                                      {1.0: one, 5.0: other}, floor,
                                      {1.0: step_check, 5.0: step_check})
    assert [row["step_check_source"] for row in rows] == [None, None]
    assert [row["estimate_reason"] for row in rows] == ["unchecked", "unchecked"]
    assert rows[0]["step_check_refused"] == rows[1]["step_check_refused"]
    assert rows[0]["step_check_refused"]["kl_weight"] == 5.0
    assert rows[0]["step_check_refused"]["offset"] == pytest.approx(-2.0)
    # A check of another grid size or image count is an error, not a refusal.
    with pytest.raises(ValueError, match="step_check: expected the experiment's check"):
        likelihood.likelihood_row(importance, one, floor,
                                  step_check={**step_check, "n": IMAGES - 1})
    with pytest.raises(ValueError, match="points: expected a size whose double"):
        likelihood.experiment_step_check(checks, 32)


def test_checked_settings_read_the_experiment_or_fall_back_to_the_defaults(tmp_path):
    path = tmp_path / "likelihood_checks.json"
    assert likelihood.checked_settings("full", path=path)["source"] == "defaults"
    path.write_text(json.dumps({
        "profile": "full", "commit": "abc", "date": "2026-12-06",
        "recommended": {"samples": [100, 300], "points_per_side": [16, 32]},
        "by_weight": {"0.1": {"checks": {"n": 5}}, "5": {"checks": {"n": 6}}}}))
    found = likelihood.checked_settings("full", path=path)
    assert (found["samples"], found["points_per_side"]) == ((100, 300), (16, 32))
    assert found["checks"] == {0.1: {"n": 5}, 5.0: {"n": 6}}
    assert found["source"] == "likelihood_checks.json (abc, 2026-12-06)"
    fallback = likelihood.checked_settings("fast", (30, 100), (8, 16), path=path)
    assert fallback == {"samples": (30, 100), "checks": None, "source": "defaults",
                        "points_per_side": (8, 16)}


@pytest.mark.parametrize("value, se, expected", [
    (0.05, 0.01, "within"), (-0.05, 0.01, "within"), (0.5, 0.02, "beyond"),
    (-0.5, 0.02, "beyond"), (0.09, 0.05, "unclear"), (0.5, 2.0, "unclear")])
def test_agreement_judges_the_interval_not_the_mean(value, se, expected):
    # 1,000 images: the 95 % interval is about +-1.96 SE around the mean difference.
    assert likelihood.agreement_of(estimates.Estimate(value, se, 1000), tolerance=0.1) == expected


def test_sweep_checks_give_every_size_and_the_difference_at_each():
    importance, quadrature = constructed(step=0.3)
    used = np.arange(IMAGES) > 9
    found = likelihood.sweep_checks(importance, quadrature, used)
    assert found["n"] == 190
    assert found["importance_change_agreement"] == ["beyond", "beyond"]
    assert found["quadrature_change_by_size_mean_abs"] == pytest.approx([0.3])
    coarser, finer = found["quadrature_minus_importance_by_size"]
    reference = importance["log_likelihood"][used]
    assert finer["difference"] == pytest.approx(
        (quadrature["log_likelihood"][used] - reference).mean())
    assert coarser["difference_median"] == pytest.approx(
        np.median(quadrature["log_likelihood_by_points"][0][used] - reference))


def checks(k_agreement, p_changes):
    return {"importance_sizes": [100, 300, 1000], "importance_change_agreement": k_agreement,
            "quadrature_sizes": [16, 32, 64], "quadrature_change_by_size_mean_abs": p_changes}


@pytest.mark.parametrize("by_weight, samples, points, converged", [
    ({0.1: checks(["within", "within"], [0.01, 0.001]), 1.0: checks(["within", "within"], [0.02, 0.0])},
     [100, 300], [16, 32], (True, True)),
    ({0.1: checks(["beyond", "within"], [0.5, 0.01]), 1.0: checks(["within", "within"], [0.02, 0.0])},
     [100, 300, 1000], [32, 64], (True, True)),
    ({0.1: checks(["beyond", "unclear"], [0.5, 0.2]), 1.0: checks(["within", "within"], [0.02, 0.0])},
     [100, 300, 1000], [32, 64], (False, False)),
])
def test_recommended_settings_are_the_cheapest_converged_at_every_weight(by_weight, samples, points,
                                                                         converged):
    found = likelihood.recommended_settings(by_weight, images=1000)
    assert (found["samples"], found["points_per_side"]) == (samples, points)
    assert (found["samples_converged"], found["points_converged"]) == converged
    assert found["decodes_per_model"] == {
        "importance": 1000 * samples[-1],
        "quadrature": likelihood.COARSE_POINTS ** 2 + 1000 * sum(p ** 2 for p in points)}


def test_run_settings_take_the_experiments_step_check_or_check_the_grid_themselves():
    checks = {"n": 3, "quadrature_sizes": [8, 16, 32],
              "quadrature_nll_by_size": [101.0, 100.5, 100.49],
              "quadrature_nll_by_size_se": [1.0, 1.0, 1.0],
              "quadrature_change_by_size": [-0.5, -0.01],
              "quadrature_change_by_size_se": [0.1, 0.01],
              "quadrature_change_by_size_mean_abs": [0.5, 0.02],
              "quadrature_change_by_size_max_abs": [2.0, 0.1]}
    checked = {"samples": (100, 300, 1000), "points_per_side": (16, 32),
               "checks": {0.1: checks, 5.0: checks}}
    samples, points, step_checks = likelihood.run_settings(checked, [0.1, 5.0])
    assert (samples, points) == ((100, 300), (16,))
    assert step_checks[5.0]["quadrature_sizes"] == [16, 32]
    assert step_checks[5.0]["quadrature_change_by_size_mean_abs"] == [0.02]
    unchecked = {"samples": (30, 100), "points_per_side": (8, 16), "checks": None}
    assert likelihood.run_settings(unchecked, [0.1]) == ((30, 100), (8, 16), None)

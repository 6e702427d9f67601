"""Task 2's VAE analyses (ca4lib.vae_analyses) on constructed models, terms and data with known
answers: Bernoulli likelihoods and the floor of grey pixels, the aggregate posterior, samples
of the prior, the sweep's rows and the objectives each model is scored on, checked against
NumPy, closed forms and an own bootstrap. (log p(x): test_likelihood.py; latent-space rows:
test_latent_space.py; generation and interpolation: test_generation.py.)"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_estimates import sd_over_root_n
from test_models import numpy_kl, numpy_log_likelihood, uniform_images
from test_report import table_records

import ca4_helpers as ca4
from ca4lib import report, vae_analyses

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
# sample_prior
# ---------------------------------------------------------------------------------------------


def test_sample_prior_is_standard_normal_and_reproducible():
    codes = vae_analyses.sample_prior(20000, seed=3, latent_dim=3)
    assert codes.shape == (20000, 3)
    np.testing.assert_allclose(codes.mean(axis=0), 0.0, atol=0.05)
    np.testing.assert_allclose(np.cov(codes, rowvar=False), np.eye(3), atol=0.05)
    np.testing.assert_array_equal(vae_analyses.sample_prior(50, seed=3, latent_dim=3),
                                  vae_analyses.sample_prior(50, seed=3, latent_dim=3))
    assert not np.allclose(vae_analyses.sample_prior(50, seed=3), vae_analyses.sample_prior(50, seed=4))


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
                   "kl_per_dimension": numpy_kl(z_mean, z_log_var),
                   "kl": numpy_kl(z_mean, z_log_var).sum(axis=1), "z_mean": z_mean,
                   "z_log_var": z_log_var}}
    (row,) = vae_analyses.vae_sweep_rows(terms, {1.0: 3})
    assert row["aggregate_variance"] == pytest.approx([0.25, 1.0])
    assert row["prior_mismatch"] == pytest.approx(0.75)
    assert row["prior_mismatch_se"] == 0.0
    assert row["active_dimensions"] == 0  # no mean moves with the image
    assert row["prior_like_share"] == [0.0, 1.0]


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
# objective_rows
# ---------------------------------------------------------------------------------------------


def test_a_model_beaten_on_its_own_objective():
    # Per image (reconstruction, KL): the weight-5 model pays 150 + 5 x 6.8 = 184; the
    # weight-1 model 142.7 + 5 x 6.3 = 174.2 on the weight-5 objective: it does better there.
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 1.0, 500)

    def terms(reconstruction, kl):
        return {"reconstruction": reconstruction + noise, "kl": np.full(500, kl)}

    rows = vae_analyses.objective_rows({1.0: terms(142.7, 6.3), 5.0: terms(150.0, 6.8)})
    at_one, at_five = rows
    assert at_five["objective"] == 5.0 and at_five["rival"] == 1.0
    assert at_five["own"] == pytest.approx(150.0 + 5 * 6.8 + noise.mean())
    assert at_five["rival_score"] == pytest.approx(142.7 + 5 * 6.3 + noise.mean())
    assert at_five["own_minus_rival"] == pytest.approx(184.0 - 174.2)
    assert at_five["own_minus_rival_se"] == pytest.approx(0.0, abs=1e-9)  # paired: same noise
    # On the weight-1 objective the weight-1 model wins: 149.0 against 156.8.
    assert at_one["own_minus_rival"] == pytest.approx(142.7 + 6.3 - (150.0 + 6.8))


def test_baseline_changes_pair_each_vae_with_the_baseline_image_by_image():
    rng = np.random.default_rng(0)
    shared = rng.normal(140.0, 30.0, 500)  # image difficulty, common to every model
    baseline = {"reconstruction": shared}
    vaes = {0.1: {"reconstruction": shared + 0.5 + rng.normal(0.0, 0.1, 500)},
            5.0: {"reconstruction": shared + 30.0}}
    rows = vae_analyses.baseline_changes(baseline, vaes)
    assert [row["kl_weight"] for row in rows] == [0.1, 5.0]
    difference = vaes[0.1]["reconstruction"] - shared
    assert rows[0]["reconstruction_change"] == pytest.approx(difference.mean())
    # Paired: the SE is that of the differences (about 0.1/sqrt(500)), not of the images' spread.
    assert rows[0]["reconstruction_change_se"] == pytest.approx(
        difference.std(ddof=1) / np.sqrt(500))
    assert rows[1]["reconstruction_change"] == pytest.approx(30.0)
    assert rows[1]["reconstruction_change_se"] == pytest.approx(0.0, abs=1e-9)

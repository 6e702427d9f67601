"""The log-likelihood of the test digits under each VAE: importance sampling and quadrature over
the 2-D latent space (notebook: *The likelihood of the test digits*).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ca4lib.backend import keras
from ca4lib.checks import (
    check_codes,
    check_images,
    check_non_negative_float,
    check_non_negative_int,
    check_positive_int,
)
from ca4lib.estimates import Estimate, mean_estimate, paired_estimate
from ca4lib.inference import decode_codes
from ca4lib.settings import DEFAULT_SEED, IMAGE_SHAPE
from ca4lib.vae_analyses import bernoulli_log_likelihood, vae_encode

# Where the quadrature grid resolves a posterior: its narrowest standard deviation spans at
# least this many grid steps (the midpoint rule's error on a Gaussian is then below 1e-8).
RESOLVED_STEPS = 1.0

# Log-likelihood estimates by importance sampling and by quadrature agree when their mean
# difference per image is within this many nats (where the grid resolves the posteriors).
AGREEMENT_NATS = 0.1


def importance_log_likelihood(model: keras.Model, images: np.ndarray,
                              samples: int = 1000, seed: int = DEFAULT_SEED,
                              images_per_call: int = 20) -> dict[str, np.ndarray]:
    """Estimate log p(x) per image by importance sampling with q(z|x) (Burda et al., 2016).

    log p(x) ~ log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x): a lower bound in
    expectation that tightens as K grows. Also returns the ELBO estimated from the same
    samples (the mean of the log-weights), so that the gap between the two is paired.
    """
    from scipy.special import logsumexp

    images = check_images(images)
    samples = check_positive_int(samples, "samples")
    z_mean, z_log_var = vae_encode(model, images)
    rng = np.random.default_rng(check_non_negative_int(seed, "seed"))
    log_likelihood, elbo = np.empty(len(images)), np.empty(len(images))
    for start in range(0, len(images), check_positive_int(images_per_call, "images_per_call")):
        part = slice(start, start + images_per_call)
        mean, log_var = z_mean[part, None, :], z_log_var[part, None, :]
        noise = rng.standard_normal((len(mean), samples, z_mean.shape[1]))
        z = mean + np.exp(0.5 * log_var) * noise
        decoded = decode_codes(model.decoder, z.reshape(-1, z.shape[-1]))
        log_px_z = bernoulli_log_likelihood(images[part], decoded.reshape(
            len(mean), samples, *IMAGE_SHAPE))
        log_pz = -0.5 * np.sum(z ** 2 + np.log(2 * np.pi), axis=-1)
        log_qz = -0.5 * np.sum(noise ** 2 + log_var + np.log(2 * np.pi), axis=-1)
        log_weights = log_px_z + log_pz - log_qz
        log_likelihood[part] = logsumexp(log_weights, axis=1) - np.log(samples)
        elbo[part] = log_weights.mean(axis=1)
    return {"log_likelihood": log_likelihood, "elbo": elbo}


def quadrature_log_likelihood(decoder: keras.Model, images: np.ndarray,
                              z_mean: np.ndarray, z_log_var: np.ndarray,
                              points_per_side: int = 512, extent: float | None = None
                              ) -> dict[str, Any]:
    """Compute log p(x) = log of the integral of p(x|z) p(z) over a 2-D latent grid.

    The midpoint rule on a points_per_side^2 grid over [-extent, extent]^2 (default: wide
    enough for every posterior mean plus 5 of its standard deviations, and at least 4). The
    decoder runs once per grid point, whatever the number of images. An image's estimate is
    trusted (`resolved`) where the grid spacing is at most 1/RESOLVED_STEPS of its
    posterior's narrowest standard deviation and the posterior lies inside the grid.
    """
    from scipy.special import logsumexp

    images = check_images(images)
    z_mean, z_log_var = check_codes(z_mean, "z_mean", 2), check_codes(z_log_var, "z_log_var", 2)
    sigma = np.exp(0.5 * z_log_var)
    if extent is None:
        extent = max(4.0, float(np.max(np.abs(z_mean) + 5 * sigma)))
    extent = check_non_negative_float(extent, "extent")
    side = check_positive_int(points_per_side, "points_per_side")
    step = 2 * extent / side
    axis = -extent + step * (np.arange(side) + 0.5)
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    probabilities = np.clip(decode_codes(decoder, grid).reshape(len(grid), -1).astype(
        np.float64), 1e-7, 1 - 1e-7)
    # log p(x|z_j) = x . (log p_j - log(1 - p_j)) + sum(log(1 - p_j)): one matrix product.
    log_odds = (np.log(probabilities) - np.log1p(-probabilities)).T
    log_not = np.log1p(-probabilities).sum(axis=1)
    log_prior = -0.5 * np.sum(grid ** 2, axis=1) - np.log(2 * np.pi)
    pixels = images.reshape(len(images), -1).astype(np.float64)
    log_likelihood = np.empty(len(images))
    for start in range(0, len(images), 250):
        terms = pixels[start:start + 250] @ log_odds + log_not + log_prior
        log_likelihood[start:start + 250] = logsumexp(terms, axis=1) + 2 * np.log(step)
    inside = np.all(np.abs(z_mean) + 5 * sigma <= extent, axis=1)
    resolved = inside & (sigma.min(axis=1) >= RESOLVED_STEPS * step)
    return {"log_likelihood": log_likelihood, "resolved": resolved, "step": step,
            "extent": extent}


def likelihood_row(importance: Mapping[str, np.ndarray], quadrature: Mapping[str, Any],
                   floor: np.ndarray) -> dict[str, Any]:
    """Summarise the likelihood estimates of one VAE on the same test images.

    -log p(x) from importance sampling and from quadrature (on the images the grid resolves),
    their paired difference, the variational gap (negative ELBO + log p(x), paired, from the
    same importance samples) and the floor of grey pixels.
    """
    resolved = np.asarray(quadrature["resolved"], bool)
    iwae = mean_estimate(-importance["log_likelihood"])
    gap = paired_estimate(-importance["elbo"], -importance["log_likelihood"])
    row = {"test_log_likelihood": -iwae.value, "test_log_likelihood_se": iwae.se,
           "likelihood_images": iwae.n, "variational_gap": gap.value,
           "variational_gap_se": gap.se, "neg_elbo_importance": float(-importance["elbo"].mean()),
           "floor": float(np.mean(floor[:iwae.n])), "resolved_share": float(resolved.mean()),
           "quadrature_step": float(quadrature["step"])}
    if resolved.any():
        quad = mean_estimate(-quadrature["log_likelihood"][resolved])
        agreement = paired_estimate(quadrature["log_likelihood"][resolved],
                                    importance["log_likelihood"][resolved])
        row.update({"quadrature_log_likelihood": -quad.value, "quadrature_se": quad.se,
                    "quadrature_minus_importance": agreement.value,
                    "quadrature_minus_importance_se": agreement.se,
                    "agreement": agreement_of(agreement)})
    return row


def agreement_of(difference: Estimate, tolerance: float = AGREEMENT_NATS) -> str:
    """Judge a difference between two estimates of one quantity against a tolerance: 'within'
    when its whole 95 % interval lies inside +-tolerance, 'beyond' when the interval lies
    outside it, else 'unclear'."""
    if abs(difference.value) + difference.half_width <= tolerance:
        return "within"
    return "beyond" if abs(difference.value) - difference.half_width > tolerance else "unclear"


def likelihood_rows(importance_by_weight: Mapping[float, Mapping[str, np.ndarray]],
                    quadrature_by_weight: Mapping[float, Mapping[str, Any]],
                    floor: np.ndarray) -> list[dict[str, Any]]:
    """likelihood_row for each VAE, plus each one's paired difference in -log p(x) from the
    best (`nll_above_best`), on the same test images."""
    nll = {weight: -np.asarray(found["log_likelihood"])
           for weight, found in importance_by_weight.items()}
    best = min(nll, key=lambda weight: float(nll[weight].mean()))
    rows = []
    for weight, importance in importance_by_weight.items():
        row = {"kl_weight": float(weight),
               **likelihood_row(importance, quadrature_by_weight[weight], floor)}
        above = paired_estimate(nll[weight], nll[best])
        row["nll_above_best"], row["nll_above_best_se"] = above.value, above.se
        rows.append(row)
    return rows

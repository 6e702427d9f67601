"""Task 2's analyses of the trained VAEs: encodings, per-image loss terms, the sweep's rows with
their paired changes, active dimensions and the aggregate posterior (notebook: *The loss terms
on the test set*).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ca4lib.backend import keras, ops
from ca4lib.checks import check_codes, check_images, check_non_negative_int, check_positive_int
from ca4lib.estimates import Estimate, compared_rows, mean_estimate, paired_estimate, share_estimate
from ca4lib.inference import decode_codes, predict
from ca4lib.settings import DEFAULT_SEED

# Burda et al. (2016): latent dimension d is *active* when the encoder's mean moves with the
# image, Var_x(E_q[z_d]) > 0.01; an inactive dimension carries (almost) no information.
ACTIVE_VARIANCE = 0.01

# A dimension's KL to the prior below this, for one image, says that image's posterior is the
# prior in that dimension: 0.01 nats is under 1/60 of the ln 2 needed to tell two images apart.
PRIOR_LIKE_NATS = 0.01


def vae_encode(model: keras.Model, images: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Return the encoder's z_mean and z_log_var for each image."""
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, keras.Model) or len(encoder.outputs) != 2:
        raise TypeError(f"model: expected a VAE whose encoder gives z_mean and z_log_var, "
                        f"got {type(model).__name__}")
    z_mean, z_log_var = predict(model.encoder, images)
    return np.asarray(z_mean, np.float64), np.asarray(z_log_var, np.float64)


def vae_reconstructions(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Return the VAE's mean reconstructions: the decoder applied to z_mean, no sampling."""
    return decode_codes(model.decoder, vae_encode(model, images)[0])


def sample_posterior(z_mean: np.ndarray, z_log_var: np.ndarray, seed: int = DEFAULT_SEED
                     ) -> np.ndarray:
    """Draw one z ~ q(z|x) = N(z_mean, exp(z_log_var)) per row, reproducibly."""
    z_mean, z_log_var = check_codes(z_mean, "z_mean"), check_codes(z_log_var, "z_log_var")
    noise = np.random.default_rng(check_non_negative_int(seed, "seed")).standard_normal(
        z_mean.shape)
    return z_mean + np.exp(0.5 * z_log_var) * noise


def bernoulli_log_likelihood(images: np.ndarray, probabilities: Any) -> np.ndarray:
    """Return log p(x|z) = -(BCE summed over the pixels), with Keras' clipping, per image.

    `probabilities` has the images' shape, or a leading extra axis of samples per image
    (N, K, 28, 28, 1); the result is (N,) or (N, K). With grey-level images this is the
    quantity the VAE's loss uses, not a normalised density over [0, 1]^784.
    """
    x = ops.reshape(ops.convert_to_tensor(images, "float32"), (len(images), 1, -1))
    p = ops.reshape(ops.convert_to_tensor(probabilities, "float32"), (len(images), -1, 784))
    p = ops.clip(p, 1e-7, 1 - 1e-7)
    log_likelihood = ops.sum(x * ops.log(p) + (1 - x) * ops.log(1 - p), axis=-1)
    result = np.asarray(log_likelihood, np.float64)
    return result[:, 0] if np.ndim(probabilities) == np.ndim(images) else result


def pixel_entropy_floor(images: np.ndarray) -> np.ndarray:
    """Return, per image, the lowest -log p(x|z) any decoder output can reach: the BCE of an
    exact copy, summed over the pixels (above 0 because grey pixels are neither 0 nor 1).

    It bounds -log p(x) and the negative ELBO from below."""
    images = check_images(images)
    return -bernoulli_log_likelihood(images, images)


def aggregate_posterior_variance(z_mean: np.ndarray, z_log_var: np.ndarray) -> np.ndarray:
    """Return, per dimension, the variance of q(z) = mean over x of q(z|x).

    Var(z_d) = Var_x(mu_d) + E_x[sigma_d^2] (the law of total variance); the prior's is 1.
    """
    z_mean, z_log_var = check_codes(z_mean, "z_mean"), check_codes(z_log_var, "z_log_var")
    return z_mean.var(axis=0) + np.exp(z_log_var).mean(axis=0)


def vae_sweep_rows(terms_by_weight: Mapping[float, Mapping[str, np.ndarray]],
                   epochs: Mapping[float, int],
                   recognised_by_weight: Mapping[float, np.ndarray] | None = None
                   ) -> list[dict[str, Any]]:
    """Summarise each VAE of the sweep on the test images, in the order given.

    Per row: the loss terms (one z ~ q(z|x) per image) and the reconstruction term at
    z_mean, with SEs; their paired change against the previous weight (`_change`); the
    negative ELBO's paired difference from the lowest one (`neg_elbo_above_best`); KL and
    the share of images whose posterior is the prior's (KL < PRIOR_LIKE_NATS) per dimension;
    Var_x(mu_d), active dimensions (Burda et al.) and the aggregate posterior's variance; and,
    given per-image verdicts, the share of mean reconstructions the classifier recognises.
    """
    evidence = {}
    for weight, terms in terms_by_weight.items():
        evidence[weight] = {"reconstruction": terms["reconstruction"], "kl": terms["kl"],
                            "neg_elbo": terms["reconstruction"] + terms["kl"],
                            "mean_code_reconstruction": terms["mean_reconstruction"]}
        if recognised_by_weight is not None:
            evidence[weight]["recognised"] = recognised_by_weight[weight]
    measures: dict[str, Callable[[Any], Estimate]] = {name: mean_estimate for name in (
        "reconstruction", "kl", "neg_elbo", "mean_code_reconstruction")}
    if recognised_by_weight is not None:
        measures["recognised"] = share_estimate
    rows = compared_rows(evidence, "kl_weight", measures)
    add_prior_mismatch(rows, terms_by_weight)
    best = min(evidence, key=lambda weight: float(np.mean(evidence[weight]["neg_elbo"])))
    for row, (weight, terms) in zip(rows, terms_by_weight.items()):
        above = paired_estimate(evidence[weight]["neg_elbo"], evidence[best]["neg_elbo"])
        mu_variance = terms["z_mean"].var(axis=0)
        row.update({
            "kl_weight": float(weight), "epochs": int(epochs[weight]),
            "weighted_loss": row["reconstruction"] + weight * row["kl"],
            "neg_elbo_above_best": above.value, "neg_elbo_above_best_se": above.se,
            "kl_per_dimension": terms["kl_per_dimension"].mean(axis=0).tolist(),
            "prior_like_share": (terms["kl_per_dimension"] < PRIOR_LIKE_NATS).mean(
                axis=0).tolist(),
            "mean_variance": mu_variance.tolist(),
            "mean_sigma": float(np.exp(0.5 * terms["z_log_var"]).mean()),
            "active_dimensions": int(np.sum(mu_variance > ACTIVE_VARIANCE)),
            "aggregate_variance": aggregate_posterior_variance(
                terms["z_mean"], terms["z_log_var"]).tolist()})
    return rows


def baseline_changes(baseline_terms: Mapping[str, np.ndarray],
                     terms_by_weight: Mapping[float, Mapping[str, np.ndarray]]
                     ) -> list[dict[str, Any]]:
    """Each VAE's reconstruction term against the deterministic baseline's, paired over the
    same test images: per weight, `reconstruction_change` (VAE minus baseline) with its SE."""
    evidence = {0.0: {"reconstruction": baseline_terms["reconstruction"]},
                **{weight: {"reconstruction": terms["reconstruction"]}
                   for weight, terms in terms_by_weight.items()}}
    rows = compared_rows(evidence, "kl_weight", {"reconstruction": mean_estimate},
                         against="first")
    return [{**row, "kl_weight": float(row["kl_weight"])} for row in rows[1:]]


def add_prior_mismatch(rows: list[dict[str, Any]],
                       terms_by_weight: Mapping[float, Mapping[str, np.ndarray]],
                       replicates: int = 200) -> None:
    """Add to each row how far its aggregate posterior is from the prior: the summed distance
    of Var(z_d) from 1 (`prior_mismatch`), with a bootstrap SE over the test images and the
    change against the previous row (the same resampled images for every weight)."""
    def mismatch(terms: Mapping[str, np.ndarray], index: Any = slice(None)) -> float:
        variance = aggregate_posterior_variance(terms["z_mean"][index], terms["z_log_var"][index])
        return float(np.abs(variance - 1.0).sum())

    count = len(next(iter(terms_by_weight.values()))["z_mean"])
    rng = np.random.default_rng(DEFAULT_SEED)
    draws = [rng.integers(0, count, count) for _ in range(replicates)]
    replicated = {weight: np.array([mismatch(terms, draw) for draw in draws])
                  for weight, terms in terms_by_weight.items()}
    previous = None
    for row, (weight, terms) in zip(rows, terms_by_weight.items()):
        row["prior_mismatch"] = mismatch(terms)
        row["prior_mismatch_se"] = float(replicated[weight].std(ddof=1))
        if previous is not None:
            row["prior_mismatch_change"] = row["prior_mismatch"] - mismatch(
                terms_by_weight[previous])
            row["prior_mismatch_change_se"] = float(
                (replicated[weight] - replicated[previous]).std(ddof=1))
        previous = weight


def sample_prior(count: int, seed: int = DEFAULT_SEED, latent_dim: int = 2) -> np.ndarray:
    """Draw `count` latent codes from the VAE prior N(0, I), reproducibly."""
    rng = np.random.default_rng(check_non_negative_int(seed, "seed"))
    return rng.standard_normal((check_positive_int(count, "count"),
                                check_positive_int(latent_dim, "latent_dim")))


def objective_rows(terms_by_weight: Mapping[float, Mapping[str, np.ndarray]]
                   ) -> list[dict[str, Any]]:
    """Score every model of the sweep on every weight's objective, reconstruction + weight x
    KL per test image (the loss each model minimised, at its own weight).

    One row per objective weight: the model trained on it (`own`), its mean score with SE,
    the best other model on that objective (`rival`), and the paired difference own minus
    rival over the test images (`own_minus_rival`, > 0 when another model does better on the
    objective this one was trained for: then it is not at that objective's optimum).
    """
    weights = list(terms_by_weight)
    rows = []
    for objective in weights:
        scores = {weight: terms["reconstruction"] + objective * terms["kl"]
                  for weight, terms in terms_by_weight.items()}
        own = mean_estimate(scores[objective])
        others = [weight for weight in weights if weight != objective]
        row: dict[str, Any] = {"objective": float(objective), "n": own.n,
                               "own": own.value, "own_se": own.se}
        if others:
            rival = min(others, key=lambda weight: float(np.mean(scores[weight])))
            rival_score = mean_estimate(scores[rival])
            difference = paired_estimate(scores[objective], scores[rival])
            row.update({"rival": float(rival), "rival_score": rival_score.value,
                        "rival_score_se": rival_score.se,
                        "own_minus_rival": difference.value,
                        "own_minus_rival_se": difference.se})
        rows.append(row)
    return rows

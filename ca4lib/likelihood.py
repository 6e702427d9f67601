"""The log-likelihood of the test digits under each VAE, estimated two ways, and the checks that
say which estimate to believe (notebook: the appendix's *The likelihood of the test digits*;
`experiments/likelihood_checks.py` runs the heavier checks once).

- Importance sampling with q(z|x) (Burda et al., 2016): K samples per image drawn once from a
  stream of the image's own, decoded once, and the estimate read at nested K (the first 100,
  300 and 1,000 of the same draws), so that the sweep over K costs no more than its largest K.
- Quadrature over the 2-D latent space, which needs no encoder: a coarse grid over
  [-extent, extent]^2, decoded once per model and shared by every image, finds where each
  image's integrand p(x|z) p(z) has its mass; a fine local grid over a window around the
  coarse maximum (as wide as the integrand's spread around it on the coarse grid) refines it;
  the coarse grid adds what lies outside the window. Twice the points per side halves the
  local step.
- The rows: per KL weight, the headline -log p(x) from the estimate the checks favour, the
  paired difference between the two estimates (mean, median and tails), the K sweep and the
  step check, all over the same images.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ca4lib.backend import keras
from ca4lib.checks import check_images, check_non_negative_float, check_non_negative_int, check_positive_int
from ca4lib.estimates import Estimate, mean_estimate, paired_estimate
from ca4lib.inference import decode_codes
from ca4lib.progress import Ticker
from ca4lib.settings import DEFAULT_SEED, IMAGE_SHAPE, PROJECT_DIR
from ca4lib.vae_analyses import bernoulli_log_likelihood, vae_encode

# Log-likelihood estimates by importance sampling and by quadrature agree when their mean
# difference per image is within this many nats; the K sweep and the step check call an
# estimate converged when a step changes it by no more.
AGREEMENT_NATS = 0.1

# The coarse grid: COARSE_POINTS^2 cell midpoints over [-COARSE_EXTENT, COARSE_EXTENT]^2 (step
# 0.1). The prior puts 1e-23 of its mass per dimension beyond 10, but a posterior can sit far
# out where the decoder fits an image well: under the fast profile's weight-0.1 VAE (two
# epochs), two of the first 20 test images still had mass at |z| = 8. An image whose
# integrand puts more than EDGE_SHARE of its coarse-grid mass on the grid's outer ring of
# cells, or peaks there, may have mass beyond the grid and counts as not covered.
COARSE_POINTS = 200
COARSE_EXTENT = 10.0
EDGE_SHARE = 1e-4
# The local window: whole coarse cells on each side of the coarse maximum's cell, as far in
# each dimension as the integrand's spread on the coarse grid reaches: the cells within
# LEVEL_NATS of the maximum and connected to it (six standard deviations of a Gaussian
# posterior, so that what lies outside holds under 1e-8 of its mass, whether or not the
# coarse grid resolves it; a separate mode is left to the coarse grid). Never fewer than
# MIN_WINDOW_CELLS: a posterior narrower than a coarse step reaches no other cell, and its
# peak lies within a cell of the coarse maximum.
LEVEL_NATS = 18.0
MIN_WINDOW_CELLS = 2
# Points per side of the local grid (a step of 0.016 in the narrowest window), and the nested
# sample sizes of importance sampling.
LOCAL_POINTS = 32
SAMPLES = (100, 300, 1000)
# Codes per decoder call: a 2-core CPU decodes thousands of codes per call at full speed.
CODES_PER_CALL = 20_000
# What experiments/likelihood_checks.py writes: the checks and the settings they recommend.
RESULTS = PROJECT_DIR / "experiments" / "results" / "likelihood_checks.json"
LOG_2PI = math.log(2 * math.pi)


def increasing_sizes(sizes: int | Sequence[int], name: str) -> tuple[int, ...]:
    """Return one size or several as a strictly increasing tuple of positive integers."""
    found = (sizes,) if isinstance(sizes, (int, np.integer)) else tuple(sizes)
    if not found:
        raise ValueError(f"{name}: expected at least one size, got none")
    found = tuple(check_positive_int(size, name) for size in found)
    if any(later <= earlier for earlier, later in zip(found, found[1:])):
        raise ValueError(f"{name}: expected increasing sizes, got {found}")
    return found


def image_noise(seed: int, index: int, count: int, dimensions: int = 2) -> np.ndarray:
    """The standard normal draws of image `index`: a stream of its own, (seed, index), so that
    the first K of any larger number of draws are the same, whatever the other images."""
    return np.random.default_rng([seed, index]).standard_normal((count, dimensions))


def importance_log_likelihood(model: keras.Model, images: np.ndarray,
                              samples: int | Sequence[int] = SAMPLES, seed: int = DEFAULT_SEED,
                              codes_per_call: int = CODES_PER_CALL) -> dict[str, Any]:
    """Estimate log p(x) per image by importance sampling with q(z|x) (Burda et al., 2016).

    log p(x) ~ log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x): a lower bound in
    expectation that tightens as K grows. The largest K of `samples` is drawn once per image
    (`image_noise`) and decoded in calls of about `codes_per_call` codes; the estimate at each
    K of `samples` uses the first K draws (`log_likelihood_by_samples`, one row per K;
    `log_likelihood` is the largest K's). `elbo` is the mean log-weight of all the draws, so
    that the variational gap is paired with the same samples.
    """
    from scipy.special import logsumexp

    images = check_images(images)
    counts = increasing_sizes(samples, "samples")
    seed = check_non_negative_int(seed, "seed")
    largest = counts[-1]
    per_call = max(1, check_positive_int(codes_per_call, "codes_per_call") // largest)
    z_mean, z_log_var = vae_encode(model, images)
    by_samples, elbo = np.empty((len(counts), len(images))), np.empty(len(images))
    ticker = Ticker(f"importance sampling, K = {largest:,}", len(images))
    for start in range(0, len(images), per_call):
        part = slice(start, min(start + per_call, len(images)))
        noise = np.stack([image_noise(seed, index, largest, z_mean.shape[1])
                          for index in range(part.start, part.stop)])
        log_var = z_log_var[part, None, :]
        z = z_mean[part, None, :] + np.exp(0.5 * log_var) * noise
        decoded = decode_codes(model.decoder, z.reshape(-1, z.shape[-1]))
        log_px_z = bernoulli_log_likelihood(images[part], decoded.reshape(
            len(noise), largest, *IMAGE_SHAPE))
        log_pz = -0.5 * np.sum(z ** 2 + LOG_2PI, axis=-1)
        log_qz = -0.5 * np.sum(noise ** 2 + log_var + LOG_2PI, axis=-1)
        log_weights = log_px_z + log_pz - log_qz
        for row, count in enumerate(counts):
            by_samples[row, part] = logsumexp(log_weights[:, :count], axis=1) - math.log(count)
        elbo[part] = log_weights.mean(axis=1)
        ticker.tick(part.stop)
    return {"log_likelihood": by_samples[-1], "log_likelihood_by_samples": by_samples,
            "samples": np.array(counts), "elbo": elbo, "decodes": len(images) * largest}


def bernoulli_terms(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split log p(x|z_j) = x . log_odds[:, j] + log_not[j] for decoded outputs z_j, in float64
    with Keras' clipping: log_odds (784, J) and log_not (J,). In place where it can: the
    coarse grid's 40,000 outputs take 250 MB per copy."""
    p = np.clip(np.asarray(probabilities, np.float64).reshape(len(probabilities), -1),
                1e-7, 1 - 1e-7)
    log_not = np.log1p(-p)
    log_odds = np.log(p, out=p)
    log_odds -= log_not
    return log_odds.T, log_not.sum(axis=1)


def log_prior(codes: np.ndarray) -> np.ndarray:
    """log N(z; 0, I) of 2-D codes, (..., 2) -> (...)."""
    return -0.5 * np.sum(codes ** 2, axis=-1) - LOG_2PI


def coarse_windows(pixels: np.ndarray, log_odds: np.ndarray, offset: np.ndarray,
                   axis: np.ndarray, done: Callable[[int], None] | None = None
                   ) -> dict[str, np.ndarray]:
    """Per image, from the coarse grid (cell midpoints `axis` in each dimension): the coarse
    estimate of log p(x), the cell of the integrand's maximum, the window's half-width in
    cells (how far the cells within LEVEL_NATS of the maximum and connected to it reach, at
    least MIN_WINDOW_CELLS), the log of the coarse grid's sum over the cells outside the window, and the share
    of the coarse grid's sum on its outer ring of cells.

    `offset` is log_not + log prior per grid point, in the grid's order (first dimension
    major); `done` hears of the images done."""
    from scipy import ndimage
    from scipy.special import logsumexp

    side, step = len(axis), float(axis[1] - axis[0])
    count = len(pixels)
    centre, cells = np.empty((count, 2), int), np.empty((count, 2), int)
    coarse, log_outside, edge_share = np.empty(count), np.empty(count), np.empty(count)
    ring = np.ones((side, side), bool)
    ring[1:-1, 1:-1] = False
    ring = ring.ravel()
    per_chunk = max(1, 4_000_000 // side ** 2)
    for start in range(0, count, per_chunk):
        terms = pixels[start:start + per_chunk] @ log_odds + offset
        best = terms.argmax(axis=1)
        total = logsumexp(terms, axis=1)
        coarse[start:start + len(terms)] = total + 2 * math.log(step)
        edge_share[start:start + len(terms)] = np.exp(logsumexp(terms[:, ring], axis=1) - total)
        peak = np.stack(np.divmod(best, side), axis=1)
        centre[start:start + len(terms)] = peak
        for i, image_terms in enumerate(terms):
            first, second = peak[i]
            outside = image_terms.reshape(side, side).copy()
            labels, _ = ndimage.label(outside >= outside[first, second] - LEVEL_NATS,
                                      structure=np.ones((3, 3)))
            reached = np.nonzero(labels == labels[first, second])
            across, down = (max(MIN_WINDOW_CELLS, int(np.max(np.abs(index - middle))))
                            for index, middle in zip(reached, (first, second)))
            cells[start + i] = across, down
            outside[max(first - across, 0):first + across + 1,
                    max(second - down, 0):second + down + 1] = -np.inf
            log_outside[start + i] = logsumexp(outside) + 2 * math.log(step)
        if done is not None:
            done(start + len(terms))
    return {"coarse": coarse, "centre": centre, "cells": cells, "log_outside": log_outside,
            "edge_share": edge_share}


def quadrature_log_likelihood(decoder: keras.Model, images: np.ndarray,
                              points_per_side: int | Sequence[int] = LOCAL_POINTS,
                              coarse_points: int = COARSE_POINTS, extent: float = COARSE_EXTENT,
                              codes_per_call: int = CODES_PER_CALL) -> dict[str, Any]:
    """Compute log p(x) = log of the integral of p(x|z) p(z) over the 2-D latent space.

    No encoder: a coarse grid of `coarse_points`^2 cells over [-extent, extent]^2, decoded
    once, gives each image's integrand on the grid; around its maximum a window of whole
    coarse cells (`coarse_windows`: as far as the integrand's spread around the maximum
    reaches on the coarse grid) is integrated again on a local grid of `points_per_side`^2
    midpoints, and the coarse cells outside the window are added (the window and the rest of
    the coarse grid partition the plane: nothing is counted twice). Several increasing
    `points_per_side` reuse the coarse grid and the windows: each doubling halves the local
    step (`log_likelihood_by_points`, one row per size; `log_likelihood` is the finest).
    Local grids are decoded in calls of about `codes_per_call` codes.

    An image is `covered` unless its integrand reaches the coarse grid's edge (`coarse_edge`:
    its coarse maximum lies on the grid's outer ring of cells, or the ring holds more than
    EDGE_SHARE of its coarse mass, `edge_share`; mass may lie beyond the grid) or its local
    maximum lies on the window's edge at some size (`local_edge`: the window may miss the
    peak). `coarse_log_likelihood` is the coarse grid's estimate alone; `outside_share` the
    finest estimate's share from outside the window; `decodes` the codes decoded.

    A second mode separated from the first by a valley deeper than LEVEL_NATS is left to the
    coarse grid, right where the coarse step resolves it: the window holds the highest peak.
    """
    from scipy.special import logsumexp

    images = check_images(images)
    sides = increasing_sizes(points_per_side, "points_per_side")
    coarse = check_positive_int(coarse_points, "coarse_points")
    if coarse < 2 * MIN_WINDOW_CELLS + 3:
        raise ValueError(f"coarse_points: expected at least {2 * MIN_WINDOW_CELLS + 3} "
                         f"(a window and a ring around it), got {coarse}")
    extent = check_non_negative_float(extent, "extent")
    if extent == 0:
        raise ValueError("extent: expected a number > 0, got 0")
    per_call_codes = check_positive_int(codes_per_call, "codes_per_call")
    step = 2 * extent / coarse
    axis = -extent + step * (np.arange(coarse) + 0.5)
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    # Progress in codes decoded: the coarse grid's, then each image's local grids.
    decodes = [coarse ** 2] + [len(images) * side ** 2 for side in sides]
    ticker = Ticker(f"quadrature, codes decoded (a coarse grid of {coarse}x{coarse}, local "
                    f"grids of {' and '.join(map(str, sides))} points per side)", sum(decodes))
    log_odds, log_not = bernoulli_terms(decode_codes(decoder, grid))
    pixels = images.reshape(len(images), -1).astype(np.float64)
    found = coarse_windows(pixels, log_odds, log_not + log_prior(grid), axis,
                           lambda done: ticker.tick(coarse ** 2 * done // len(images)))
    del log_odds
    centre, cells = found["centre"], found["cells"]
    low = -extent + (centre - cells) * step  # the window's lower edges, (N, 2)
    width = (2 * cells + 1) * step
    by_points = np.empty((len(sides), len(images)))
    local_edge = np.zeros(len(images), bool)
    for row, side in enumerate(sides):
        fractions = (np.arange(side) + 0.5) / side
        per_call = max(1, per_call_codes // side ** 2)
        for start in range(0, len(images), per_call):
            stop = min(start + per_call, len(images))
            first = low[start:stop, 0, None] + width[start:stop, 0, None] * fractions
            second = low[start:stop, 1, None] + width[start:stop, 1, None] * fractions
            codes = np.stack(np.broadcast_arrays(first[:, :, None], second[:, None, :]),
                             axis=-1).reshape(stop - start, side * side, 2)
            decoded = decode_codes(decoder, codes.reshape(-1, 2)).reshape(
                stop - start, side * side, -1)
            for index in range(start, stop):
                image_odds, image_not = bernoulli_terms(decoded[index - start])
                terms = (pixels[index] @ image_odds + image_not
                         + log_prior(codes[index - start]))
                local = logsumexp(terms) + math.log(float(np.prod(width[index] / side)))
                by_points[row, index] = np.logaddexp(local, found["log_outside"][index])
                top = np.unravel_index(int(np.argmax(terms)), (side, side))
                local_edge[index] |= min(top) == 0 or max(top) == side - 1
            ticker.tick(sum(decodes[:row + 1]) + stop * side ** 2)
    coarse_edge = np.any((centre == 0) | (centre == coarse - 1), axis=1) | (
        found["edge_share"] > EDGE_SHARE)
    return {"log_likelihood": by_points[-1], "log_likelihood_by_points": by_points,
            "points": np.array(sides), "coarse_log_likelihood": found["coarse"],
            "covered": ~coarse_edge & ~local_edge, "coarse_edge": coarse_edge,
            "local_edge": local_edge, "edge_share": found["edge_share"],
            "outside_share": np.exp(found["log_outside"] - by_points[-1]),
            "centre": axis[centre], "half_width": width / 2, "local_step": width / sides[-1],
            "coarse_step": step, "extent": extent, "coarse_points": coarse,
            "decodes": sum(decodes)}


# ---------------------------------------------------------------------------------------------
# Summaries: the rows of the report and the checks of the experiment
# ---------------------------------------------------------------------------------------------


def agreement_of(difference: Estimate, tolerance: float = AGREEMENT_NATS) -> str:
    """Judge a difference between two estimates of one quantity against a tolerance: 'within'
    when its whole 95 % interval lies inside +-tolerance, 'beyond' when the interval lies
    outside it, else 'unclear'."""
    if abs(difference.value) + difference.half_width <= tolerance:
        return "within"
    return "beyond" if abs(difference.value) - difference.half_width > tolerance else "unclear"


def spread_summary(values: np.ndarray, name: str) -> dict[str, float]:
    """Mean with SE, median and tails (1st and 99th percentile, minimum, maximum) of paired
    per-image values, as `name`, `name_se`, `name_median`, `name_p01`, `name_p99`, ..."""
    found = mean_estimate(values)
    return {name: found.value, f"{name}_se": found.se,
            f"{name}_median": float(np.median(values)),
            f"{name}_p01": float(np.percentile(values, 1)),
            f"{name}_p99": float(np.percentile(values, 99)),
            f"{name}_min": float(np.min(values)), f"{name}_max": float(np.max(values))}


def better_estimate(step_change: float | None, difference: Estimate,
                    tolerance: float = AGREEMENT_NATS) -> tuple[str, str]:
    """Which estimate of log p(x) to headline, and why: (estimate, reason).

    Quadrature, when halving its local step moves it by at most `tolerance` nats per image on
    average (`step_change`) and it is not clearly below importance sampling (whose mean weight
    is an unbiased estimate of p(x), so an exact integral cannot lie clearly below it); reason
    'above' (importance sampling, a lower bound in expectation, clearly lies below it) or
    'agree'. Otherwise importance sampling; reason 'unchecked' (no step check), 'step' (the
    step check moved it more) or 'below' (the grid misses mass).
    """
    if step_change is None:
        return "importance", "unchecked"
    if step_change > tolerance:
        return "importance", "step"
    if difference.sign < 0:
        return "importance", "below"
    return "quadrature", "above" if difference.sign > 0 else "agree"


def by_size(estimates: np.ndarray, sizes: Sequence[int], used: np.ndarray, prefix: str
            ) -> dict[str, Any]:
    """-log p(x) at each size of a sweep (K or points per side) with SEs, and the paired
    change from each size to the next, as lists: `{prefix}_nll_by_size`, ..."""
    nll = -np.asarray(estimates, np.float64)[:, used]
    means = [mean_estimate(values) for values in nll]
    changes = [paired_estimate(later, earlier) for earlier, later in zip(nll, nll[1:])]
    return {f"{prefix}_sizes": [int(size) for size in sizes],
            f"{prefix}_nll_by_size": [found.value for found in means],
            f"{prefix}_nll_by_size_se": [found.se for found in means],
            f"{prefix}_change_by_size": [found.value for found in changes],
            f"{prefix}_change_by_size_se": [found.se for found in changes],
            f"{prefix}_change_by_size_mean_abs": [float(np.mean(np.abs(later - earlier)))
                                                  for earlier, later in zip(nll, nll[1:])],
            f"{prefix}_change_by_size_max_abs": [float(np.max(np.abs(later - earlier)))
                                                 for earlier, later in zip(nll, nll[1:])]}


def likelihood_row(importance: Mapping[str, Any], quadrature: Mapping[str, Any],
                   floor: np.ndarray, used: np.ndarray | None = None,
                   step_check: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Summarise the two likelihood estimates of one VAE on the same test images.

    Every number is over the images `used` (default: those the quadrature covers), for both
    estimates alike. The row holds -log p(x) by importance sampling at its largest K and by
    quadrature at its finest grid; the K sweep (`importance_*_by_size`) and the step check
    (`quadrature_*_by_size`: the change when the local step is halved; from a quadrature of
    one grid size alone, the experiment's `step_check` for it, see `experiment_step_check`,
    with `step_check_source` 'experiment'); quadrature minus
    importance sampling per image (log p(x)) as mean +- SE, median and tails; the headline
    (`test_log_likelihood`, from `better_estimate`, which `estimate` and `estimate_reason`
    name); the variational gap (negative ELBO minus the headline -log p(x), paired, the ELBO
    from the importance samples) and the floor of grey pixels.
    """
    covered = np.asarray(quadrature["covered"], bool)
    used = covered if used is None else np.asarray(used, bool)
    if not used.any():
        raise ValueError("used: expected at least one image that both estimates cover, got none")
    sweep = by_size(importance["log_likelihood_by_samples"], importance["samples"], used,
                    "importance")
    grid = by_size(quadrature["log_likelihood_by_points"], quadrature["points"], used,
                   "quadrature")
    source = "computed" if len(quadrature["points"]) > 1 else None
    offset = tolerance = None
    if source is None and step_check is not None:
        grid, offset, tolerance = checked_grid(grid, step_check, int(used.sum()))
        source = "experiment"
    difference = (np.asarray(quadrature["log_likelihood"])[used]
                  - np.asarray(importance["log_likelihood"])[used])
    agreement = mean_estimate(difference)
    step_change = grid["quadrature_change_by_size_mean_abs"][-1] if source else None
    estimate, reason = better_estimate(step_change, agreement)
    log_p = np.asarray((quadrature if estimate == "quadrature" else importance)["log_likelihood"])
    headline = mean_estimate(log_p[used])
    gap = paired_estimate(log_p[used], np.asarray(importance["elbo"])[used])
    iwae = mean_estimate(-np.asarray(importance["log_likelihood"])[used])
    quad = mean_estimate(-np.asarray(quadrature["log_likelihood"])[used])
    local_step = np.asarray(quadrature["local_step"])[used].min(axis=1)
    return {
        "likelihood_images": int(len(covered)), "n": int(used.sum()),
        "excluded": int(len(covered) - used.sum()), "uncovered": int((~covered).sum()),
        "estimate": estimate, "estimate_reason": reason,
        "test_log_likelihood": headline.value, "test_log_likelihood_se": headline.se,
        "importance_nll": iwae.value, "importance_nll_se": iwae.se,
        "quadrature_nll": quad.value, "quadrature_nll_se": quad.se,
        **spread_summary(difference, "quadrature_minus_importance"),
        "agreement": agreement_of(agreement), "step_change": step_change,
        "step_check_source": source, "quadrature_points": int(quadrature["points"][-1]),
        "step_check_offset": offset, "step_check_tolerance": tolerance,
        **sweep, **grid,
        "coarse_step": float(quadrature["coarse_step"]),
        "coarse_points": int(quadrature["coarse_points"]),
        "extent": float(quadrature["extent"]),
        "local_step_median": float(np.median(local_step)),
        "local_step_max": float(np.max(local_step)),
        "variational_gap": gap.value, "variational_gap_se": gap.se,
        "neg_elbo_importance": float(-np.mean(np.asarray(importance["elbo"])[used])),
        "floor": float(np.mean(np.asarray(floor)[:len(covered)][used]))}


def checked_grid(grid: Mapping[str, Any], step_check: Mapping[str, Any], count: int
                 ) -> tuple[dict[str, Any], float, float]:
    """The grid sizes of a one-size quadrature (`by_size`) with the experiment's step check
    for that size added, the check's models' offset (this run's mean -log p(x) at the size
    minus the experiment's) and the tolerance it must stay within to count as a check of these
    models: the standard error of the experiment's mean. The same models trained on another
    CPU differ by rounding alone (a few hundredths of a nat); `likelihood_rows` refuses a check
    whose offset is beyond the tolerance. Another grid size or image count is an error."""
    size, nll = grid["quadrature_sizes"][0], grid["quadrature_nll_by_size"][0]
    if step_check["quadrature_sizes"][0] != size or step_check["n"] != count:
        raise ValueError(
            f"step_check: expected the experiment's check of this quadrature ({size} points per "
            f"side, {count} images), got {step_check['quadrature_sizes'][0]} points, "
            f"{step_check['n']} images; run experiments/likelihood_checks.py again")
    checked = {name: list(step_check[name]) for name in grid}
    return (checked, float(nll - step_check["quadrature_nll_by_size"][0]),
            float(step_check["quadrature_nll_by_size_se"][0]))


def likelihood_rows(importance_by_weight: Mapping[float, Mapping[str, Any]],
                    quadrature_by_weight: Mapping[float, Mapping[str, Any]],
                    floor: np.ndarray,
                    step_checks: Mapping[float, Mapping[str, Any]] | None = None
                    ) -> list[dict[str, Any]]:
    """likelihood_row for each VAE on the images that every quadrature covers (the others are
    left out of both estimates of every weight alike, and counted), plus each one's paired
    difference in headline -log p(x) from the lowest (`nll_above_best`). `step_checks` (by
    weight, `experiment_step_check`) stand in for a step check the quadrature did not run,
    at every weight or none: where one weight's check is of other models (`checked_grid`), no
    row takes one, and each row's `step_check_refused` names that weight, its offset and the
    tolerance."""
    if set(importance_by_weight) != set(quadrature_by_weight):
        raise ValueError(f"quadrature_by_weight: expected the weights of importance_by_weight, "
                         f"{sorted(importance_by_weight)}, got {sorted(quadrature_by_weight)}")
    used = np.logical_and.reduce([np.asarray(found["covered"], bool)
                                  for found in quadrature_by_weight.values()])
    rows, nll = [], {}
    for weight, importance in importance_by_weight.items():
        quadrature = quadrature_by_weight[weight]
        check = None if step_checks is None else step_checks[weight]
        row = {"kl_weight": float(weight),
               **likelihood_row(importance, quadrature, floor, used, check)}
        chosen = quadrature if row["estimate"] == "quadrature" else importance
        nll[weight] = -np.asarray(chosen["log_likelihood"])[used]
        rows.append(row)
    refused = [{"kl_weight": row["kl_weight"], "offset": row["step_check_offset"],
                "tolerance": row["step_check_tolerance"]} for row in rows
               if row["step_check_source"] == "experiment"
               and abs(row["step_check_offset"]) > row["step_check_tolerance"]]
    if refused:
        return [{**row, "step_check_refused": refused[0]}
                for row in likelihood_rows(importance_by_weight, quadrature_by_weight, floor)]
    best = min(nll, key=lambda weight: float(nll[weight].mean()))
    for row, weight in zip(rows, nll):
        above = paired_estimate(nll[weight], nll[best])
        row["nll_above_best"], row["nll_above_best_se"] = above.value, above.se
        row["step_check_refused"] = None
    return rows


# ---------------------------------------------------------------------------------------------
# The experiment's checks and the settings they recommend
# ---------------------------------------------------------------------------------------------


def sweep_checks(importance: Mapping[str, Any], quadrature: Mapping[str, Any],
                 used: np.ndarray) -> dict[str, Any]:
    """The K sweep and the step checks of one VAE on the images `used`, for the experiment:
    -log p(x) at each K and each local grid size, the change at each step (mean +- SE, mean
    and largest absolute change), whether each K step is within AGREEMENT_NATS
    (`agreement_of`), and quadrature at each size minus importance sampling at the largest K
    (mean +- SE, median, tails)."""
    used = np.asarray(used, bool)
    importance_checks = by_size(importance["log_likelihood_by_samples"], importance["samples"],
                                used, "importance")
    importance_checks["importance_change_agreement"] = [
        agreement_of(Estimate(value, se, int(used.sum()))) for value, se in zip(
            importance_checks["importance_change_by_size"],
            importance_checks["importance_change_by_size_se"])]
    reference = np.asarray(importance["log_likelihood"])[used]
    differences = [spread_summary(np.asarray(estimates)[used] - reference, "difference")
                   for estimates in quadrature["log_likelihood_by_points"]]
    return {"n": int(used.sum()), **importance_checks,
            **by_size(quadrature["log_likelihood_by_points"], quadrature["points"], used,
                      "quadrature"),
            "quadrature_minus_importance_by_size": differences}


def recommended_settings(checks_by_weight: Mapping[Any, Mapping[str, Any]], images: int,
                         coarse_points: int = COARSE_POINTS,
                         tolerance: float = AGREEMENT_NATS) -> dict[str, Any]:
    """The cheapest settings that `sweep_checks` shows converged for every weight.

    K: the smallest K whose step to the next K is within `tolerance` (`agreement_of`) at
    every weight; the sweep to run is every K up to that next one, which shows the step.
    Points per side: the smallest P whose doubling moves the quadrature by at most
    `tolerance` nats per image on average at every weight; the sizes to run are P and 2P,
    the step check. Where no step converges, the largest sizes, with `converged` false.
    Also the decodes per model that these settings cost.
    """
    first = next(iter(checks_by_weight.values()))
    counts, sides = first["importance_sizes"], first["quadrature_sizes"]

    def converged_step(ok: Any, steps: int) -> int | None:
        return next((index for index in range(steps) if all(ok(found, index) for found in
                                                             checks_by_weight.values())), None)

    k_step = converged_step(
        lambda found, index: found["importance_change_agreement"][index] == "within",
        len(counts) - 1)
    p_step = converged_step(
        lambda found, index: found["quadrature_change_by_size_mean_abs"][index] <= tolerance,
        len(sides) - 1)
    samples = counts if k_step is None else counts[:k_step + 2]
    points = sides[-2:] if p_step is None else sides[p_step:p_step + 2]
    return {"samples": list(samples), "points_per_side": list(points),
            "samples_converged": k_step is not None, "points_converged": p_step is not None,
            "decodes_per_model": {
                "importance": images * samples[-1],
                "quadrature": coarse_points ** 2 + images * sum(p ** 2 for p in points)}}


def experiment_step_check(checks: Mapping[str, Any], points: int) -> dict[str, Any]:
    """The step check at `points` from the experiment's `sweep_checks` of one weight (its JSON's
    `by_weight[weight]["checks"]`): -log p(x) at `points` and at twice as many points per
    side, and the change between them, for a quadrature that computes `points` alone
    (`likelihood_rows(..., step_checks=...)`)."""
    sizes = [int(size) for size in checks["quadrature_sizes"]]
    if points not in sizes or 2 * points not in sizes:
        raise ValueError(f"points: expected a size whose double the experiment computed, "
                         f"{sizes}, got {points}")
    first, second = sizes.index(points), sizes.index(2 * points)
    if second != first + 1:
        raise ValueError(f"checks: expected doubling grid sizes, got {sizes}")
    return {"n": int(checks["n"]), "quadrature_sizes": [points, 2 * points],
            **{name: [checks[name][first], checks[name][second]] for name in (
                "quadrature_nll_by_size", "quadrature_nll_by_size_se")},
            **{name: [checks[name][first]] for name in (
                "quadrature_change_by_size", "quadrature_change_by_size_se",
                "quadrature_change_by_size_mean_abs", "quadrature_change_by_size_max_abs")}}


def checked_settings(profile: str, samples: Sequence[int] = SAMPLES,
                     points_per_side: Sequence[int] = (LOCAL_POINTS // 2, LOCAL_POINTS),
                     path: str | Path | None = None) -> dict[str, Any]:
    """The settings `experiments/likelihood_checks.py` found converged for `profile`
    (`recommended_settings`, read from experiments/results/likelihood_checks.json), with the
    experiment's checks by KL weight for `experiment_step_check`; where the file is absent or
    of another profile, the given `samples` and `points_per_side` (the profile's, with a step
    check of their own when they are two) and no checks. `source` says which."""
    path = Path(path) if path is not None else RESULTS
    found = json.loads(path.read_text()) if path.is_file() else {}
    if found.get("profile") != profile:
        return {"samples": tuple(samples), "points_per_side": tuple(points_per_side),
                "checks": None, "source": "defaults"}
    recommended = found["recommended"]
    return {"samples": tuple(recommended["samples"]),
            "points_per_side": tuple(recommended["points_per_side"]),
            "checks": {float(weight): result["checks"]
                       for weight, result in found["by_weight"].items()},
            "source": f"{path.name} ({found['commit']}, {found['date']})"}


def run_settings(checked: Mapping[str, Any], weights: Sequence[float]
                 ) -> tuple[tuple[int, ...], tuple[int, ...], dict[float, Any] | None]:
    """What a notebook run computes, given `checked_settings`: the two smallest sample sizes
    (enough to show the trend with K; the experiment's sweep goes further) and, where the
    experiment checked the grid, its smallest converged grid alone with the experiment's step
    check per weight; otherwise every given grid size, checked by the run itself."""
    samples = tuple(checked["samples"][:2])
    if checked["checks"] is None:
        return samples, tuple(checked["points_per_side"]), None
    points = tuple(checked["points_per_side"][:1])
    return samples, points, {float(weight): experiment_step_check(
        checked["checks"][float(weight)], points[-1]) for weight in weights}

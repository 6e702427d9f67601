"""Generated digits and interpolation paths judged by the digit classifier (notebook:
*Beyond the assignment: generation, judged* and *Interpolation*).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ca4lib.backend import keras
from ca4lib.checks import check_codes, check_labels, check_non_negative_int, check_positive_int
from ca4lib.estimates import bootstrap_estimate, compared_rows, mean_estimate, share_estimate
from ca4lib.inference import decode_codes
from ca4lib.measures import CONFIDENCE, classify
from ca4lib.settings import DEFAULT_SEED, DIGITS, IMAGE_SHAPE
from ca4lib.vae_analyses import vae_encode


def normalised_entropy(counts: Sequence[float]) -> float:
    """Return the entropy of a histogram divided by its maximum, log(number of bins)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size < 2 or np.any(counts < 0) or counts.sum() <= 0:
        raise ValueError(f"counts: expected >= 2 non-negative counts with a positive sum, "
                         f"got {counts.tolist()}")
    shares = counts[counts > 0] / counts.sum()
    return float(-(shares * np.log(shares)).sum() / np.log(counts.size))


def generation_row(name: str, digits: np.ndarray, confidences: np.ndarray,
                   seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """Judge a set of images by a classifier's verdicts: the share it reads with confidence,
    the evenness of the digits it reads (normalised entropy) and the least read digit's
    share, each with its SE (binomial; bootstrap over the images)."""
    digits = np.asarray(digits)
    if digits.size == 0:
        raise ValueError("digits: expected at least one classified image, got none")
    digits = check_labels(digits, len(digits), "digits")
    confidences = np.asarray(confidences, dtype=np.float64)
    if confidences.shape != digits.shape:
        raise ValueError(f"confidences: expected one per digit, shape {digits.shape}, "
                         f"got {confidences.shape}")

    def entropy(sample: np.ndarray) -> float:
        return normalised_entropy(np.bincount(sample, minlength=len(DIGITS)))

    def least(sample: np.ndarray) -> float:
        return float(np.bincount(sample, minlength=len(DIGITS)).min() / len(sample))

    confident = share_estimate(confidences >= CONFIDENCE)
    evenness, rarest = bootstrap_estimate(entropy, digits, seed), bootstrap_estimate(
        least, digits, seed)
    return {"model": name, "samples": int(len(digits)), "n": int(len(digits)),
            "confident_share": confident.value, "confident_share_se": confident.se,
            "digit_entropy": evenness.value, "digit_entropy_se": evenness.se,
            "least_digit_share": rarest.value, "least_digit_share_se": rarest.se,
            "digit_counts": np.bincount(digits, minlength=len(DIGITS)).tolist()}


def sample_fitted_gaussian(codes: np.ndarray, count: int, seed: int = DEFAULT_SEED
                           ) -> np.ndarray:
    """Draw `count` codes from the Gaussian fitted to `codes` (mean and covariance)."""
    codes = check_codes(codes)
    if len(codes) < 2:
        raise ValueError(f"codes: expected at least 2 codes to fit a covariance, "
                         f"got {len(codes)}")
    rng = np.random.default_rng(check_non_negative_int(seed, "seed"))
    return rng.multivariate_normal(codes.mean(axis=0), np.cov(codes, rowvar=False),
                                   size=check_positive_int(count, "count"))


def random_pairs(count: int, size: int, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Return `size` pairs of distinct indices below `count`, no index used twice."""
    if 2 * check_positive_int(size, "size") > check_positive_int(count, "count"):
        raise ValueError(f"size: expected at most {count // 2} pairs of {count} items, "
                         f"got {size}")
    rng = np.random.default_rng(check_non_negative_int(seed, "seed"))
    return rng.choice(count, size=2 * size, replace=False).reshape(size, 2)


def interpolate_codes(start: np.ndarray, end: np.ndarray, frames: int = 10) -> np.ndarray:
    """Return `frames` codes evenly spaced on the straight line from `start` to `end`."""
    start, end = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
    if start.ndim != 1:
        raise ValueError(f"start: expected one code, a 1-D array, got shape {start.shape}")
    if end.shape != start.shape:
        raise ValueError(f"end: expected a code of shape {start.shape} like start, "
                         f"got {end.shape}")
    if check_positive_int(frames, "frames") < 2:
        raise ValueError(f"frames: expected at least 2 (both ends), got {frames}")
    weights = np.linspace(0.0, 1.0, frames)[:, np.newaxis]
    return (1.0 - weights) * start + weights * end


def path_smoothness(frames: np.ndarray) -> float:
    """Return the largest step of a decoded path as a share of its total change.

    A step is the mean absolute pixel change between neighbouring frames. An even path
    scores 1 / (frames - 1), a path that changes in one jump scores 1; blurrier endpoints do
    not make a path look smoother. A path that does not change at all counts as even.
    """
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim < 2 or len(frames) < 2:
        raise ValueError(f"frames: expected at least 2 frames, got shape {frames.shape}")
    steps = np.abs(np.diff(frames, axis=0)).reshape(len(frames) - 1, -1).mean(axis=1)
    total = steps.sum()
    return float(steps.max() / total) if total > 1e-12 else 1.0 / (len(frames) - 1)


def decode_paths(model: keras.Model, images: np.ndarray, pairs: np.ndarray,
                 frames: int = 10) -> np.ndarray:
    """Decode straight latent paths between the mean codes of each pair of `images`.

    Returns (pairs, frames, 28, 28, 1): frame 0 decodes the first image's z_mean, the last
    frame the second's.
    """
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"pairs: expected an array of index pairs (P, 2), got {pairs.shape}")
    means = vae_encode(model, images[pairs.ravel()])[0].reshape(len(pairs), 2, -1)
    codes = np.concatenate([interpolate_codes(start, end, frames) for start, end in means])
    return decode_codes(model.decoder, codes).reshape(len(pairs), frames, *IMAGE_SHAPE)


def interpolation_rows(paths: Mapping[str, np.ndarray], ends: np.ndarray,
                       classifier: keras.Model) -> list[dict[str, Any]]:
    """Judge each model's decoded paths (pairs, frames, 28, 28, 1) between test digits.

    Smoothness: path_smoothness per path. Unclear: the share of a path's interior frames
    the classifier does not read, with confidence, as the digit of either end (`ends`: the
    true digits, (pairs, 2)). Rows after the first give the paired change against it.
    """
    ends = np.asarray(ends)
    evidence = {}
    for name, frames in paths.items():
        count, length = frames.shape[:2]
        if ends.shape != (count, 2):
            raise ValueError(f"ends: expected the two digits of each of {count} paths, "
                             f"got shape {ends.shape}")
        digits, confidences = (values.reshape(count, length) for values in classify(
            classifier, frames.reshape(-1, *IMAGE_SHAPE)))
        clear = ((digits == ends[:, :1]) | (digits == ends[:, 1:])) & (
            confidences >= CONFIDENCE)
        evidence[name] = {"smoothness": [path_smoothness(path) for path in frames],
                          "unclear": 1.0 - clear[:, 1:-1].mean(axis=1)}
    rows = compared_rows(evidence, "model", {"smoothness": mean_estimate,
                                             "unclear": mean_estimate}, against="first")
    for row in rows:
        row["frames"] = int(next(iter(paths.values())).shape[1])
    return rows

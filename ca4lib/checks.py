"""Argument checks: each raises ValueError (or TypeError) naming the argument it refuses.

Used where the notebook calls in (`ca4_helpers.train_model`, the analyses, the plots); the
functions they call trust their arguments.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ca4lib.settings import IMAGE_SHAPE


def check_positive_int(value: Any, name: str) -> int:
    """Return `value` if it is an integer >= 1, else raise ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def check_non_negative_int(value: Any, name: str) -> int:
    """Return `value` if it is an integer >= 0, else raise ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
    return int(value)


def check_non_negative_float(value: Any, name: str) -> float:
    """Return `value` as a float if it is finite and >= 0, else raise ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    if not math.isfinite(float(value)) or value < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


def check_fraction(value: Any, name: str) -> float:
    """Return `value` as a float if it is a number in [0, 1], else raise ValueError naming `name`."""
    number = check_non_negative_float(value, name)
    if number > 1:
        raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
    return number


def check_retrain(retrain: Any) -> bool:
    """Return whether to retrain: `retrain` if a bool, else $CA4_RETRAIN (1/0, true/false, ...)."""
    if retrain is not None:
        if not isinstance(retrain, bool):
            raise ValueError(f"retrain: expected True, False or None (then $CA4_RETRAIN decides), "
                             f"got {retrain!r}")
        return retrain
    setting = os.environ.get("CA4_RETRAIN", "")
    if setting.strip().lower() in ("", "0", "false", "no", "off"):
        return False
    if setting.strip().lower() in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"CA4_RETRAIN: expected 1, true, yes or on (retrain) or 0, false, no, off "
                     f"or nothing (use the cache), in any case; got {setting!r}")


def check_learning_rate(learning_rate: Any) -> float:
    """Return the learning rate if it is a finite number > 0, else raise ValueError."""
    value = check_non_negative_float(learning_rate, "learning_rate")
    if value == 0:
        raise ValueError(f"learning_rate: expected a number > 0, got {learning_rate!r}")
    return value


def check_images(images: Any, name: str = "images") -> np.ndarray:
    """Return normalised images as float32 (N, 28, 28, 1) after checking shape, finiteness, range."""
    if not isinstance(images, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array of images, got {type(images).__name__}")
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"{name}: expected normalised float images in [0, 1], got dtype "
                         f"{images.dtype} (call normalize_images on raw uint8 pixels first)")
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"{name}: expected shape (N, 28, 28, 1) grey-scale 28x28 images, "
                         f"got {images.shape}")
    if images.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one image, got an empty array")
    if not np.all(np.isfinite(images)):
        raise ValueError(f"{name}: expected finite pixel values, got NaN or infinity")
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name}: expected pixel values in [0, 1], got values in "
                         f"[{low:g}, {high:g}] (normalise raw pixels with normalize_images)")
    return images.astype(np.float32, copy=False)


def check_labels(labels: Any, count: int, name: str = "labels") -> np.ndarray:
    """Return `labels` as int64 after checking there are `count` integer digits 0-9."""
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array of digit labels, "
                        f"got {type(labels).__name__}")
    if labels.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of labels, got shape {labels.shape}")
    if labels.shape[0] != count:
        raise ValueError(f"{name}: expected {count} labels (one per image), got {labels.shape[0]}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name}: expected integer digit labels, got dtype {labels.dtype}")
    if count and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{name}: expected digits 0-9, got values in "
                         f"[{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64, copy=False)


def check_matching_images(targets: Any, predictions: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return checked `targets` and `predictions`, which must be image arrays of one shape."""
    targets = check_images(targets, "targets")
    predictions = check_images(predictions, "predictions")
    if targets.shape != predictions.shape:
        raise ValueError(f"predictions: expected shape {targets.shape} to match targets, "
                         f"got {predictions.shape}")
    return targets, predictions


def check_same_length(first: np.ndarray, second: np.ndarray, names: tuple[str, str]) -> None:
    """Raise ValueError unless two image arrays hold the same number of images."""
    if first.shape[0] != second.shape[0]:
        raise ValueError(f"{names[1]}: expected {first.shape[0]} images to match {names[0]}, "
                         f"got {second.shape[0]}")


def check_targets(targets: Any, inputs: np.ndarray, name: str) -> np.ndarray:
    """Return training targets for `inputs`: the inputs when None, else images or digit labels."""
    if targets is None:
        return inputs
    if isinstance(targets, np.ndarray) and targets.ndim == 1:
        return check_labels(targets, inputs.shape[0], name)
    targets = check_images(targets, name)
    check_same_length(inputs, targets, ("the inputs", name))
    return targets


def check_codes(codes: Any, name: str = "codes", dimensions: int | None = None) -> np.ndarray:
    """Return finite latent codes as a float array of shape (N, D), D = `dimensions` if given."""
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or codes.shape[0] == 0 or (dimensions and codes.shape[1] != dimensions):
        shape = f"(N, {dimensions})" if dimensions else "(N, D)"
        raise ValueError(f"{name}: expected an array of shape {shape} with N >= 1, "
                         f"got {codes.shape}")
    if not np.all(np.isfinite(codes)):
        raise ValueError(f"{name}: expected finite values, got NaN or infinity")
    return codes


def check_model_settings(*, latent_dim: Any = 1, learning_rate: Any = 1e-3, kl_weight: Any = 0.0,
                         seed: Any = 0, input_scale: Any = 1.0) -> None:
    """Check a model builder's arguments, each by the name the builder gives it.

    The builders call this once, at their top, so that the layers below read like the Keras
    examples; the layers trust what it let through.
    """
    check_positive_int(latent_dim, "latent_dim")
    check_learning_rate(learning_rate)
    check_non_negative_float(kl_weight, "kl_weight")
    check_non_negative_int(seed, "seed")
    check_non_negative_float(input_scale, "input_scale")

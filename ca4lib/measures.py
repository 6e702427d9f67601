"""Per-image measures shared by both tasks: binary cross-entropy, squared error, blur, the
digit classifier's reading, kNN accuracy of codes, PCA, dead ReLU units.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ca4lib.backend import keras, ops
from ca4lib.checks import check_codes, check_images, check_labels, check_matching_images, check_positive_int
from ca4lib.inference import cached_when_on, predict, run_in_batches
from ca4lib.settings import DIGITS, PREDICT_BATCH_SIZE

# The classifier "recognises" a digit when its top probability reaches this.
CONFIDENCE = 0.9


def first_of_each_digit(labels: np.ndarray) -> np.ndarray:
    """Return the index of the first image of each digit 0-9, in digit order."""
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"labels: expected a NumPy array of digit labels, "
                        f"got {type(labels).__name__}")
    labels = check_labels(labels, labels.shape[0])
    missing = sorted(set(DIGITS) - set(labels.tolist()))
    if missing:
        raise ValueError(f"labels: expected every digit 0-9 at least once, "
                         f"digits {missing} are missing")
    return np.array([int(np.argmax(labels == digit)) for digit in DIGITS])


def binary_cross_entropy(targets: Any, predictions: Any) -> np.ndarray:
    """Return Keras' binary cross-entropy of every value (predictions clipped to [1e-7, 1-1e-7])."""
    targets = np.asarray(targets, dtype=np.float32)
    predictions = np.asarray(predictions, dtype=np.float32)
    if targets.shape != predictions.shape:
        raise ValueError(f"predictions: expected shape {targets.shape} to match targets, "
                         f"got {predictions.shape}")
    return np.asarray(ops.binary_crossentropy(targets, predictions))


def per_image_bce(targets: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Return each image's mean per-pixel binary cross-entropy (N,), in float64."""
    targets, predictions = check_matching_images(targets, predictions)
    return binary_cross_entropy(targets, predictions).reshape(len(targets), -1).mean(
        axis=1, dtype=np.float64)


def mean_binary_cross_entropy(targets: np.ndarray, predictions: np.ndarray) -> float:
    """Return the mean per-pixel binary cross-entropy of predicted images."""
    return float(per_image_bce(targets, predictions).mean())


def per_image_squared_error(targets: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Return each image's mean per-pixel squared error (N,), in float64."""
    targets, predictions = check_matching_images(targets, predictions)
    differences = targets.astype(np.float64) - predictions
    return (differences ** 2).reshape(len(targets), -1).mean(axis=1)


def unit_activity(encoder: keras.Model, images: np.ndarray) -> dict[str, np.ndarray]:
    """Return, per ReLU unit (channel) of the encoder, whether any image makes it positive."""
    relu_layers = [layer for layer in encoder.layers
                   if getattr(layer, "activation", None) is keras.activations.relu]
    if not relu_layers:
        raise ValueError("encoder: expected layers with ReLU activations, found none")
    probe = keras.Model(encoder.input, [layer.output for layer in relu_layers])
    # Not predict: the activations are hundreds of megabytes, not worth keeping in a cache.
    outputs = run_in_batches(probe, check_images(images), PREDICT_BATCH_SIZE)
    # A unit is a channel: the last axis of a convolution's or a dense layer's output.
    return {"active": np.concatenate([np.any(np.asarray(output).reshape(
        -1, output.shape[-1]) > 0, axis=0) for output in outputs])}


def dead_unit_share(encoder: keras.Model, images: np.ndarray) -> float:
    """Return the share of the encoder's ReLU units (channels) that stay 0 on every image.

    Kept in the cache once cache_predictions() is on."""
    return 1.0 - float(np.mean(cached_when_on(unit_activity, encoder, images)["active"]))


def pca_2d(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project codes (N, D) on their first two principal components; return points, ratios."""
    from sklearn.decomposition import PCA

    codes = check_codes(codes)
    if codes.shape[0] < 2 or codes.shape[1] < 2:
        raise ValueError(f"codes: expected an (N, D) array with N >= 2 and D >= 2, "
                         f"got {codes.shape}")
    pca = PCA(n_components=2, random_state=0)
    return pca.fit_transform(codes), pca.explained_variance_ratio_


def knn_correct(train_codes: np.ndarray, train_labels: np.ndarray, test_codes: np.ndarray,
                test_labels: np.ndarray, neighbours: int = 5) -> np.ndarray:
    """Return, per test code, whether a k-nearest-neighbour classifier labels it correctly."""
    from sklearn.neighbors import KNeighborsClassifier

    train_codes, test_codes = check_codes(train_codes, "train_codes"), check_codes(
        test_codes, "test_codes", dimensions=np.shape(train_codes)[1])
    train_labels = check_labels(train_labels, len(train_codes), "train_labels")
    test_labels = check_labels(test_labels, len(test_codes), "test_labels")
    if check_positive_int(neighbours, "neighbours") > len(train_codes):
        raise ValueError(f"neighbours: expected at most the {len(train_codes)} training codes, "
                         f"got {neighbours}")
    classifier = KNeighborsClassifier(n_neighbors=neighbours).fit(train_codes, train_labels)
    return classifier.predict(test_codes) == test_labels


def classify(classifier: keras.Model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return each image's predicted digit and the classifier's probability for it."""
    probabilities = np.asarray(predict(classifier, images))
    return probabilities.argmax(axis=1), probabilities.max(axis=1)


def recognised(classifier: keras.Model, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Return, per image, whether the classifier reads it as its label (any confidence)."""
    return classify(classifier, images)[0] == check_labels(labels, len(images))


def grey_share(images: np.ndarray) -> np.ndarray:
    """Return, per image, the share of pixels that are grey (between 0.1 and 0.9): blur."""
    images = np.asarray(images, np.float64).reshape(len(images), -1)
    return ((images > 0.1) & (images < 0.9)).mean(axis=1)

"""The per-image measures (ca4lib.measures): binary cross-entropy and squared error per image,
the mean BCE, kNN accuracy of latent codes, grey pixels, dead ReLU units and the 2-D PCA,
against NumPy and Keras recomputations and on constructed cases whose answer is known
(separated clusters, orthogonal codes, encoders with weights set by hand)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
import pytest
from test_models import numpy_bce, to_numpy

import ca4_helpers as ca4
from ca4lib import measures

# ---------------------------------------------------------------------------------------------
# Binary cross-entropy and squared error per image
# ---------------------------------------------------------------------------------------------


def images_and_predictions(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.uniform(size=(5, 28, 28, 1)).astype(np.float32)
    targets[0] = 1.0  # every pixel ink
    targets[1] = 0.0
    predictions = rng.uniform(size=(5, 28, 28, 1)).astype(np.float32)
    predictions[0, :5] = 0.0  # clipped to 1e-7: a large but finite loss
    predictions[1, :5] = 1.0  # clipped to 1 - 1e-7
    return targets, predictions


def test_per_image_bce_against_numpy_with_keras_clipping():
    targets, predictions = images_and_predictions()
    epsilon = np.float32(1e-7)
    clipped = np.clip(predictions, epsilon, np.float32(1) - epsilon).astype(np.float64)
    t = targets.astype(np.float64)
    expected = -(t * np.log(clipped) + (1 - t) * np.log(1 - clipped)).reshape(5, -1).mean(axis=1)
    found = measures.per_image_bce(targets, predictions)
    assert found.shape == (5,) and found.dtype == np.float64
    np.testing.assert_allclose(found, expected, rtol=1e-5)
    # Five rows of 28 zero predictions under ink: 140 pixels at -log(1e-7) = 16.1 each.
    assert found[0] > 140 * 16.0 / 784


def test_per_image_squared_error_against_numpy():
    targets, predictions = images_and_predictions(1)
    expected = ((targets.astype(np.float64) - predictions.astype(np.float64)) ** 2).reshape(
        5, -1).mean(axis=1)
    found = measures.per_image_squared_error(targets, predictions)
    assert found.dtype == np.float64
    np.testing.assert_allclose(found, expected, rtol=1e-12)
    half = np.zeros((1, 28, 28, 1), np.float32)
    half[0, :14] = 1.0  # half of the pixels off by 1
    assert measures.per_image_squared_error(half, np.zeros_like(half))[0] == pytest.approx(0.5)


def test_per_image_measures_reject_mismatched_images():
    targets, predictions = images_and_predictions()
    with pytest.raises(ValueError, match="predictions: expected shape"):
        measures.per_image_bce(targets, predictions[:3])
    with pytest.raises(ValueError, match="predictions: expected shape"):
        measures.per_image_squared_error(targets, predictions[:3])


def test_mean_binary_cross_entropy_matches_keras_and_numpy():
    rng = np.random.default_rng(2)
    targets = rng.uniform(size=(4, 28, 28, 1)).astype(np.float32)
    targets[0] = 0.0
    targets[1, :, :5] = 1.0
    predictions = rng.uniform(0.01, 0.99, size=(4, 28, 28, 1)).astype(np.float32)
    predictions[2, 0, :5] = 0.0  # clipped at 1e-7
    predictions[3, 1, :5] = 1.0
    actual = measures.mean_binary_cross_entropy(targets, predictions)
    keras_value = float(to_numpy(keras.losses.BinaryCrossentropy()(targets, predictions)))
    assert actual == pytest.approx(keras_value, rel=1e-6)
    assert actual == pytest.approx(float(numpy_bce(targets, predictions).mean()), rel=1e-5)


def test_mean_binary_cross_entropy_known_values():
    rng = np.random.default_rng(3)
    targets = rng.uniform(size=(2, 28, 28, 1)).astype(np.float32)
    # A prediction of 1/2 costs ln 2 whatever the target.
    half = np.full_like(targets, 0.5)
    assert measures.mean_binary_cross_entropy(targets, half) == pytest.approx(math.log(2), rel=1e-6)
    # Certain and wrong: the cost is capped by the clipping at 1e-7 (float32), not infinite.
    ones, zeros = np.ones_like(targets), np.zeros_like(targets)
    capped = -math.log(float(np.float32(1e-7)))
    assert measures.mean_binary_cross_entropy(ones, zeros) == pytest.approx(capped, rel=1e-5)
    # Certain and right: almost nothing.
    assert measures.mean_binary_cross_entropy(ones, ones) < 1e-6


# ---------------------------------------------------------------------------------------------
# k-nearest-neighbour accuracy of latent codes
# ---------------------------------------------------------------------------------------------


def clusters(per_digit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ten tight clusters of 2-D codes, digit d around (10 d, -5 d): far apart from each other."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_digit)
    centres = np.stack([10.0 * labels, -5.0 * labels], axis=1)
    return centres + rng.normal(scale=0.1, size=centres.shape), labels


def test_knn_correct_of_separated_clusters_is_all_true():
    train_codes, train_labels = clusters(20, seed=0)
    test_codes, test_labels = clusters(10, seed=1)
    correct = measures.knn_correct(train_codes, train_labels, test_codes, test_labels)
    assert correct.shape == (100,) and correct.dtype == bool
    assert correct.all()


def test_knn_correct_of_labels_unrelated_to_the_codes_is_near_chance():
    rng = np.random.default_rng(0)
    train_codes, test_codes = rng.uniform(size=(2000, 2)), rng.uniform(size=(1000, 2))
    train_labels, test_labels = rng.integers(0, 10, 2000), rng.integers(0, 10, 1000)
    accuracy = measures.knn_correct(train_codes, train_labels, test_codes, test_labels).mean()
    assert 0.0 <= accuracy < 0.3  # chance is 0.1 with ten classes


def test_knn_correct_flips_exactly_the_test_point_beside_a_mislabelled_isolated_neighbour():
    train_codes, train_labels = clusters(20, seed=0)
    test_codes, test_labels = clusters(10, seed=1)
    # One training code far from every cluster, and one test code right beside it (digit 3).
    train_codes = np.vstack([train_codes, [[500.0, 500.0]]])
    test_codes = np.vstack([test_codes, [[500.1, 500.0]]])
    test_labels = np.append(test_labels, 3)
    right = measures.knn_correct(train_codes, np.append(train_labels, 3), test_codes, test_labels,
                            neighbours=1)
    wrong = measures.knn_correct(train_codes, np.append(train_labels, 7), test_codes, test_labels,
                            neighbours=1)
    assert right.all()
    np.testing.assert_array_equal(np.flatnonzero(~wrong), [len(test_labels) - 1])


def test_knn_correct_rejects_more_neighbours_than_training_codes():
    train_codes, train_labels = clusters(1, seed=0)
    with pytest.raises(ValueError, match="neighbours: expected at most the 10 training codes"):
        measures.knn_correct(train_codes, train_labels, train_codes, train_labels, neighbours=11)


def test_knn_correct_votes_by_the_majority_of_the_neighbours():
    # Three codes of digit 1 at 0, two of digit 2 at 0.1: the 5 neighbours of 0.06 vote 3 to 2
    # for digit 1, its single nearest neighbour is digit 2.
    train_codes = np.array([[0.0], [0.0], [0.0], [0.1], [0.1]])
    train_labels = np.array([1, 1, 1, 2, 2])
    test_codes, test_labels = np.array([[0.06], [0.06]]), np.array([1, 2])
    np.testing.assert_array_equal(
        measures.knn_correct(train_codes, train_labels, test_codes, test_labels), [True, False])
    np.testing.assert_array_equal(
        measures.knn_correct(train_codes, train_labels, test_codes, test_labels, neighbours=1),
        [False, True])


def test_knn_correct_rejects_codes_of_another_dimension():
    with pytest.raises(ValueError, match=r"test_codes: expected an array of shape \(N, 2\)"):
        measures.knn_correct(np.zeros((5, 2)), np.zeros(5, int), np.zeros((2, 3)), np.zeros(2, int))


# ---------------------------------------------------------------------------------------------
# grey_share
# ---------------------------------------------------------------------------------------------


def test_grey_share_counts_pixels_strictly_between_0_1_and_0_9():
    images = np.zeros((4, 28, 28, 1))
    images[1, :7] = 0.5  # a quarter of the pixels grey
    images[2, :14] = 0.1  # the boundaries are not grey
    images[2, 14:] = 0.9
    images[3] = 0.899  # all grey
    np.testing.assert_allclose(measures.grey_share(images), [0.0, 0.25, 0.0, 1.0])


# ---------------------------------------------------------------------------------------------
# Dead ReLU units
# ---------------------------------------------------------------------------------------------


def relu_unit_count(encoder: keras.Model) -> int:
    """Channels of the encoder's ReLU layers, read from the layer configurations."""
    count = 0
    for layer in encoder.layers:
        config = layer.get_config()
        if config.get("activation") == "relu":
            count += config.get("filters") or config["units"]
    return count


def test_dead_unit_share_counts_channels_that_stay_zero():
    ca4.set_seed(0)
    encoder = ca4.build_autoencoder_encoder(2)
    first, second = [layer for layer in encoder.layers if isinstance(layer, keras.layers.Conv2D)]
    (dense,) = [layer for layer in encoder.layers
                if isinstance(layer, keras.layers.Dense) and layer.get_config()["activation"] == "relu"]
    # First conv: zero kernel; bias -1 in channels 0-7 (dead), +0.5 in the others (always on).
    kernel, bias = (np.array(w) for w in first.get_weights())
    bias[:] = 0.5
    bias[:8] = -1.0
    first.set_weights([np.zeros_like(kernel), bias])
    # The layers after it: zero kernel, bias +1, so that every one of their units is on.
    for layer in (second, dense):
        kernel, bias = layer.get_weights()
        layer.set_weights([np.zeros_like(kernel), np.ones_like(bias)])
    images = np.random.default_rng(0).uniform(size=(8, 28, 28, 1)).astype(np.float32)
    first_output = np.asarray(keras.Model(encoder.input, first.output)(images))
    assert np.all(first_output[..., :8] == 0) and np.all(first_output[..., 8:] > 0)
    assert measures.dead_unit_share(encoder, images) == pytest.approx(8 / relu_unit_count(encoder))


def test_dead_unit_share_when_the_first_layer_is_dead():
    ca4.set_seed(0)
    encoder = ca4.build_autoencoder_encoder(2)
    layers = [layer for layer in encoder.layers if layer.get_config().get("activation") == "relu"]
    kernel, bias = layers[0].get_weights()
    layers[0].set_weights([np.zeros_like(kernel), np.full_like(bias, -1.0)])
    for layer in layers[1:]:  # zero input and zero bias after a dead layer: nothing turns on
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel, np.zeros_like(bias)])
    images = np.random.default_rng(1).uniform(size=(8, 28, 28, 1)).astype(np.float32)
    assert measures.dead_unit_share(encoder, images) == 1.0


def test_dead_unit_share_of_an_untrained_encoder(mnist_small):
    ca4.set_seed(0)
    share = measures.dead_unit_share(ca4.build_autoencoder_encoder(10),
                                mnist_small["validation_images"][:64])
    assert 0.0 <= share < 1.0


# ---------------------------------------------------------------------------------------------
# pca_2d
# ---------------------------------------------------------------------------------------------


def orthogonal_codes(spreads: Sequence[float]) -> np.ndarray:
    """Codes whose columns are orthogonal, centred, with standard deviations `spreads`.

    The columns of a Hadamard matrix (less its constant first column) are orthogonal +-1
    patterns with mean 0 and variance 1: the codes' covariance is diag(spreads ** 2) exactly,
    so the principal components are the columns themselves, in order of spread.
    """
    from scipy.linalg import hadamard

    return hadamard(8)[:, 1:len(spreads) + 1] * np.asarray(spreads, dtype=np.float64)


def test_pca_2d_of_codes_with_known_variances():
    codes = orthogonal_codes([1.0, 3.0, 2.0])  # variances 1, 9, 4 (total 14)
    points, ratios = measures.pca_2d(codes)
    np.testing.assert_allclose(ratios, [9 / 14, 4 / 14])
    # The first component is the second column (spread 3), the second the third, up to sign.
    for component, column in ((0, 1), (1, 2)):
        sign = np.sign(points[0, component] / codes[0, column])
        np.testing.assert_allclose(points[:, component], sign * codes[:, column], atol=1e-12)


def test_pca_2d_of_a_plane_explains_everything():
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(2, 6))
    codes = rng.normal(size=(100, 2)) @ basis
    _, ratios = measures.pca_2d(codes)
    assert ratios.sum() == pytest.approx(1.0)

"""ca4_helpers.py's data: `normalize_images` (scaling, and the refusal of wrong arrays) and
`add_gaussian_noise` (seeded, clipped, of the requested spread), on constructed arrays with
known answers and on a few real MNIST images. The MNIST loader: test_mnist.py."""

from __future__ import annotations

import re

import numpy as np
import pytest

import ca4_helpers as ca4

# --- normalize_images -----------------------------------------------------------------------------


def test_normalize_images_scales_uint8_to_unit_float():
    raw = np.zeros((3, 28, 28), dtype=np.uint8)
    raw[0, 0, 0] = 255
    raw[1, 5, 7] = 51
    normalised = ca4.normalize_images(raw)
    assert normalised.dtype == np.float32
    assert normalised.shape == (3, 28, 28, 1)
    assert normalised[0, 0, 0, 0] == 1.0
    assert normalised[1, 5, 7, 0] == pytest.approx(0.2)
    assert normalised.min() >= 0.0 and normalised.max() <= 1.0
    np.testing.assert_allclose(normalised[..., 0] * 255.0, raw, atol=1e-4)


def test_normalize_images_accepts_channel_axis():
    raw = np.random.default_rng(0).integers(0, 256, size=(2, 28, 28, 1), dtype=np.uint8)
    np.testing.assert_array_equal(ca4.normalize_images(raw), ca4.normalize_images(raw[..., 0]))


def test_normalize_real_images(mnist_raw):
    (x_train, _), _ = mnist_raw
    normalised = ca4.normalize_images(x_train[:50])
    assert normalised.max() == 1.0 and normalised.min() == 0.0


@pytest.mark.parametrize("images, error, pattern", [
    (np.zeros((2, 28, 28), dtype=np.float32), ValueError, "dtype float32"),
    (np.zeros((2, 32, 32), dtype=np.uint8), ValueError, r"\(2, 32, 32\)"),
    (np.zeros((2, 28, 28, 3), dtype=np.uint8), ValueError, r"\(2, 28, 28, 3\)"),
    (np.zeros((28, 28), dtype=np.uint8), ValueError, r"\(28, 28\)"),
    (np.full((1, 28, 28), 300, dtype=np.int16), ValueError, "0-255"),
    (np.full((1, 28, 28), -1, dtype=np.int16), ValueError, "0-255"),
    ([[0] * 28] * 28, TypeError, "list"),
])
def test_normalize_images_rejects(images, error, pattern):
    with pytest.raises(error, match=re.compile(f"images.*{pattern}", re.S)):
        ca4.normalize_images(images)


# --- add_gaussian_noise ---------------------------------------------------------------------------


def test_noise_is_reproducible_and_seeded(mnist_small):
    images = mnist_small["train_images"][:16]
    first = ca4.add_gaussian_noise(images, 0.3, seed=5)
    np.testing.assert_array_equal(first, ca4.add_gaussian_noise(images, 0.3, seed=5))
    assert not np.array_equal(first, ca4.add_gaussian_noise(images, 0.3, seed=6))
    assert not np.array_equal(first, images)


def test_noise_is_clipped_to_unit_interval(mnist_small):
    images = mnist_small["train_images"][:64]
    noisy = ca4.add_gaussian_noise(images, 0.5, seed=0)
    assert noisy.dtype == np.float32 and noisy.shape == images.shape
    assert noisy.min() == 0.0 and noisy.max() == 1.0  # strong noise reaches both bounds
    # Zero-mean noise pushes about half of the black pixels below 0 (clipped to exactly 0)
    # and about half of the white pixels above 1 (clipped to exactly 1).
    black, white = images == 0, images == 1
    assert black.sum() > 1000 and white.sum() > 50
    assert np.mean(noisy[black] == 0) == pytest.approx(0.5, abs=0.05)
    assert np.mean(noisy[white] == 1) == pytest.approx(0.5, abs=0.15)


def test_noise_with_zero_stddev_returns_the_input(mnist_small):
    images = mnist_small["train_images"][:8]
    np.testing.assert_array_equal(ca4.add_gaussian_noise(images, 0.0), images)


def test_noise_has_requested_spread():
    images = np.full((50, 28, 28, 1), 0.5, dtype=np.float32)
    noise = ca4.add_gaussian_noise(images, 0.05, seed=1) - images
    assert abs(float(noise.mean())) < 0.002
    assert float(noise.std()) == pytest.approx(0.05, rel=0.03)

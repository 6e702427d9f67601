"""Task 1's rows (ca4lib.task1_analyses): the PCA overlap of digits, the latent-size rows and
the denoising rows, on constructed codes, per-image evidence and images whose answer is
computed here independently (NumPy, `sd_over_root_n`)."""

from __future__ import annotations

import numpy as np
import pytest
from test_estimates import sd_over_root_n

from ca4lib import task1_analyses

# ---------------------------------------------------------------------------------------------
# pca_overlap
# ---------------------------------------------------------------------------------------------


def test_pca_overlap_of_constructed_clusters():
    # Digits 0-7 in clusters of their own; 8 and 9 drawn from one and the same cluster.
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 50)
    centres = np.stack([np.arange(10) * 10.0, np.zeros(10)], axis=1)
    centres[9] = centres[8]
    points = centres[labels] + rng.normal(0.0, 0.5, (500, 2))
    found = task1_analyses.pca_overlap(points, labels, neighbours=10)
    assert found["purity"][:8] == [1.0] * 8
    assert 0.3 < found["purity"][8] < 0.7 and 0.3 < found["purity"][9] < 0.7
    top = found["pairs"][0]
    assert top["digits"] == [8, 9] and top["share"] == pytest.approx(
        (1 - found["purity"][8] + 1 - found["purity"][9]) / 2)
    assert all(pair["share"] == 0.0 for pair in found["pairs"][1:])


# ---------------------------------------------------------------------------------------------
# latent_size_rows
# ---------------------------------------------------------------------------------------------


def test_latent_size_rows_with_known_gains():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.08, 0.12, 200)
    wiggle = rng.normal(0.0, 0.002, 200)
    bce = {2: base + 0.05, 10: base + 0.01 + wiggle, 32: base}
    # Gains per image: 0.04 - wiggle from 2 to 10, 0.01 + wiggle from 10 to 32; the gain shrinks
    # by 0.03 - 2 x wiggle per image.
    hits = {2: rng.uniform(size=200) < 0.6, 10: rng.uniform(size=200) < 0.9,
            32: rng.uniform(size=200) < 0.95}
    knn = {2: rng.uniform(size=200) < 0.7, 10: rng.uniform(size=200) < 0.8,
           32: rng.uniform(size=200) < 0.8}
    evidence = {size: {"bce": bce[size], "recognised": hits[size], "knn": knn[size]}
                for size in (2, 10, 32)}
    rows = task1_analyses.latent_size_rows(evidence, {2: 3, 10: 4, 32: 5})
    assert [row["latent_dim"] for row in rows] == [2, 10, 32]
    assert [row["epochs"] for row in rows] == [3, 4, 5]
    assert rows[1]["bce_change"] == pytest.approx(-0.04 + wiggle.mean())
    assert rows[2]["bce_change"] == pytest.approx(-0.01 - wiggle.mean())
    assert "gain_shrink" not in rows[0] and "gain_shrink" not in rows[1]
    shrink = 0.03 - 2 * wiggle
    assert rows[2]["gain_shrink"] == pytest.approx(shrink.mean())
    assert rows[2]["gain_shrink_se"] == pytest.approx(sd_over_root_n(shrink))
    assert rows[2]["recognised"] == pytest.approx(hits[32].mean())
    assert rows[1]["knn_change"] == pytest.approx(knn[10].mean() - knn[2].mean())


def test_latent_size_rows_of_constant_gains_have_no_spread():
    base = np.linspace(0.1, 0.2, 50)
    evidence = {size: {"bce": base + offset, "recognised": np.ones(50, bool),
                       "knn": np.ones(50, bool)}
                for size, offset in ((4, 0.3), (8, 0.1), (16, 0.05))}
    rows = task1_analyses.latent_size_rows(evidence, dict.fromkeys((4, 8, 16), 1))
    assert rows[2]["gain_shrink"] == pytest.approx(0.2 - 0.05)
    assert rows[2]["gain_shrink_se"] == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# denoising_rows
# ---------------------------------------------------------------------------------------------


def test_denoising_rows_of_constructed_images():
    count = 6
    clean = np.zeros((count, 28, 28, 1), np.float32)
    clean[:, 10:18] = 1.0  # a bar of ink, 8 rows of 28 pixels
    noisy, denoised, plain = clean.copy(), clean.copy(), clean.copy()
    noisy[:, :4] = 0.5  # 112 pixels off by 0.5 in every image
    for i in range(count):
        denoised[i, 0, : i + 1] = 0.5  # i + 1 pixels off by 0.5: grey
        plain[i, 0, : 2 * i + 2] = 0.5
    rows = task1_analyses.denoising_rows(clean, noisy, denoised, plain)
    assert [row["images"] for row in rows] == ["noisy inputs", "denoiser",
                                              "clean-trained autoencoder"]
    noisy_mse = np.full(count, 112 * 0.25 / 784)
    denoised_mse = (np.arange(count) + 1) * 0.25 / 784
    plain_mse = 2 * denoised_mse
    assert rows[0]["mse"] == pytest.approx(noisy_mse.mean())
    assert rows[0]["mse_se"] == pytest.approx(0.0, abs=1e-15)
    assert rows[1]["mse"] == pytest.approx(denoised_mse.mean())
    assert rows[1]["mse_se"] == pytest.approx(sd_over_root_n(denoised_mse))
    assert rows[1]["mse_change"] == pytest.approx(denoised_mse.mean() - noisy_mse.mean())
    assert rows[2]["mse_change"] == pytest.approx(plain_mse.mean() - noisy_mse.mean())
    assert rows[1]["mse_vs_plain"] == pytest.approx((denoised_mse - plain_mse).mean())
    assert rows[1]["mse_vs_plain_se"] == pytest.approx(sd_over_root_n(denoised_mse - plain_mse))
    # Grey pixels: none in the clean images, 112 in each noisy one, i + 1 in denoised image i.
    assert rows[0]["grey"] == pytest.approx(112 / 784)
    assert rows[1]["clean_grey"] == 0.0
    assert rows[1]["grey"] == pytest.approx(3.5 / 784)
    assert rows[1]["grey_vs_clean"] == pytest.approx(3.5 / 784)
    assert rows[1]["grey_vs_clean_se"] == pytest.approx(
        sd_over_root_n((np.arange(count) + 1) / 784))

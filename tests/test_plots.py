"""Figures (structure, labels, legends), PCA and the Markdown reporting helpers."""

from __future__ import annotations

import matplotlib.figure
import numpy as np
import pytest

import ca4_helpers as ca4

# conftest.py sets MPLBACKEND=Agg before matplotlib is imported (no display needed) and
# closes every figure after each test.


def image_axes(figure: matplotlib.figure.Figure):
    return [axis for axis in figure.axes if axis.images]


def test_plot_reconstructions_layout(mnist_small):
    originals = mnist_small["validation_images"][:6]
    reconstructions = originals[::-1].copy()
    labels = mnist_small["validation_labels"][:6]
    figure = ca4.plot_reconstructions(originals, reconstructions, labels, title="Check")
    assert isinstance(figure, matplotlib.figure.Figure)
    axes = image_axes(figure)
    assert len(axes) == 12
    grid = {axis.get_subplotspec().get_geometry()[:2] for axis in axes}
    assert grid == {(2, 6)}
    assert axes[0].get_ylabel() == "Original" and axes[6].get_ylabel() == "Reconstruction"
    assert [axis.get_title() for axis in axes[:6]] == [f"digit {d}" for d in labels]
    assert figure.get_suptitle() == "Check"
    np.testing.assert_array_equal(axes[6].images[0].get_array(), reconstructions[0, ..., 0])


def test_plot_reconstructions_default_title_and_no_labels(mnist_small):
    images = mnist_small["validation_images"][:3]
    figure = ca4.plot_reconstructions(images, images)
    assert figure.get_suptitle() == "Test digits and their reconstructions"
    assert all(axis.get_title() == "" for axis in figure.axes)


def test_plot_image_rows_with_three_rows(mnist_small):
    images = mnist_small["validation_images"][:4]
    noisy = ca4.add_gaussian_noise(images, 0.3)
    rows = {"Clean": images, "Noisy": noisy, "Denoised": images}
    figure = ca4.plot_image_rows(rows, "Denoising")
    axes = image_axes(figure)
    assert len(axes) == 12
    assert {axis.get_subplotspec().get_geometry()[:2] for axis in axes} == {(3, 4)}
    assert [axes[4 * row].get_ylabel() for row in range(3)] == ["Clean", "Noisy", "Denoised"]
    assert figure.get_suptitle() == "Denoising"
    np.testing.assert_array_equal(axes[4].images[0].get_array(), noisy[0, ..., 0])


def test_plot_image_rows_rejects_ragged_rows(mnist_small):
    images = mnist_small["validation_images"]
    with pytest.raises(ValueError, match="same number of images"):
        ca4.plot_image_rows({"a": images[:3], "b": images[:4]}, "ragged")


def test_plot_loss_curves():
    histories = {
        "latent 2": {"loss": [0.3, 0.2, 0.15], "val_loss": [0.31, 0.22, 0.18],
                     "kl_loss": [3.0, 2.0, 1.5], "val_kl_loss": [3.1, 2.1, 1.6]},
        "latent 10": {"loss": [0.25, 0.12, 0.1], "val_loss": [0.26, 0.13, 0.11],
                      "kl_loss": [4.0, 3.0, 2.5], "val_kl_loss": [4.1, 3.1, 2.6]},
    }
    figure = ca4.plot_loss_curves(histories, metrics=("loss", "kl_loss"), title="Curves",
                                  ylabels={"loss": "BCE per pixel"})
    axes = figure.axes
    assert len(axes) == 2
    assert [axis.get_title() for axis in axes] == ["loss", "kl loss"]
    assert all(axis.get_xlabel() == "epoch" for axis in axes)
    assert axes[0].get_ylabel() == "BCE per pixel" and axes[1].get_ylabel() == "kl loss"
    for axis in axes:
        entries = [text.get_text() for text in axis.get_legend().get_texts()]
        assert entries == ["latent 2 (train)", "latent 2 (validation)",
                           "latent 10 (train)", "latent 10 (validation)"]
    train_line = axes[1].get_lines()[0]
    np.testing.assert_array_equal(train_line.get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(train_line.get_ydata(), [3.0, 2.0, 1.5])
    assert axes[1].get_lines()[1].get_linestyle() == "--"
    assert figure.get_suptitle() == "Curves"


def test_plot_loss_curves_needs_validation_values():
    with pytest.raises(ValueError, match="val_loss"):
        ca4.plot_loss_curves({"run": {"loss": [1.0]}})


def test_pca_2d():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(300, 5)) * np.array([5.0, 3.0, 1.0, 0.5, 0.1])
    points, ratios = ca4.pca_2d(codes)
    assert points.shape == (300, 2)
    assert ratios.shape == (2,)
    assert ratios[0] >= ratios[1] > 0
    assert ratios.sum() <= 1.0
    # The spread along the components is sorted like the variances of the columns.
    assert points[:, 0].var() > points[:, 1].var()
    np.testing.assert_allclose(points.mean(axis=0), 0.0, atol=1e-9)


def test_pca_2d_of_a_plane_explains_everything():
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(2, 6))
    codes = rng.normal(size=(100, 2)) @ basis
    _, ratios = ca4.pca_2d(codes)
    assert ratios.sum() == pytest.approx(1.0)


def test_plot_latent_pca(mnist_small):
    labels = mnist_small["validation_labels"]
    assert set(labels.tolist()) == set(range(10))
    codes = np.random.default_rng(0).normal(size=(len(labels), 10)) + labels[:, None]
    figure = ca4.plot_latent_pca(codes, labels, title="PCA")
    (axis,) = [a for a in figure.axes if a.get_legend() is not None]
    assert "% of variance" in axis.get_xlabel() and "% of variance" in axis.get_ylabel()
    assert axis.get_xlabel().startswith("PC 1") and axis.get_ylabel().startswith("PC 2")
    legend = axis.get_legend()
    assert legend.get_title().get_text() == "Digit"
    assert [text.get_text() for text in legend.get_texts()] == [str(d) for d in range(10)]
    assert axis.get_title() == "PCA"


def test_plot_latent_means_one_axes_per_run(mnist_small):
    labels = mnist_small["validation_labels"]
    rng = np.random.default_rng(0)
    runs = {f"kl {w}": rng.normal(size=(len(labels), 2)) for w in (0.1, 1.0, 5.0)}
    figure = ca4.plot_latent_means(runs, labels)
    assert len(figure.axes) == 3
    assert [axis.get_title() for axis in figure.axes] == list(runs)
    assert all(axis.get_xlabel() == "z[0]" and axis.get_ylabel() == "z[1]" for axis in figure.axes)
    # Only the last panel carries the digit legend.
    assert [axis.get_legend() is not None for axis in figure.axes] == [False, False, True]


def test_plot_latent_grids_one_axes_per_run():
    ca4.set_seed(0)
    decoders = {"kl 0.1": ca4.build_decoder(2), "kl 1": ca4.build_decoder(2)}
    figure = ca4.plot_latent_grids(decoders, points_per_side=5, title="Grids")
    assert len(figure.axes) == 2
    assert [axis.get_title() for axis in figure.axes] == ["kl 0.1", "kl 1"]
    for axis in figure.axes:
        assert axis.images[0].get_array().shape == (140, 140)
        assert [t.get_text() for t in axis.get_xticklabels()] == ["-2.0", "-1.0", "0.0", "1.0", "2.0"]
        assert [t.get_text() for t in axis.get_yticklabels()] == ["2.0", "1.0", "0.0", "-1.0", "-2.0"]
    assert figure.get_suptitle() == "Grids"


def test_markdown_table():
    rows = [{"name": "ae", "loss": 0.123456, "parameters": 1234567},
            {"name": "vae", "loss": 2.5, "parameters": 12}]
    table = ca4.markdown_table(rows, {"name": "Model", "loss": "Loss|.3f",
                                      "parameters": "Parameters|,"})
    assert table.splitlines() == [
        "| Model | Loss | Parameters |",
        "|---|---|---|",
        "| ae | 0.123 | 1,234,567 |",
        "| vae | 2.500 | 12 |",
    ]


def test_summary_markdown_names_layers():
    ca4.set_seed(0)
    model = ca4.build_autoencoder(2)
    text = ca4.summary_markdown(model.encoder, model.decoder)
    for layer in [*model.encoder.layers, *model.decoder.layers]:
        assert f"| {layer.name} | {type(layer).__name__} |" in text
    assert f"**{model.encoder.name}** ({model.encoder.count_params():,} parameters)" in text
    assert "| pixels | Conv2D | (None, 28, 28, 1) | 145 |" in text
    assert text.count("| Layer | Type | Output shape | Parameters |") == 2

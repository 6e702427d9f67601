"""Every figure (ca4lib.figures): structure, labels, legends, ticks against the latent values
they mark, error bars against the t quantile, legibility in the PDF, and `show_figure`
saving and showing what the inline backend would, on constructed images, codes, rows and
decoders whose output is known."""

from __future__ import annotations

import io

import matplotlib
import matplotlib.figure
import matplotlib.patches
import matplotlib.pyplot as plt
import matplotlib.text
import numpy as np
import PIL.Image
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from scipy import stats
from scipy.stats import norm
from test_measures import orthogonal_codes
from test_models import linear_decoder

import ca4_helpers as ca4
from ca4lib import figures, latent_space, settings

# conftest.py sets MPLBACKEND=Agg before matplotlib is imported (no display needed) and
# closes every figure after each test.

TAB10 = np.array(matplotlib.colormaps["tab10"].colors)


def image_axes(figure: matplotlib.figure.Figure):
    return [axis for axis in figure.axes if axis.images]


def visible_axes(figure: matplotlib.figure.Figure):
    return [axis for axis in figure.axes if axis.get_visible()]


def geometry(axis) -> tuple[int, int, int]:
    rows, columns, start, _ = axis.get_subplotspec().get_geometry()
    return int(rows), int(columns), int(start)


def rectangles(axis) -> list[matplotlib.patches.Rectangle]:
    return [patch for patch in axis.patches if isinstance(patch, matplotlib.patches.Rectangle)]


def assert_digit_legend(figure: matplotlib.figure.Figure) -> None:
    """One figure-level legend of the ten digits in the tab10 colours, and no axes legends."""
    assert len(figure.legends) == 1
    (legend,) = figure.legends
    assert legend.get_title().get_text() == "Digit"
    assert [text.get_text() for text in legend.get_texts()] == [str(d) for d in range(10)]
    colours = [matplotlib.colors.to_rgb(handle.get_color()) for handle in legend.legend_handles]
    np.testing.assert_allclose(colours, TAB10)
    assert all(axis.get_legend() is None for axis in figure.axes)


def pixel_to_latent(position: float, values: np.ndarray) -> float:
    """The latent value at a pixel position of a decoded grid with 28-pixel tiles (linear grid)."""
    step = (values[-1] - values[0]) / (len(values) - 1)
    return values[0] + step * (position - 13.5) / 28


def tick_values(axis, which: str) -> tuple[np.ndarray, np.ndarray]:
    ticks = axis.get_xticks() if which == "x" else axis.get_yticks()
    labels = axis.get_xticklabels() if which == "x" else axis.get_yticklabels()
    values = [float(label.get_text().replace("\N{MINUS SIGN}", "-")) for label in labels]
    return np.asarray(ticks, dtype=np.float64), np.asarray(values)


# ---------------------------------------------------------------------------------------------
# show_figure
# ---------------------------------------------------------------------------------------------


def test_show_figure_saves_a_png_under_the_build_folder_and_closes_the_figure():
    figure, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    number = figure.number
    path = settings.build_dir() / "figures" / "task1_loss.png"
    path.unlink(missing_ok=True)
    figures.show_figure(figure, "task1_loss")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert not plt.fignum_exists(number)


def test_show_figure_shows_the_saved_png_cropped_like_the_inline_backend(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    with matplotlib.rc_context(figures.REPORT_STYLE):
        figure, axis = plt.subplots(figsize=(4, 3))
        axis.plot([0, 1], [1, 0])
        axis.set_title("a title")
        cropped = io.BytesIO()
        # What matplotlib-inline shows for a figure: print_figure with bbox_inches="tight".
        figure.savefig(cropped, format="png", bbox_inches="tight")
        figures.show_figure(figure, "task1_pca", latent_dim=10, test_images=10000)
    image, caption = shown
    assert caption.data == ("**Figure 3.** The 10-number codes of the 10,000 test images "
                            "projected on their first two principal components, coloured by "
                            "digit.")
    saved = (settings.build_dir() / "figures" / "task1_pca.png").read_bytes()
    assert image.data == saved
    assert PIL.Image.open(io.BytesIO(saved)).size == PIL.Image.open(cropped).size
    # Cropped: narrower than the uncropped 4 x 3 in canvas at the report's resolution.
    assert PIL.Image.open(io.BytesIO(saved)).size[0] < 4 * figures.REPORT_STYLE["figure.dpi"]


@pytest.mark.parametrize("name", ["Task1", "task-1", "../escape", "a b", "", "figure.png",
                                  "task1_pcaa"])
def test_show_figure_refuses_a_figure_the_report_does_not_declare(name):
    figure, _ = plt.subplots()
    with pytest.raises(ValueError, match="name: expected one of the report's figures"):
        figures.show_figure(figure, name)
    assert not (settings.build_dir() / "figures" / f"{name}.png").exists()


# ---------------------------------------------------------------------------------------------
# Image rows and sheets
# ---------------------------------------------------------------------------------------------


def test_plot_image_rows_with_three_rows(mnist_small):
    images = mnist_small["validation_images"][:4]
    noisy = ca4.add_gaussian_noise(images, 0.3)
    rows = {"Clean": images, "Noisy": noisy, "Denoised": images[::-1]}
    figure = figures.plot_image_rows(rows, "Denoising")
    assert isinstance(figure, matplotlib.figure.Figure)
    axes = image_axes(figure)
    assert len(axes) == 12
    assert {geometry(axis)[:2] for axis in axes} == {(3, 4)}
    assert [axes[4 * row].get_ylabel() for row in range(3)] == ["Clean", "Noisy", "Denoised"]
    assert all(axis.get_ylabel() == "" for index, axis in enumerate(axes) if index % 4)
    assert all(axis.get_title() == "" for axis in axes)
    assert figure.get_suptitle() == "Denoising"
    np.testing.assert_array_equal(axes[4].images[0].get_array(), noisy[0, ..., 0])
    np.testing.assert_array_equal(axes[11].images[0].get_array(), images[0, ..., 0])
    assert all(axis.get_xticks().size == 0 and axis.get_yticks().size == 0 for axis in axes)
    assert figure.get_figwidth() == pytest.approx(figures.PRINT_WIDTH)


def test_plot_image_rows_column_labels_title_the_first_row(mnist_small):
    originals = mnist_small["validation_images"][:6]
    labels = [f"digit {d}" for d in mnist_small["validation_labels"][:6]]
    rows = {"Original": originals, "Reconstruction": originals[::-1]}
    figure = figures.plot_image_rows(rows, "Check", column_labels=labels)
    axes = image_axes(figure)
    assert len(axes) == 12 and {geometry(axis)[:2] for axis in axes} == {(2, 6)}
    assert [axis.get_title() for axis in axes[:6]] == labels
    assert all(axis.get_title() == "" for axis in axes[6:])
    assert axes[0].get_ylabel() == "Original" and axes[6].get_ylabel() == "Reconstruction"
    np.testing.assert_array_equal(axes[6].images[0].get_array(), originals[5, ..., 0])
    # Ink on paper: 0 is white, 1 is black, whatever the images' own range.
    image = axes[0].images[0]
    assert image.get_cmap().name == figures.INK
    assert image.get_clim() == (0.0, 1.0)


def test_plot_image_rows_rejects_ragged_rows(mnist_small):
    images = mnist_small["validation_images"]
    with pytest.raises(ValueError, match="same number of images"):
        figures.plot_image_rows({"a": images[:3], "b": images[:4]}, "ragged")


def test_plot_image_sheets_layout():
    rng = np.random.default_rng(0)
    sheets = {name: rng.uniform(size=(56, 84)) for name in ("first", "second", "third")}
    figure = figures.plot_image_sheets(sheets, "Samples")
    assert len(figure.axes) == 4  # two columns by default: 2 x 2, the last one hidden
    assert [geometry(axis) for axis in figure.axes] == [(2, 2, i) for i in range(4)]
    assert [axis.get_visible() for axis in figure.axes] == [True, True, True, False]
    for axis, (name, sheet) in zip(figure.axes, sheets.items()):
        assert axis.get_title() == name
        assert not axis.axison
        np.testing.assert_array_equal(axis.images[0].get_array(), sheet)
    assert figure.get_suptitle() == "Samples"
    one_row = figures.plot_image_sheets(sheets, "Samples", columns=3)
    assert [geometry(axis) for axis in one_row.axes] == [(1, 3, i) for i in range(3)]


# ---------------------------------------------------------------------------------------------
# Loss curves
# ---------------------------------------------------------------------------------------------


def test_plot_loss_curves():
    histories = {
        "latent 2": {"loss": [0.3, 0.2, 0.15], "val_loss": [0.31, 0.22, 0.18],
                     "kl_loss": [3.0, 2.0, 1.5], "val_kl_loss": [3.1, 2.1, 1.6]},
        "latent 10": {"loss": [0.25, 0.12, 0.1], "val_loss": [0.26, 0.13, 0.11],
                      "kl_loss": [4.0, 3.0, 2.5], "val_kl_loss": [4.1, 3.1, 2.6]},
    }
    figure = figures.plot_loss_curves(histories, metrics=("loss", "kl_loss"), title="Curves",
                                  ylabels={"loss": "BCE per pixel"})
    axes = figure.axes
    assert len(axes) == 2
    assert [axis.get_title() for axis in axes] == ["loss", "KL term"]
    assert all(axis.get_xlabel() == "epoch" for axis in axes)
    assert axes[0].get_ylabel() == "BCE per pixel" and axes[1].get_ylabel() == "kl loss"
    # One legend for the figure, under the panels, naming every curve once.
    (legend,) = figure.legends
    assert all(axis.get_legend() is None for axis in axes)
    assert [text.get_text() for text in legend.get_texts()] == [
        "latent 2 (train)", "latent 2 (validation)", "latent 10 (train)",
        "latent 10 (validation)"]
    train_line, validation_line = axes[1].get_lines()[:2]
    np.testing.assert_array_equal(train_line.get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(train_line.get_ydata(), [3.0, 2.0, 1.5])
    np.testing.assert_array_equal(validation_line.get_ydata(), [3.1, 2.1, 1.6])
    assert validation_line.get_linestyle() == "--" and train_line.get_linestyle() == "-"
    # A run keeps one colour for both of its curves; runs differ.
    lines = axes[0].get_lines()
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()
    assert figure.get_suptitle() == "Curves"


def test_plot_loss_curves_needs_validation_values():
    with pytest.raises(ValueError, match="val_loss"):
        figures.plot_loss_curves({"run": {"loss": [1.0]}})


# ---------------------------------------------------------------------------------------------
# Latent codes
# ---------------------------------------------------------------------------------------------


def test_scatter_latent_codes_colours_each_digit():
    points = np.array([[0.0, 1.0], [2.0, -1.0], [0.5, 0.5], [3.0, 3.0]])
    labels = np.array([3, 0, 3, 9])
    figure, axis = plt.subplots()
    figures.scatter_latent_codes(points, labels, axis, "x label", "y label", "codes")
    (collection,) = axis.collections
    np.testing.assert_array_equal(collection.get_offsets(), points)
    colours = collection.get_facecolors()[:, :3]
    np.testing.assert_allclose(colours, TAB10[labels])
    assert (axis.get_xlabel(), axis.get_ylabel(), axis.get_title()) == ("x label", "y label",
                                                                        "codes")


def test_plot_latent_pca():
    codes = orthogonal_codes([1.0, 3.0, 2.0])
    labels = np.arange(8) % 10
    figure = figures.plot_latent_pca(codes, labels, title="PCA")
    (axis,) = figure.axes
    assert axis.get_xlabel() == "PC 1 (64.3% of variance)"  # 9 / 14
    assert axis.get_ylabel() == "PC 2 (28.6% of variance)"  # 4 / 14
    assert axis.get_title() == "PCA"
    assert_digit_legend(figure)
    offsets = np.abs(axis.collections[0].get_offsets())
    np.testing.assert_allclose(offsets, np.abs(codes[:, [1, 2]]), atol=1e-12)


def spread_means(count: int, scale_x: float, scale_y: float) -> np.ndarray:
    t = np.linspace(-1.0, 1.0, count)
    return np.stack([scale_x * t, scale_y * t[::-1]], axis=1)


def test_plot_latent_means_shared_axes_region_and_one_legend():
    labels = np.arange(40) % 10
    runs = {"kl 0.1": spread_means(40, 6.0, 1.0), "kl 1": spread_means(40, 1.5, 1.5),
            "kl 5": spread_means(40, 0.3, 0.2)}
    figure = figures.plot_latent_means(runs, labels, extent=2.5, columns=3)
    axes = figure.axes
    assert [geometry(axis) for axis in axes] == [(1, 3, i) for i in range(3)]
    assert [axis.get_title() for axis in axes] == list(runs)
    assert all(axis.get_xlabel() == "z[0]" and axis.get_ylabel() == "z[1]" for axis in axes)
    for axis in axes[1:]:
        assert axes[0].get_shared_x_axes().joined(axes[0], axis)
        assert axes[0].get_shared_y_axes().joined(axes[0], axis)
    for axis, means in zip(axes, runs.values()):
        np.testing.assert_array_equal(axis.collections[0].get_offsets(), means)
        (region,) = rectangles(axis)
        assert region.get_xy() == pytest.approx((-2.5, -2.5))
        assert (region.get_width(), region.get_height()) == pytest.approx((5.0, 5.0))
        assert region.get_linestyle() == "--" and not region.get_fill()
    assert_digit_legend(figure)
    figure.canvas.draw()  # renders, with the codes of every run and the region in view
    for axis in axes:
        (x0, x1), (y0, y1) = axis.get_xlim(), axis.get_ylim()
        assert x0 <= -6.0 and x1 >= 6.0 and y0 <= -2.5 and y1 >= 2.5


def test_plot_latent_means_wraps_runs_into_rows():
    labels = np.arange(20) % 10
    runs = {f"run {i}": spread_means(20, 1.0 + i, 1.0) for i in range(4)}
    figure = figures.plot_latent_means(runs, labels, columns=3)
    assert [geometry(axis) for axis in figure.axes] == [(2, 3, i) for i in range(6)]
    assert [axis.get_visible() for axis in figure.axes] == [True] * 4 + [False] * 2
    assert_digit_legend(figure)
    figure.canvas.draw()


# ---------------------------------------------------------------------------------------------
# Decoded latent grids
# ---------------------------------------------------------------------------------------------


def decoded(decoder, point) -> np.ndarray:
    return np.asarray(decoder(np.array([point], np.float32), training=False))[0, ..., 0]


def test_plot_latent_grids_layout_ticks_and_orientation():
    ca4.set_seed(0)
    decoders = {"kl 0.1": ca4.build_decoder(2), "kl 1": ca4.build_decoder(2),
                "kl 5": ca4.build_decoder(2)}
    figure = figures.plot_latent_grids(decoders, points_per_side=5, title="Grids")
    assert [geometry(axis) for axis in figure.axes] == [(2, 2, i) for i in range(4)]
    assert [axis.get_visible() for axis in figure.axes] == [True, True, True, False]
    assert [axis.get_title() for axis in visible_axes(figure)] == list(decoders)
    values = np.linspace(-2.0, 2.0, 5)
    for axis, decoder in zip(visible_axes(figure), decoders.values()):
        grid = np.asarray(axis.images[0].get_array())
        assert grid.shape == (140, 140)
        assert axis.get_xlabel() == "z[0]" and axis.get_ylabel() == "z[1]"
        # Top left is (z0 low, z1 high); bottom right is (z0 high, z1 low).
        np.testing.assert_allclose(grid[:28, :28], decoded(decoder, [-2.0, 2.0]), atol=1e-5)
        np.testing.assert_allclose(grid[-28:, -28:], decoded(decoder, [2.0, -2.0]), atol=1e-5)
        np.testing.assert_allclose(grid[:28, -28:], decoded(decoder, [2.0, 2.0]), atol=1e-5)
        positions, labels = tick_values(axis, "x")
        np.testing.assert_array_equal(labels, [-2, -1, 0, 1, 2])
        np.testing.assert_allclose([pixel_to_latent(p, values) for p in positions], labels,
                                   atol=1e-6)
        positions, labels = tick_values(axis, "y")
        np.testing.assert_allclose([pixel_to_latent(p, values[::-1]) for p in positions], labels,
                                   atol=1e-6)
        assert sorted(labels) == [-2, -1, 0, 1, 2]
    assert figure.get_suptitle() == "Grids"


def test_plot_latent_grids_ticks_sit_at_round_values():
    ca4.set_seed(0)
    figure = figures.plot_latent_grids({"vae": ca4.build_decoder(2)}, points_per_side=15,
                                   extent=2.0, columns=2)
    (axis,) = figure.axes
    values = np.linspace(-2.0, 2.0, 15)
    for which, along in (("x", values), ("y", values[::-1])):
        positions, labels = tick_values(axis, which)
        assert len(labels) >= 3
        np.testing.assert_array_equal(labels, np.round(labels))  # whole numbers here
        assert labels.min() >= -2 and labels.max() <= 2
        np.testing.assert_allclose([pixel_to_latent(p, along) for p in positions], labels,
                                   atol=1e-6)


def test_plot_latent_grids_gaussian_ticks_follow_the_quantiles():
    ca4.set_seed(0)
    figure = figures.plot_latent_grids({"vae": ca4.build_decoder(2)}, points_per_side=15,
                                   spacing="gaussian")
    (axis,) = figure.axes
    positions, labels = tick_values(axis, "x")
    assert len(labels) >= 3 and np.all(np.abs(labels) < 1.65)
    # Point i sits at the quantile 0.05 + 0.9 i / 14 of N(0, 1); the ticks are interpolated
    # between grid points, so they may be off by a small part of a tile.
    expected = 28 * (norm.cdf(labels) - 0.05) / 0.9 * 14 + 13.5
    np.testing.assert_allclose(positions, expected, atol=28 / 4)


@pytest.mark.parametrize("bounds", [((-1.0, 3.0), (0.5, 2.0)), ((10.0, 12.0), (-6.0, -1.0))])
def test_plot_latent_grids_ticks_follow_the_bounds(bounds):
    rng = np.random.default_rng(0)
    decoder = linear_decoder(rng.normal(size=784), np.zeros(784), rng.normal(size=784))
    points = 9
    figure = figures.plot_latent_grids({"vae": decoder}, points_per_side=points,
                                   bounds={"vae": bounds})
    (axis,) = figure.axes
    (x_low, x_high), (y_low, y_high) = bounds
    positions, labels = tick_values(axis, "x")
    assert len(labels) >= 2 and labels.min() >= x_low and labels.max() <= x_high
    # The centre of tile i (pixel 28 i + 13.5) sits at low + i (high - low) / (points - 1).
    np.testing.assert_allclose(x_low + (positions - 13.5) / 28 * (x_high - x_low) / (points - 1),
                               labels, atol=1e-6)
    positions, labels = tick_values(axis, "y")
    assert len(labels) >= 2 and labels.min() >= y_low and labels.max() <= y_high
    # Rows run from high z[1] at the top.
    np.testing.assert_allclose(y_high - (positions - 13.5) / 28 * (y_high - y_low) / (points - 1),
                               labels, atol=1e-6)
    # The top-left tile decodes (z0 low, z1 high).
    grid = np.asarray(axis.images[0].get_array())
    np.testing.assert_allclose(grid[:28, :28], np.asarray(decoder(np.array(
        [[x_low, y_high]], np.float32)))[0, ..., 0], atol=1e-6)


def test_plot_latent_grids_rejects_bounds_for_other_runs():
    decoder = linear_decoder(np.zeros(784), np.zeros(784))
    with pytest.raises(ValueError, match=r"bounds: expected bounds for \['a'\]"):
        figures.plot_latent_grids({"a": decoder}, bounds={"b": ((0, 1), (0, 1))})


def test_plot_codes_beside_grids_layout_region_and_grid():
    ca4.set_seed(0)
    decoders = {"autoencoder": ca4.build_decoder(2), "vae": ca4.build_decoder(2)}
    rng = np.random.default_rng(0)
    # 101 codes with x = 0..100 and y = 0, 2, ..., 200 in shuffled pairs: the 1st and 99th
    # percentiles are x 1 and 99, y 2 and 198.
    codes = np.stack([rng.permutation(101), 2 * rng.permutation(101)], axis=1).astype(float)
    labels = np.arange(101) % 10
    models = {"autoencoder": (codes, decoders["autoencoder"]),
              "vae": (codes / 100.0, decoders["vae"])}
    figure = figures.plot_codes_beside_grids(models, labels, points_per_side=5, title="Beside")
    axes = figure.axes
    assert [geometry(axis) for axis in axes] == [(2, 2, i) for i in range(4)]
    assert [axis.get_title() for axis in axes] == [
        "autoencoder: test codes", "vae: test codes",
        "autoencoder: decoded grid", "vae: decoded grid"]
    for column, (scale, decoder) in enumerate(((1.0, decoders["autoencoder"]),
                                               (0.01, decoders["vae"]))):
        scatter, grid_axis = axes[column], axes[2 + column]
        np.testing.assert_allclose(scatter.collections[0].get_offsets(), codes * scale)
        (region,) = rectangles(scatter)
        assert region.get_xy() == pytest.approx((1.0 * scale, 2.0 * scale))
        assert region.get_width() == pytest.approx(98.0 * scale)
        assert region.get_height() == pytest.approx(196.0 * scale)
        assert region.get_linestyle() == "--"
        grid = np.asarray(grid_axis.images[0].get_array())
        assert grid.shape == (140, 140)
        np.testing.assert_allclose(grid[:28, :28], decoded(decoder, [1.0 * scale, 198.0 * scale]),
                                   atol=1e-5)
        np.testing.assert_allclose(grid[-28:, -28:],
                                   decoded(decoder, [99.0 * scale, 2.0 * scale]), atol=1e-5)
        positions, ticks = tick_values(grid_axis, "x")
        along = np.linspace(1.0, 99.0, 5) * scale
        assert ticks.min() >= along[0] - 1e-9 and ticks.max() <= along[-1] + 1e-9
        np.testing.assert_allclose([pixel_to_latent(p, along) for p in positions], ticks,
                                   rtol=1e-6, atol=1e-9)
    assert_digit_legend(figure)
    assert figure.get_suptitle() == "Beside"


# ---------------------------------------------------------------------------------------------
# Rate-distortion plane
# ---------------------------------------------------------------------------------------------


RATE_ROWS = [
    {"kl_weight": 0.1, "kl": 9.0, "kl_se": 0.2, "reconstruction": 140.0,
     "reconstruction_se": 1.0, "neg_elbo": 149.0, "n": 1000},
    {"kl_weight": 1.0, "kl": 6.0, "kl_se": 0.1, "reconstruction": 145.0,
     "reconstruction_se": 0.8, "neg_elbo": 151.0, "n": 1000},
    {"kl_weight": 5.0, "kl": 2.5, "kl_se": 0.05, "reconstruction": 160.0,
     "reconstruction_se": 1.2, "neg_elbo": 162.5, "n": 1000},
]


def test_plot_rate_distortion_lines_of_equal_elbo():
    figure = figures.plot_rate_distortion(RATE_ROWS)
    (axis,) = figure.axes
    dashed = [line for line in axis.lines if line.get_linestyle() == "--"]
    assert len(dashed) == len(RATE_ROWS)
    for line, row in zip(dashed, RATE_ROWS):
        x, y = (np.asarray(v, float) for v in line.get_data())
        np.testing.assert_allclose(x + y, row["neg_elbo"], rtol=1e-12)
    # No segments of slope -weight: that a model sits where the frontier has its weight's
    # slope holds only at the objective's optimum, which these models may not reach.
    assert not [line for line in axis.lines
                if line.get_linestyle() == "-" and len(line.get_xdata()) == 2]
    _, labels = axis.get_legend_handles_labels()
    assert labels == ["equal negative ELBO", "KL weight 0.1: negative ELBO 149.0",
                      "KL weight 1: negative ELBO 151.0", "KL weight 5: negative ELBO 162.5"]
    assert "rate" in axis.get_xlabel() and "distortion" in axis.get_ylabel()


def test_plot_rate_distortion_error_bars_are_95_percent_intervals():
    figure = figures.plot_rate_distortion(RATE_ROWS)
    (axis,) = figure.axes
    quantile = stats.t.ppf(0.975, 999)
    for container, row in zip(axis.containers, RATE_ROWS):
        horizontal, vertical = container.lines[2]
        (x0, y0), (x1, _) = horizontal.get_segments()[0]
        assert (x1 - x0) / 2 == pytest.approx(quantile * row["kl_se"])
        assert y0 == pytest.approx(row["reconstruction"])
        (_, y0), (_, y1) = vertical.get_segments()[0]
        assert (y1 - y0) / 2 == pytest.approx(quantile * row["reconstruction_se"])


def test_plot_rate_distortion_needs_rows():
    with pytest.raises(ValueError, match="rows: expected at least one row of the sweep"):
        figures.plot_rate_distortion([])


# ---------------------------------------------------------------------------------------------
# Legibility in the PDF
# ---------------------------------------------------------------------------------------------


# The smallest font size, in points, that a figure may print at, and the most pixels per inch
# that it should carry when printed (more makes the PDF large for nothing).
SMALLEST_PRINTED_POINTS = 6.0
MOST_PRINTED_PPI = 150.0


def figure_for(helper: str) -> matplotlib.figure.Figure:
    """Call a figure helper on small inputs shaped and labelled like the notebook's."""
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 10
    images = rng.uniform(size=(10, 28, 28, 1)).astype(np.float32)
    digit_labels = [f"digit {d}" for d in range(10)]
    history = {"loss": [0.3, 0.2, 0.1], "val_loss": [0.31, 0.22, 0.15],
               "reconstruction_loss": [160.0, 150.0, 140.0],
               "val_reconstruction_loss": [161.0, 151.0, 145.0],
               "kl_loss": [3.0, 4.0, 5.0], "val_kl_loss": [3.1, 4.1, 5.1]}
    weights = ("0.1", "1", "5")
    if helper == "plot_image_rows":
        rows = {f"{model} {a} to {b}": images for model in ("autoencoder", "VAE")
                for a, b in ((1, 7), (4, 9), (3, 8))}
        rows["Reconstruction"] = images
        return figures.plot_image_rows(rows, "Decoded straight paths between two test digits",
                                   digit_labels)
    if helper == "plot_loss_curves":
        return figures.plot_loss_curves(
            {f"KL weight {w}": history for w in weights},
            metrics=("reconstruction_loss", "kl_loss"),
            ylabels={"reconstruction_loss": "summed BCE per image", "kl_loss": "KL per image"},
            title="VAE loss terms per epoch (validation on the test set)")
    if helper == "plot_latent_pca":
        return figures.plot_latent_pca(rng.normal(size=(60, 10)), labels,
                                   title="PCA of the 10-D latent codes of the test set")
    if helper == "plot_latent_means":
        means = {f"KL weight {w}": rng.normal(size=(60, 2)) * s for w, s in zip(weights, (4, 1, 0.3))}
        return figures.plot_latent_means(means, labels, title="z_mean of the test images, by digit")
    if helper == "plot_image_sheets":
        names = [f"VAE KL weight {w}" for w in weights] + ["autoencoder latent 2 (fitted Gaussian)"]
        sheets = {name: latent_space.tile_images(rng.uniform(size=(100, 28, 28)), 10) for name in names}
        return figures.plot_image_sheets(sheets, "The first 100 generated digits of each model")
    ca4.set_seed(0)
    decoder = ca4.build_decoder(2)
    if helper == "plot_latent_grids":
        return figures.plot_latent_grids({f"KL weight {w}": decoder for w in weights}, 15, 2.0,
                                     title="Decoded 15x15 grid over [-2, 2]²")
    if helper == "plot_codes_beside_grids":
        models = {"autoencoder latent 2": (rng.normal(size=(60, 2)) * 20, decoder),
                  "VAE KL weight 1": (rng.normal(size=(60, 2)), decoder)}
        return figures.plot_codes_beside_grids(models, labels, 15, title="Test codes by digit and "
                                           "the decoder over their span")
    raise AssertionError(helper)


FIGURE_HELPERS = ["plot_image_rows", "plot_loss_curves", "plot_latent_pca", "plot_latent_means",
                  "plot_image_sheets", "plot_latent_grids", "plot_codes_beside_grids"]


@pytest.mark.parametrize("helper", FIGURE_HELPERS)
def test_figure_text_prints_at_6_points_or_more(helper):
    """At the PDF's text width, every text of the figure prints at 6 pt or more.

    The inline backend saves figures with bbox_inches="tight"; nbconvert prints an image at
    its natural size, but at most PRINT_WIDTH (0.9 x the 6.5 in text width) wide.
    """
    with matplotlib.rc_context(figures.REPORT_STYLE):
        figure = figure_for(helper)
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        width = figure.get_tightbbox(canvas.get_renderer()).width
    assert width > 0
    scale = min(1.0, figures.PRINT_WIDTH / width)
    texts = [text for text in figure.findobj(matplotlib.text.Text)
             if text.get_text() and text.get_visible()]
    titles = {figure.get_suptitle(), *(axis.get_title() for axis in figure.axes)} - {""}
    assert titles and titles <= {text.get_text() for text in texts}
    smallest = min(texts, key=lambda text: text.get_fontsize())
    printed = smallest.get_fontsize() * scale
    assert printed >= SMALLEST_PRINTED_POINTS, (
        f"{helper}: {width:.2f} in wide prints at {scale:.0%}, so {smallest.get_text()!r} "
        f"({smallest.get_fontsize():g} pt) prints at {printed:.1f} pt")
    assert figure.dpi == figures.REPORT_STYLE["figure.dpi"]
    ppi = width * figure.dpi / min(width, figures.PRINT_WIDTH)
    assert ppi <= MOST_PRINTED_PPI, f"{helper}: {ppi:.0f} pixels per inch when printed"

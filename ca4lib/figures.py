"""Every figure of the report, sized for the printed page, shown and saved by name
(`show_figure`: `build/figures/NAME.png`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import matplotlib.figure
import matplotlib.lines
import matplotlib.patches
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from ca4lib import numbering
from ca4lib.backend import keras
from ca4lib.checks import check_codes, check_images, check_labels, check_positive_int
from ca4lib.estimates import estimate_of
from ca4lib.latent_space import decode_latent_grid, latent_grid_points
from ca4lib.measures import pca_2d
from ca4lib.settings import DIGITS, build_dir

# nbconvert prints a figure at most 0.9 x the 6.5 in text width of its LaTeX page. Drawn at that
# width, a figure prints at 100 %, so its text prints at the font sizes below (7 pt and up)
# and at REPORT_STYLE's 144 pixels per inch.
PRINT_WIDTH = 5.85

# One colour map for every image of digits: dark ink on white paper.
INK = "gray_r"

REPORT_STYLE = {
    "figure.dpi": 144, "savefig.dpi": 144, "font.size": 8, "axes.titlesize": 8.5,
    "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7, "legend.fontsize": 7,
    "legend.title_fontsize": 7.5, "figure.titlesize": 9.5, "image.cmap": INK,
}

# One colour per digit in every scatter plot.
DIGIT_COLOURS = np.array(matplotlib.colormaps["tab10"].colors)


def use_report_style() -> None:
    """Set matplotlib to the report's figure resolution and font sizes."""
    plt.rcParams.update(REPORT_STYLE)


def show_figure(figure: matplotlib.figure.Figure, name: str, **caption_fields: Any) -> None:
    """Show a figure with its numbered caption (ca4lib.numbering) and save it as
    build/figures/NAME.png, then close it.

    Every figure of the report goes through here, once, so that a grader or a test can find
    it by name and the text can cite its number. The figure is rendered once, cropped as the
    inline backend crops it, and the same PNG is shown and saved (rendering is a good part of
    a cached re-run). `caption_fields` fill the caption's {fields}.
    """
    from IPython.display import Image, Markdown, display

    caption = numbering.caption("figure", name, **caption_fields)
    path = build_dir() / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    # Light compression: a tenth of the encoding time for files a quarter larger.
    figure.savefig(buffer, format="png", bbox_inches="tight", pil_kwargs={"compress_level": 1})
    png = buffer.getvalue()
    path.write_bytes(png)
    display(Image(data=png, format="png"))
    display(Markdown(caption))
    plt.close(figure)


def new_figure(rows: int, columns: int, height: float, **options: Any
               ) -> tuple[matplotlib.figure.Figure, np.ndarray]:
    """Return a PRINT_WIDTH-wide figure with a rows x columns array of axes."""
    return plt.subplots(rows, columns, figsize=(PRINT_WIDTH, height), squeeze=False,
                        layout="constrained", **options)


def show_image(axis: matplotlib.axes.Axes, image: np.ndarray) -> None:
    """Draw a grey-scale image in [0, 1] on `axis` as ink on paper."""
    axis.imshow(np.squeeze(image), cmap=INK, vmin=0.0, vmax=1.0)


def plot_image_rows(rows: Mapping[str, np.ndarray], title: str,
                    column_labels: Sequence[str] | None = None) -> matplotlib.figure.Figure:
    """Draw one labelled row of images per entry of `rows`: the one image-row plotter."""
    if not rows:
        raise ValueError("rows: expected at least one row of images, got none")
    arrays = {label: check_images(images, f"rows[{label!r}]") for label, images in rows.items()}
    columns = {images.shape[0] for images in arrays.values()}
    if len(columns) != 1:
        raise ValueError(f"rows: expected the same number of images in every row, "
                         f"got {sorted(columns)}")
    n_columns = columns.pop()
    if column_labels is not None and len(column_labels) != n_columns:
        raise ValueError(f"column_labels: expected {n_columns} labels, got {len(column_labels)}")
    image_width = min(0.5, (PRINT_WIDTH - 1.1) / n_columns)
    height = image_width * len(arrays) * 1.08 + 0.35 + (0.15 if column_labels else 0)
    figure, axes = new_figure(len(arrays), n_columns, height)
    for row, (label, images) in enumerate(arrays.items()):
        for column in range(n_columns):
            axis = axes[row, column]
            show_image(axis, images[column])
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                axis.set_ylabel(label, rotation=0, ha="right", va="center")
            if row == 0 and column_labels is not None:
                axis.set_title(column_labels[column], fontsize=7)
    figure.suptitle(title)
    return figure


# What each Keras metric name means, for the panel titles of the loss curves.
METRIC_TITLES = {"loss": "loss", "reconstruction_loss": "reconstruction term",
                 "kl_loss": "KL term"}


def plot_loss_curves(histories: Mapping[str, Mapping[str, Sequence[float]]],
                     metrics: Sequence[str] = ("loss",), title: str = "Loss per epoch",
                     ylabels: Mapping[str, str] | None = None) -> matplotlib.figure.Figure:
    """Plot each run's training (solid) and validation (dashed) curves, a panel per metric."""
    if not histories:
        raise ValueError("histories: expected at least one history, got none")
    if not metrics:
        raise ValueError("metrics: expected at least one metric name, got none")
    for run, history in histories.items():
        for metric in metrics:
            if metric not in history or f"val_{metric}" not in history:
                raise ValueError(f"histories[{run!r}]: expected '{metric}' and 'val_{metric}', "
                                 f"got {sorted(history)}")
    figure, axes = new_figure(1, len(metrics), 2.4 + 0.15 * math.ceil(len(histories) / 2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, metric in zip(axes[0], metrics):
        for index, (run, history) in enumerate(histories.items()):
            epochs = np.arange(1, len(history[metric]) + 1)
            colour = colours[index % len(colours)]
            axis.plot(epochs, history[metric], color=colour, marker="o", markersize=2.5,
                      label=f"{run} (train)")
            axis.plot(epochs, history[f"val_{metric}"], color=colour, linestyle="--",
                      marker="s", markersize=2.5, label=f"{run} (validation)")
        axis.set_title(METRIC_TITLES.get(metric, metric.replace("_", " ")))
        axis.set_xlabel("epoch")
        axis.set_ylabel((ylabels or {}).get(metric, metric.replace("_", " ")))
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    # One legend under the panels, out of the curves' way.
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=2)
    figure.suptitle(title)
    return figure


def scatter_latent_codes(points: np.ndarray, labels: np.ndarray, axis: matplotlib.axes.Axes,
                         xlabel: str, ylabel: str, title: str) -> None:
    """Scatter 2-D points on `axis`, one colour per digit (add_digit_legend explains them)."""
    points = check_codes(points, "points", dimensions=2)
    labels = check_labels(labels, points.shape[0])
    axis.scatter(points[:, 0], points[:, 1], c=DIGIT_COLOURS[labels], s=2, alpha=0.5,
                 linewidths=0, rasterized=True)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)


def add_digit_legend(figure: matplotlib.figure.Figure) -> None:
    """Add one legend of the ten digit colours on the right of the figure."""
    handles = [matplotlib.lines.Line2D([], [], marker="o", linestyle="", markersize=4,
                                       color=DIGIT_COLOURS[digit]) for digit in DIGITS]
    figure.legend(handles, [str(digit) for digit in DIGITS], title="Digit",
                  loc="outside right center")


def plot_latent_pca(codes: np.ndarray, labels: np.ndarray,
                    title: str = "Latent codes of the test set, PCA to 2-D"
                    ) -> matplotlib.figure.Figure:
    """Project latent codes to 2-D with PCA and scatter them by digit."""
    points, ratios = pca_2d(codes)
    figure, axes = new_figure(1, 1, 3.4)
    scatter_latent_codes(points, labels, axes[0, 0], f"PC 1 ({ratios[0]:.1%} of variance)",
                         f"PC 2 ({ratios[1]:.1%} of variance)", title)
    add_digit_legend(figure)
    return figure


def mark_region(axis: matplotlib.axes.Axes, bounds: Sequence[Sequence[float]],
                label: str) -> None:
    """Outline the rectangle `bounds` ((x low, high), (y low, high)) on `axis`."""
    (x0, x1), (y0, y1) = bounds
    axis.add_patch(matplotlib.patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                                                linestyle="--", linewidth=0.8, color="0.2",
                                                label=label))


def plot_latent_means(means_by_run: Mapping[str, np.ndarray], labels: np.ndarray,
                      title: str = "z_mean of the test set", extent: float = 2.0,
                      columns: int = 2) -> matplotlib.figure.Figure:
    """Scatter each run's 2-D latent means by digit on shared axes, the grid's region marked."""
    if not means_by_run:
        raise ValueError("means_by_run: expected at least one run, got none")
    means_by_run = {run: check_codes(means, f"means_by_run[{run!r}]", dimensions=2)
                    for run, means in means_by_run.items()}
    rows = math.ceil(len(means_by_run) / check_positive_int(columns, "columns"))
    columns = min(columns, len(means_by_run))
    figure, axes = new_figure(rows, columns, (PRINT_WIDTH - 0.8) / columns * rows + 0.5,
                              sharex=True, sharey=True)
    # One square view for all runs, wide enough for every code and the marked region.
    limit = 1.05 * max(1.1 * extent, *(float(np.max(np.abs(m))) for m in means_by_run.values()))
    for axis, (run, means) in zip(axes.flat, means_by_run.items()):
        scatter_latent_codes(means, labels, axis, "z[0]", "z[1]", run)
        mark_region(axis, ((-extent, extent),) * 2, f"[-{extent:g}, {extent:g}]²")
        axis.set(xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal")
        axis.tick_params(labelbottom=True)  # sharex hides them above a hidden panel too
    for axis in axes.flat[len(means_by_run):]:
        axis.set_visible(False)
    add_digit_legend(figure)
    figure.suptitle(title)
    return figure


def grid_ticks(values: np.ndarray, tile: int = 28) -> tuple[np.ndarray, list[str]]:
    """Return pixel positions and labels of round latent values along a decoded grid's axis."""
    low, high = float(values.min()), float(values.max())
    ticks = matplotlib.ticker.MaxNLocator(nbins=4).tick_values(low, high)
    ticks = ticks[(ticks >= low - 1e-9) & (ticks <= high + 1e-9)]
    index = np.interp(ticks, values, np.arange(len(values))) if values[0] < values[-1] else (
        np.interp(ticks, values[::-1], np.arange(len(values))[::-1]))
    return tile * index + (tile - 1) / 2, [f"{tick:g}" for tick in ticks]


def show_latent_grid(axis: matplotlib.axes.Axes, grid: np.ndarray, points: np.ndarray,
                     title: str) -> None:
    """Draw a decoded grid on `axis` with its latent coordinates on the axes."""
    n = int(round(math.sqrt(len(points))))
    show_image(axis, grid)
    axis.set_xticks(*grid_ticks(points[:n, 0]))
    axis.set_yticks(*grid_ticks(points[::n, 1]))
    axis.set_xlabel("z[0]")
    axis.set_ylabel("z[1]")
    axis.set_title(title)


def plot_image_sheets(sheets: Mapping[str, np.ndarray], title: str, columns: int = 2,
                      grid_points: Mapping[str, np.ndarray] | None = None
                      ) -> matplotlib.figure.Figure:
    """Show tiled image sheets side by side; with `grid_points`, as latent grids with axes."""
    if not sheets:
        raise ValueError("sheets: expected at least one sheet of images, got none")
    if grid_points is not None and set(grid_points) != set(sheets):
        raise ValueError(f"grid_points: expected the latent points of the sheets "
                         f"{sorted(sheets)}, got {sorted(grid_points)}")
    columns = min(check_positive_int(columns, "columns"), len(sheets))
    rows = math.ceil(len(sheets) / columns)
    panel = (PRINT_WIDTH - 0.3) / columns
    figure, axes = new_figure(rows, columns, rows * (panel + 0.25) + 0.3)
    figure.get_layout_engine().set(wspace=0.06, hspace=0.04)  # keep neighbouring sheets apart
    for axis, (name, sheet) in zip(axes.flat, sheets.items()):
        if grid_points is not None:
            show_latent_grid(axis, sheet, grid_points[name], name)
        else:
            show_image(axis, sheet)
            axis.set_axis_off()
            axis.set_title(name)
    for axis in axes.flat[len(sheets):]:
        axis.set_visible(False)
    figure.suptitle(title)
    return figure


def plot_latent_grids(decoders: Mapping[str, keras.Model], points_per_side: int = 15,
                      extent: float = 2.0, spacing: str = "linear",
                      title: str = "Decoded latent grid", columns: int = 2,
                      bounds: Mapping[str, Sequence[Sequence[float]]] | None = None
                      ) -> matplotlib.figure.Figure:
    """Show each decoder's decoded latent grid, latent coordinates on the axes.

    The grid covers [-extent, extent]^2, or each run's own `bounds[run]`.
    """
    if not decoders:
        raise ValueError("decoders: expected at least one decoder, got none")
    if bounds is not None and set(bounds) != set(decoders):
        raise ValueError(f"bounds: expected bounds for {sorted(decoders)}, got {sorted(bounds)}")
    limits = {run: None if bounds is None else bounds[run] for run in decoders}
    points = {run: latent_grid_points(points_per_side, extent, spacing, limits[run])
              for run in decoders}
    sheets = {run: decode_latent_grid(decoder, points_per_side, extent, spacing, limits[run])
              for run, decoder in decoders.items()}
    return plot_image_sheets(sheets, title, columns, points)


def plot_rate_distortion(rows: Sequence[Mapping[str, Any]],
                         title: str = "Rate and distortion of the KL-weight sweep"
                         ) -> matplotlib.figure.Figure:
    """Plot each VAE's KL (rate) against its reconstruction term (distortion), in nats per
    image, with 95 % error bars and a dashed line of equal negative ELBO (rate + distortion)
    through each point."""
    if not rows:
        raise ValueError("rows: expected at least one row of the sweep, got none")
    figure, axes = new_figure(1, 1, 3.3)
    axis = axes[0, 0]
    rates = np.array([row["kl"] for row in rows])
    distortions = np.array([row["reconstruction"] for row in rows])
    span = max(rates.max() - rates.min(), distortions.max() - distortions.min(), 1.0)
    low, high = max(0.0, rates.min() - 0.15 * span), rates.max() + 0.15 * span
    line = np.linspace(low, high, 50)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, row in enumerate(rows):
        colour = colours[index % len(colours)]
        rate, distortion = row["kl"], row["reconstruction"]
        axis.plot(line, row["neg_elbo"] - line, linestyle="--", linewidth=0.7, color="0.6",
                  label="equal negative ELBO" if index == 0 else None)
        axis.errorbar(rate, distortion, xerr=estimate_of(row, "kl").half_width,
                      yerr=estimate_of(row, "reconstruction").half_width, marker="o",
                      markersize=4, color=colour, capsize=2,
                      label=f"KL weight {row['kl_weight']:g}: negative ELBO "
                            f"{row['neg_elbo']:.1f}")
    axis.set(xlim=(low, high), ylim=(distortions.min() - 0.25 * span,
                                     distortions.max() + 0.25 * span))
    axis.set_xlabel("rate: KL(q(z|x) || p(z)) per image (nats)")
    axis.set_ylabel("distortion: reconstruction term (nats)")
    axis.grid(alpha=0.3)
    axis.legend(loc="upper right")
    axis.set_title(title)
    return figure


def plot_codes_beside_grids(models: Mapping[str, tuple[np.ndarray, keras.Model]],
                            labels: np.ndarray, points_per_side: int = 15,
                            title: str = "Codes and decoded grids") -> matplotlib.figure.Figure:
    """For each 2-D model: its test codes by digit above its decoder over those codes' span.

    The span is the 1st to 99th percentile of each coordinate, outlined on the scatter.
    """
    if not models:
        raise ValueError("models: expected at least one (codes, decoder) pair, got none")
    panel = (PRINT_WIDTH - 0.8) / len(models)
    figure, axes = new_figure(2, len(models), 2 * panel + 0.7)
    for column, (name, (codes, decoder)) in enumerate(models.items()):
        codes = check_codes(codes, f"models[{name!r}]", dimensions=2)
        bounds = np.percentile(codes, [1, 99], axis=0).T
        scatter_latent_codes(codes, labels, axes[0, column], "z[0]", "z[1]",
                             f"{name}: test codes")
        mark_region(axes[0, column], bounds, "decoded region")
        points = latent_grid_points(points_per_side, bounds=bounds)
        grid = decode_latent_grid(decoder, points_per_side, bounds=bounds)
        show_latent_grid(axes[1, column], grid, points, f"{name}: decoded grid")
    add_digit_legend(figure)
    figure.suptitle(title)
    return figure

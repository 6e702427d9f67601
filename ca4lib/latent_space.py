"""Decoded latent grids and measures of a 2-D code space: coverage, neighbour change and kNN
(notebook: *Decoded latent grids* and *Where the test digits land*).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ca4lib.backend import keras
from ca4lib.checks import check_codes, check_non_negative_float, check_positive_int
from ca4lib.estimates import Estimate, bootstrap_estimate, mean_estimate, share_estimate
from ca4lib.measures import knn_correct
from ca4lib.settings import DEFAULT_SEED
from ca4lib.vae_analyses import ACTIVE_VARIANCE, sample_prior


def latent_grid_points(points_per_side: int = 15, extent: float = 2.0,
                       spacing: str = "linear",
                       bounds: Sequence[Sequence[float]] | None = None) -> np.ndarray:
    """Return an (n*n, 2) grid of latent points, row-major from the top left.

    Linear spacing covers [-extent, extent]^2, or `bounds` ((z0 low, high), (z1 low, high));
    Gaussian spacing puts the points at the 5 % ... 95 % quantiles of N(0, 1).
    """
    from scipy.stats import norm

    points_per_side = check_positive_int(points_per_side, "points_per_side")
    extent = check_non_negative_float(extent, "extent")
    if bounds is not None and np.shape(bounds) != (2, 2):
        raise ValueError(f"bounds: expected ((z0 low, high), (z1 low, high)), got {bounds!r}")
    if spacing == "linear":
        limits = bounds if bounds is not None else ((-extent, extent),) * 2
        axes = [np.linspace(low, high, points_per_side) for low, high in limits]
    elif spacing == "gaussian":
        axes = [norm.ppf(np.linspace(0.05, 0.95, points_per_side))] * 2
    else:
        raise ValueError(f"spacing: expected 'linear' or 'gaussian', got {spacing!r}")
    # Rows run from high z[1] at the top to low at the bottom, as on a plot's y-axis.
    z1, z0 = np.meshgrid(axes[1][::-1], axes[0], indexing="ij")
    return np.stack([z0.ravel(), z1.ravel()], axis=1).astype(np.float32)


def code_quantile_bounds(codes: np.ndarray, low: float = 1.0, high: float = 99.0
                         ) -> np.ndarray:
    """Return ((z0 low, high), (z1 low, high)): percentiles of 2-D codes, for a model's grid."""
    return np.percentile(check_codes(codes, "codes", 2), [low, high], axis=0).T


def tile_images(images: np.ndarray, columns: int) -> np.ndarray:
    """Tile images (N, 28, 28[, 1]) into one (28 rows, 28 columns) sheet, row by row."""
    images = np.asarray(images)
    images = images[..., 0] if images.ndim == 4 else images
    columns = check_positive_int(columns, "columns")
    if images.ndim != 3 or images.shape[0] % columns:
        raise ValueError(f"images: expected (N, 28, 28) with N a multiple of {columns}, "
                         f"got {images.shape}")
    rows = images.shape[0] // columns
    height, width = images.shape[1:]
    return images.reshape(rows, columns, height, width).transpose(0, 2, 1, 3).reshape(
        rows * height, columns * width)


def decode_latent_grid(decoder: keras.Model, points_per_side: int = 15, extent: float = 2.0,
                       spacing: str = "linear",
                       bounds: Sequence[Sequence[float]] | None = None) -> np.ndarray:
    """Decode a 2-D latent grid in one batched call and tile it into one image."""
    points = latent_grid_points(points_per_side, extent, spacing, bounds)
    if tuple(decoder.input_shape[1:]) != (2,):
        raise ValueError(f"decoder: expected a decoder of a 2-D latent space, got input shape "
                         f"{decoder.input_shape}")
    return tile_images(np.asarray(decoder(points, training=False)), points_per_side)


def latent_grid_cells(points: np.ndarray, points_per_side: int = 15,
                      extent: float = 2.0) -> np.ndarray:
    """Return the grid cell over [-extent, extent]^D of each point of D = 1 or 2 coordinates,
    -1 outside the grid.

    Cells are numbered row-major, z[0] first; a point on the grid's upper edge is in the
    last cell, as np.histogram2d counts it.
    """
    points = check_codes(points, "points")
    if points.shape[1] > 2:
        raise ValueError(f"points: expected 1 or 2 coordinates, got shape {points.shape}")
    side = check_positive_int(points_per_side, "points_per_side")
    if check_non_negative_float(extent, "extent") == 0:
        raise ValueError("extent: expected a number > 0, got 0")
    edges = np.linspace(-extent, extent, side + 1)
    index = np.searchsorted(edges, points, side="right") - 1
    index[points == edges[-1]] = side - 1
    inside = np.all((index >= 0) & (index < side), axis=1)
    cells = index[:, 0] * side + index[:, 1] if points.shape[1] == 2 else index[:, 0]
    return np.where(inside, cells, -1)


def covered_share(cells: np.ndarray, points_per_side: int, dimensions: int = 2) -> float:
    """Return the share of a grid's points_per_side^dimensions cells that `cells`
    (latent_grid_cells) reach."""
    return float(np.unique(cells[cells >= 0]).size / points_per_side ** dimensions)


def latent_grid_coverage(points: np.ndarray, points_per_side: int = 15,
                         extent: float = 2.0) -> float:
    """Return the share of the grid's cells over [-extent, extent]^2 that hold a point."""
    return covered_share(latent_grid_cells(points, points_per_side, extent), points_per_side)


def grid_neighbour_changes(grid_image: np.ndarray) -> dict[str, np.ndarray]:
    """Return the mean-pixel change between each pair of neighbouring tiles of a decoded grid.

    `along` holds the changes of a step in z[0] (horizontal neighbours) and in z[1]
    (vertical neighbours); `all` both together.
    """
    grid_image = np.asarray(grid_image)
    if (grid_image.ndim != 2 or grid_image.shape[0] != grid_image.shape[1]
            or grid_image.shape[0] % 28 or grid_image.shape[0] < 56):
        raise ValueError(f"grid_image: expected a (28n, 28n) image with n >= 2, "
                         f"got shape {grid_image.shape}")
    n = grid_image.shape[0] // 28
    tiles = grid_image.reshape(n, 28, n, 28).transpose(0, 2, 1, 3).astype(np.float64)
    along_z1 = np.abs(np.diff(tiles, axis=0)).mean(axis=(2, 3)).ravel()
    along_z0 = np.abs(np.diff(tiles, axis=1)).mean(axis=(2, 3)).ravel()
    return {"all": np.concatenate([along_z0, along_z1]), "along": (along_z0, along_z1)}


def active_dimensions(z_mean: np.ndarray) -> list[int]:
    """The dimensions whose mean moves with the image, Var_x(mu_d) > ACTIVE_VARIANCE."""
    return [int(d) for d in np.flatnonzero(np.var(z_mean, axis=0) > ACTIVE_VARIANCE)]


def latent_space_rows(terms_by_weight: Mapping[float, Mapping[str, np.ndarray]],
                      decoders: Mapping[float, keras.Model], labels: np.ndarray,
                      reference: Mapping[float, tuple[np.ndarray, np.ndarray]],
                      points_per_side: int, extent: float, seed: int = DEFAULT_SEED
                      ) -> list[dict[str, Any]]:
    """Measure each VAE's code space, with the prior N(0, I) as the first, reference row.

    Coverage: the share of the grid's cells over [-extent, extent]^2 that samples z ~ q(z|x)
    of the test images reach (the prior row: as many samples of N(0, I)), with a bootstrap
    SE; and the same over the model's active dimensions only (`active_coverage`, beside the
    prior's coverage in as many dimensions), since a dimension the encoder ignores holds
    prior noise and would count as covered. Neighbour change: the mean pixel change between
    neighbouring tiles of the decoded grid over [-extent, extent]^2 and over the model's own
    1st-99th code percentiles, over every step and over steps along active dimensions only
    (a grid that repeats along an ignored dimension looks smooth). kNN: 5-NN accuracy of
    z_mean, fitted on `reference[weight]` = (training means, labels).
    """
    count = len(next(iter(terms_by_weight.values()))["z"])
    prior = sample_prior(count, seed)

    def coverage(points: np.ndarray) -> Estimate:
        # Resampling the points' cells, found once, resamples the points.
        return bootstrap_estimate(
            lambda cells: covered_share(cells, points_per_side, points.shape[1]),
            latent_grid_cells(points, points_per_side, extent), seed, 200)

    prior_coverage = {dimensions: coverage(prior[:, :dimensions]) for dimensions in (1, 2)}
    rows: list[dict[str, Any]] = [{
        "model": "prior N(0, I)", "kl_weight": None, "n": prior_coverage[2].n,
        "coverage": prior_coverage[2].value, "coverage_se": prior_coverage[2].se,
        "coverage_1d": prior_coverage[1].value, "coverage_1d_se": prior_coverage[1].se}]
    for weight, terms in terms_by_weight.items():
        covered = coverage(terms["z"])
        active = active_dimensions(terms["z_mean"])
        fixed = grid_neighbour_changes(decode_latent_grid(decoders[weight], points_per_side,
                                                          extent))
        own = grid_neighbour_changes(decode_latent_grid(
            decoders[weight], points_per_side, bounds=code_quantile_bounds(terms["z"])))
        knn = share_estimate(knn_correct(*reference[weight], terms["z_mean"], labels))
        change, own_change = mean_estimate(fixed["all"]), mean_estimate(own["all"])
        row = {"model": f"KL weight {weight:g}", "kl_weight": float(weight),
               "n": covered.n, "coverage": covered.value, "coverage_se": covered.se,
               "z_std": terms["z_mean"].std(axis=0).tolist(),
               "active": active, "active_dimensions": len(active),
               "neighbour_change": change.value, "neighbour_change_se": change.se,
               "change_along": [float(a.mean()) for a in fixed["along"]],
               "own_neighbour_change": own_change.value,
               "own_neighbour_change_se": own_change.se,
               "largest_change": float(fixed["all"].max()),
               "knn": knn.value, "knn_se": knn.se}
        if active:
            along_active = coverage(terms["z"][:, active])
            reference_coverage = prior_coverage[len(active)]
            on_grid = mean_estimate(np.concatenate([fixed["along"][d] for d in active]))
            on_own = mean_estimate(np.concatenate([own["along"][d] for d in active]))
            row.update({
                "active_coverage": along_active.value, "active_coverage_se": along_active.se,
                "prior_active_coverage": reference_coverage.value,
                "prior_active_coverage_se": reference_coverage.se,
                "active_neighbour_change": on_grid.value,
                "active_neighbour_change_se": on_grid.se,
                "own_active_neighbour_change": on_own.value,
                "own_active_neighbour_change_se": on_own.se})
        rows.append(row)
    return rows

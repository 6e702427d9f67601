"""Check the two estimates of log p(x) once, at sizes the notebook cannot afford on every run: the
K sweep of importance sampling and the step check of the quadrature, on the notebook's
likelihood images (the first `likelihood_images` test images of the profile).

Run from the project root once `make run` has trained the sweep's VAEs (`ca4.run_kl_sweep`
with the notebook's data and epochs serves them from build/cache/; absent, it trains them):

    .venv/bin/python experiments/likelihood_checks.py [--profile full] [--images 1000]
        [--samples 100 300 1000] [--points 8 16 32 64]

Per KL weight, importance sampling draws the largest K once per image and reads the estimate
at every K (nested: the sweep costs its largest K), and the quadrature decodes its coarse grid
once and integrates each image's window on a local grid of every size (each doubling halves
the local step). At the defaults on 1,000 images that is 1,000,000 decodes per model for
importance sampling and 40,000 + 1,000 x (64 + 256 + 1,024 + 4,096) = 5.5 million for the
quadrature: about three quarters of an hour for the three models on two cores of an AVX-512
VM (about 7,000 decodes a second beside a training run), more on a slower machine. Each
model's results are kept in the analysis cache (build/cache/analyses/), so an interrupted run
resumes where it stopped.

Writes experiments/results/likelihood_checks.json (committed; the notebook takes its settings
from it): the commit and date, per weight the checks (`likelihood.sweep_checks`: -log p(x) at
every K and grid size, the change at each step, quadrature minus importance sampling at each
grid size with its median and tails) and the row at the finest settings
(`likelihood.likelihood_row`), and the cheapest settings converged at every weight
(`likelihood.recommended_settings`) with what they cost.

A smoke test (tiny models, trained in a minute where absent):

    CA4_BUILD_DIR=/tmp/lh-smoke .venv/bin/python experiments/likelihood_checks.py \\
        --profile fast --images 20 --output /tmp/lh-smoke/likelihood_checks.json
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import numpy as np  # noqa: E402

import ca4_helpers as ca4  # noqa: E402
from ca4lib import inference, likelihood, progress, report, settings, storage, vae_analyses  # noqa: E402

RESULTS = PROJECT_ROOT / "experiments" / "results" / "likelihood_checks.json"


def timed(function: Any, *arguments: Any) -> tuple[dict[str, Any], float]:
    """`inference.cached_analysis(function, *arguments)` and the seconds it took (a result
    read back from the cache takes about none)."""
    started = time.perf_counter()
    result = inference.cached_analysis(function, *arguments)
    return result, time.perf_counter() - started


def run(profile: settings.Profile, images: int, samples: Sequence[int], points: Sequence[int],
        coarse_points: int, extent: float) -> dict[str, Any]:
    (x_train_raw, _), (x_test_raw, _) = ca4.load_mnist()
    x_train = ca4.normalize_images(x_train_raw[: profile.train_size])
    x_test = ca4.normalize_images(x_test_raw[: profile.test_size])
    runs = ca4.run_kl_sweep(x_train, x_test, kl_weights=settings.KL_WEIGHTS,
                            epochs=profile.vae_epochs, seed=settings.DEFAULT_SEED)
    subset = x_test[:images]
    floor = vae_analyses.pixel_entropy_floor(subset)
    importance, quadrature, seconds = {}, {}, {}
    for weight, trained in runs.items():
        print(f"KL weight {weight:g}: importance sampling (K = {samples[-1]:,}) and quadrature "
              f"(local grids of {', '.join(map(str, points))} points per side) on "
              f"{len(subset):,} images")
        importance[weight], importance_seconds = timed(
            likelihood.importance_log_likelihood, trained.model, subset, tuple(samples),
            settings.DEFAULT_SEED)
        quadrature[weight], quadrature_seconds = timed(
            likelihood.quadrature_log_likelihood, trained.model.decoder, subset, tuple(points),
            coarse_points, extent)
        seconds[weight] = {"importance": round(importance_seconds, 1),
                           "quadrature": round(quadrature_seconds, 1)}
    rows = likelihood.likelihood_rows(importance, quadrature, floor)
    used = np.logical_and.reduce([found["covered"] for found in quadrature.values()])
    by_weight = {}
    for row, weight in zip(rows, runs):
        by_weight[f"{weight:g}"] = {
            "checks": likelihood.sweep_checks(importance[weight], quadrature[weight], used),
            "row": row, "seconds": seconds[weight],
            "decodes": {"importance": int(importance[weight]["decodes"]),
                        "quadrature": int(quadrature[weight]["decodes"])}}
    recommended = likelihood.recommended_settings(
        {weight: found["checks"] for weight, found in by_weight.items()}, images=len(subset),
        coarse_points=coarse_points)
    return {"images": len(subset), "used_images": int(used.sum()), "samples": list(samples),
            "points_per_side": list(points), "coarse_points": coarse_points, "extent": extent,
            "tolerance_nats": likelihood.AGREEMENT_NATS, "epochs": profile.vae_epochs,
            "by_weight": by_weight, "recommended": recommended}


def summary_lines(results: dict[str, Any]) -> list[str]:
    """A table per weight for the terminal: the K sweep, the step checks, the difference."""
    lines = [f"{results['used_images']:,} of {results['images']:,} images covered at every weight",
             "| weight | -log p(x) at K = " + " / ".join(map(str, results["samples"]))
             + " | quadrature at P = " + " / ".join(map(str, results["points_per_side"]))
             + " | mean / max |change| per halving | quadrature - importance: mean ± SE, "
               "median, [min, max] | better |", "|---|---|---|---|---|---|"]
    for weight, found in results["by_weight"].items():
        checks, row = found["checks"], found["row"]
        halvings = ", ".join(f"{mean:.3g} / {largest:.3g}" for mean, largest in zip(
            checks["quadrature_change_by_size_mean_abs"], checks["quadrature_change_by_size_max_abs"]))
        lines.append(
            f"| {weight} | {' / '.join(f'{v:.3f}' for v in checks['importance_nll_by_size'])} | "
            f"{' / '.join(f'{v:.3f}' for v in checks['quadrature_nll_by_size'])} | {halvings} | "
            f"{row['quadrature_minus_importance']:.3f} ± {row['quadrature_minus_importance_se']:.3f}, "
            f"{row['quadrature_minus_importance_median']:.3g}, "
            f"[{row['quadrature_minus_importance_min']:.3g}, "
            f"{row['quadrature_minus_importance_max']:.3g}] | {row['estimate']} |")
    recommended = results["recommended"]
    lines.append(f"recommended: samples {recommended['samples']} "
                 f"(converged: {recommended['samples_converged']}), points per side "
                 f"{recommended['points_per_side']} (converged: {recommended['points_converged']}),"
                 f" decodes per model {recommended['decodes_per_model']}")
    return lines


def main(arguments: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="full", help="the notebook's profile (default full)")
    parser.add_argument("--images", type=int, default=None,
                        help="test images (default: the profile's likelihood_images)")
    parser.add_argument("--samples", type=int, nargs="+", default=list(likelihood.SAMPLES))
    parser.add_argument("--points", type=int, nargs="+", default=[8, 16, 32, 64],
                        help="local grid sizes, points per side (each double the last)")
    parser.add_argument("--coarse-points", type=int, default=likelihood.COARSE_POINTS)
    parser.add_argument("--extent", type=float, default=likelihood.COARSE_EXTENT)
    parser.add_argument("--output", type=Path, default=RESULTS)
    options = parser.parse_args(arguments)
    if any(later != 2 * earlier for earlier, later in zip(options.points, options.points[1:])):
        parser.error(f"--points: expected each size twice the last (a halved step), "
                     f"got {options.points}")
    profile = settings.get_profile(options.profile)
    images = options.images or profile.likelihood_images
    started = time.perf_counter()
    results = run(profile, images, options.samples, options.points, options.coarse_points,
                  options.extent)
    record = report.provenance(profile.name, settings.DEFAULT_SEED)
    storage.write_json_atomic(options.output, {
        "experiment": "likelihood_checks", "commit": record["commit"], "date": record["date"],
        "profile": profile.name, "seed": settings.DEFAULT_SEED, "versions": record["versions"],
        "kl_weights": list(settings.KL_WEIGHTS), **results})
    print("\n".join(summary_lines(results)))
    print(f"wrote {options.output} in {progress.format_duration(time.perf_counter() - started)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The KL-weight sweep at three training seeds: how much the sweep's numbers move between runs.

Run from the project root (the full profile: 3 weights x 20 epochs per seed; the notebook's own
seed, 42, is served from build/cache/ once `make run` has trained it; each other seed takes about
20 minutes on an AVX-512 VM with two cores):

    .venv/bin/python experiments/sweep_seeds.py [--seeds 42 43 44] [--profile full]

The report compares KL weights on the test images of one trained model per weight; those
intervals leave out the spread between training runs. This script trains the same sweep
(`ca4.run_kl_sweep`: the notebook's data, epochs, batch and schedule) at each seed and measures
each model with the notebook's own analyses (`ca4lib.vae_analyses.vae_sweep_rows`,
`ca4lib.latent_space.latent_space_rows`, `ca4lib.generation.generation_row`, and -log p(x) by
importance sampling with the profile's fewest samples), so that the report can put the spread
over seeds beside every comparison between weights. The seed sets
the initial weights, the shuffling and the sampling noise.

Writes experiments/results/sweep_seeds.json (committed; the report reads it) with the commit,
the date and, per seed, the rows of each analysis without their per-image arrays.
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
from ca4lib import (  # noqa: E402
    generation,
    inference,
    latent_space,
    likelihood,
    measures,
    progress,
    report,
    settings,
    storage,
    vae_analyses,
)

RESULTS = PROJECT_ROOT / "experiments" / "results" / "sweep_seeds.json"
# The notebook's parameters (ca4.ipynb, first cell) that the measured analyses use.
GRID_SIZE, GRID_EXTENT, SAMPLES, REFERENCE_CODES = 15, 2.0, 1000, 10000


def scalars(row: dict[str, Any]) -> dict[str, Any]:
    """A row without what is not a number or a short list of numbers."""
    return {name: value for name, value in row.items()
            if isinstance(value, (int, float, str, type(None)))
            or (isinstance(value, list) and len(value) <= 10)}


def measure_seed(seed: int, profile: settings.Profile, data: dict[str, np.ndarray],
                 classifier: Any) -> dict[str, Any]:
    """Train (or load) the sweep at `seed` and measure it as the notebook does."""
    x_train, x_test, y_test = data["x_train"], data["x_test"], data["y_test"]
    runs = ca4.run_kl_sweep(x_train, x_test, kl_weights=settings.KL_WEIGHTS,
                            epochs=profile.vae_epochs, seed=seed)
    terms = {w: inference.cached_analysis(ca4.vae_test_terms, r.model, x_test,
                                          settings.DEFAULT_SEED) for w, r in runs.items()}
    recognised = {w: measures.recognised(classifier, inference.decode_codes(
        r.model.decoder, terms[w]["z_mean"]), y_test) for w, r in runs.items()}
    sweep = vae_analyses.vae_sweep_rows(terms, {w: r.epochs for w, r in runs.items()},
                                        recognised)
    reference = {w: (vae_analyses.vae_encode(r.model, data["x_reference"])[0],
                     data["y_reference"]) for w, r in runs.items()}
    space = latent_space.latent_space_rows(
        terms, {w: r.model.decoder for w, r in runs.items()}, y_test, reference, GRID_SIZE,
        GRID_EXTENT, settings.DEFAULT_SEED)
    codes = vae_analyses.sample_prior(SAMPLES, settings.DEFAULT_SEED)
    generated = [{**generation.generation_row(
        f"KL weight {w:g}", *measures.classify(classifier, inference.decode_codes(
            r.model.decoder, codes)), seed=settings.DEFAULT_SEED), "kl_weight": w}
        for w, r in runs.items()]
    # -log p(x) by importance sampling with the fewest samples of the notebook's profile: the
    # differences between weights, seed to seed, not the best estimate of each.
    subset = x_test[: profile.likelihood_images]
    nll = {w: -float(np.mean(inference.cached_analysis(
        likelihood.importance_log_likelihood, r.model, subset, profile.importance_samples[:1],
        settings.DEFAULT_SEED)["log_likelihood"])) for w, r in runs.items()}
    return {"training_seconds": {f"{w:g}": round(r.seconds, 1) for w, r in runs.items()},
            "likelihood": [{"kl_weight": w, "nll": value, "samples": profile.importance_samples[0],
                            "images": len(subset)} for w, value in nll.items()],
            "sweep": [scalars(row) for row in sweep],
            "latent_space": [scalars(row) for row in space],
            "generation": [scalars(row) for row in generated]}


def main(arguments: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--profile", default="full", help="the notebook's profile (default full)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    options = parser.parse_args(arguments)
    profile = settings.get_profile(options.profile)
    started = time.perf_counter()
    (x_train_raw, y_train_raw), (x_test_raw, y_test_raw) = ca4.load_mnist()
    x_train = ca4.normalize_images(x_train_raw[: profile.train_size])
    data = {"x_train": x_train, "x_test": ca4.normalize_images(x_test_raw[: profile.test_size]),
            "y_test": y_test_raw[: profile.test_size],
            "x_reference": x_train[:REFERENCE_CODES],
            "y_reference": y_train_raw[: profile.train_size][:REFERENCE_CODES]}
    # The notebook's digit classifier (served from the cache once the notebook trained it).
    classifier = ca4.train_model(ca4.build_digit_classifier, x_train, data["x_test"],
                                 train_targets=y_train_raw[: profile.train_size],
                                 validation_targets=data["y_test"], name="digit_classifier",
                                 epochs=profile.classifier_epochs).model
    inference.cache_predictions()
    seeds = {}
    for seed in options.seeds:
        print(f"seed {seed}: the sweep {settings.KL_WEIGHTS}, {profile.vae_epochs} epochs each")
        seeds[str(seed)] = measure_seed(seed, profile, data, classifier)
    record = report.provenance(profile.name, settings.DEFAULT_SEED)
    storage.write_json_atomic(options.output, {
        "experiment": "sweep_seeds", "commit": record["commit"], "date": record["date"],
        "profile": profile.name, "versions": record["versions"], "seeds": options.seeds,
        "kl_weights": list(settings.KL_WEIGHTS), "epochs": profile.vae_epochs,
        "test_images": int(len(data["x_test"])), "results": seeds})
    print(f"wrote {options.output} in {progress.format_duration(time.perf_counter() - started)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

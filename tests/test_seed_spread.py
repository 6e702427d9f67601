"""The spread over training seeds (ca4lib.seed_spread): read from constructed result files, and
the rule that a difference between weights is clear only beyond both its interval and it."""

from __future__ import annotations

import json
import statistics

import pytest

from ca4lib import seed_spread
from ca4lib.estimates import Estimate


def result_file(tmp_path, per_seed, profile="full", epochs=20, metric="neg_elbo"):
    """A sweep_seeds.json with one sweep row per (seed, weight): {seed: {weight: value}}."""
    results = {str(seed): {"sweep": [{"kl_weight": weight, metric: value, "n": 10000}
                                     for weight, value in values.items()],
                           "training_seconds": {"1": 1.0}}
               for seed, values in per_seed.items()}
    path = tmp_path / "sweep_seeds.json"
    path.write_text(json.dumps({"profile": profile, "epochs": epochs, "seeds": list(per_seed),
                                "commit": "abc", "date": "2026-12-06", "results": results}))
    return path


def test_the_spread_of_a_difference_is_its_standard_deviation_over_seeds(tmp_path):
    path = result_file(tmp_path, {42: {1.0: 150.0, 5.0: 160.0}, 43: {1.0: 151.0, 5.0: 163.0},
                                  44: {1.0: 149.0, 5.0: 158.0}})
    spread = seed_spread.load_seed_spread("full", 20, path)
    assert spread.seeds == (42, 43, 44)
    assert spread.of("sweep", "neg_elbo", 5.0) == [160.0, 163.0, 158.0]
    assert spread.differences("sweep", "neg_elbo", 1.0, 5.0) == [10.0, 12.0, 9.0]
    assert spread.difference_sd("sweep", "neg_elbo", 1.0, 5.0) == pytest.approx(
        statistics.stdev([10.0, 12.0, 9.0]))


@pytest.mark.parametrize("profile, epochs", [("fast", 20), ("full", 2)])
def test_no_spread_for_another_profile_or_epoch_count(tmp_path, profile, epochs):
    path = result_file(tmp_path, {42: {1.0: 1.0}, 43: {1.0: 2.0}})
    assert seed_spread.load_seed_spread(profile, epochs, path) is None
    assert seed_spread.load_seed_spread("full", 20, tmp_path / "missing.json") is None


@pytest.mark.parametrize("value, se, spread, sign", [
    (-24.7, 0.48, 3.0, -1),  # clear on the images and beyond the seeds' spread
    (1.66, 0.35, 3.0, 0),  # clear on the images, within the seeds' spread: not clear
    (0.5, 0.4, 0.1, 0),  # not clear on the images, whatever the seeds
    (1.66, 0.35, None, 1),  # no spread known: the images' interval decides
])
def test_clear_sign_needs_the_interval_and_the_spread(value, se, spread, sign):
    assert seed_spread.clear_sign(Estimate(value, se, 1000), spread) == sign


def test_step_signs_of_a_rise_then_fall(tmp_path):
    rows = [{"kl_weight": 0.1, "n": 1000, "recognised": 0.708},
            {"kl_weight": 1.0, "n": 1000, "recognised": 0.725, "recognised_change": 0.0166,
             "recognised_change_se": 0.0035},
            {"kl_weight": 5.0, "n": 1000, "recognised": 0.478, "recognised_change": -0.247,
             "recognised_change_se": 0.0048}]
    assert seed_spread.step_signs(rows, "recognised", None) == [1, -1]
    path = result_file(tmp_path, {42: {0.1: 0.70, 1.0: 0.74, 5.0: 0.48},
                                  43: {0.1: 0.71, 1.0: 0.70, 5.0: 0.50}}, metric="recognised")
    spread = seed_spread.load_seed_spread("full", 20, path)
    # The first step moves by 0.04 and -0.01 between seeds: its 0.017 is within that spread.
    assert seed_spread.step_signs(rows, "recognised", spread) == [0, -1]

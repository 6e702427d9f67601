"""The appendix's paragraphs (ca4lib.discussion_appendix) on constructed rows."""

from __future__ import annotations

import json

import pytest
from test_discussion_task2 import generation_rows, issue_sweep, objective_rows

from ca4lib import discussion_appendix as appendix
from ca4lib import seed_spread


def test_models_beaten_on_their_own_objectives_and_the_slopes_that_show_it():
    text = appendix.objectives_text(objective_rows(), issue_sweep())
    assert "On weight 1's objective the weight-0.1 model does better than the model trained " \
           "on it, by 6.0 ± 0.2 nats and weight 5's objective the weight-1 model" in text
    # Slopes (distortion over rate): 0.1 -> 1: 11.7 / -5.7 = -2.05, inside [-1, -0.1]? No:
    # minus the slope, 2.05, is outside [0.1, 1]; 1 -> 5: 7.3 / 0.5 = +14.6, outside [1, 5].
    assert "-2.1 from weight 0.1 to 1 and 15 from weight 1 to 5" in text
    assert "from 0.1 to 1 and from 1 to 5 it does not" in text


def test_each_model_best_on_its_own_objective_with_slopes_inside():
    sweep = [{"kl_weight": 1.0, "kl": 6.0, "reconstruction": 140.0},
             {"kl_weight": 5.0, "kl": 4.0, "reconstruction": 146.0}]  # slope -3, in [1, 5]
    rows = [dict(row, own_minus_rival=-1.0) for row in objective_rows()[1:]]
    text = appendix.objectives_text(rows, sweep)
    assert "Each model does best on its own objective." in text
    assert "-3 from weight 1 to 5: each between the minus weights of its ends" in text


def test_generation_text_names_the_most_recognisable_samples():
    text = appendix.generation_text(generation_rows())
    assert "The most recognisable samples come from the VAE with KL weight 1" in text
    assert "97.0% of the real test images" in text


def seeds_file(tmp_path, neg_elbo_42):
    results = {str(seed): {"sweep": [{"kl_weight": w, "neg_elbo": value + seed - 42,
                                      "reconstruction": 1.0, "kl": 1.0}
                                     for w, value in zip((0.1, 1.0, 5.0), neg_elbo_42)]}
               for seed in (42, 43, 44)}
    path = tmp_path / "seeds.json"
    path.write_text(json.dumps({"profile": "full", "epochs": 20, "seeds": [42, 43, 44],
                                "commit": "0123456789abcdef", "date": "2026-12-06T20:00",
                                "results": results}))
    return seed_spread.load_seed_spread("full", 20, path)


@pytest.mark.parametrize("shift, words", [
    (0.0, "Its seed 42 gives this run's numbers exactly: the same models."),
    (0.05, "Its seed 42 is this run's training (the same code and seed) on another CPU, whose "
           "rounding gives slightly different models: their negative ELBO is within 0.05 nats "
           "of this run's at every weight, inside its standard error of 0.4"),
    (0.5, "Its seed 42 differs from this run's models at weight 0.1, 1 and 5 by more than the "
          "standard error of the negative ELBO"),
])
def test_seeds_text_checks_that_the_experiment_measured_these_models(tmp_path, shift, words):
    spread = seeds_file(tmp_path, [143.0 + shift, 149.0 + shift, 156.8 + shift])
    text = appendix.seeds_text(spread, issue_sweep(), seed=42)
    assert words in text
    assert "seeds 42, 43 and 44" in text and "commit 0123456789ab, 2026-12-06" in text


def test_seeds_text_without_results():
    assert "No results of `experiments/sweep_seeds.py` for this profile" in \
        appendix.seeds_text(None, issue_sweep(), seed=42)


def test_seed_rows_give_each_seed_and_the_standard_deviation(tmp_path):
    spread = seeds_file(tmp_path, [143.0, 149.0, 156.8])
    rows = appendix.seed_rows(spread)
    elbo = [row for row in rows if row["measure"] == "Negative ELBO"]
    assert [row["kl_weight"] for row in elbo] == ["0.1", "1", "5"]
    assert (elbo[0]["seed_42"], elbo[0]["seed_43"], elbo[0]["seed_44"], elbo[0]["sd"]) == (
        "143.0", "144.0", "145.0", "1.0")


def test_seed_step_rows_give_each_step_per_seed_and_its_spread(tmp_path):
    # Negative ELBO at seed 42: 143.0 / 149.0 / 156.8, each later seed one nat higher at every
    # weight: the steps are the same at every seed (6.0 and 7.8), with no spread.
    spread = seeds_file(tmp_path, [143.0, 149.0, 156.8])
    spread.values["sweep"]["neg_elbo"][1.0] = [149.0, 151.0, 150.0]  # steps 6, 7, 5: sd 1
    rows = [row for row in appendix.seed_step_rows(spread) if row["measure"] == "Negative ELBO"]
    assert [row["kl_weight"] for row in rows] == ["0.1 to 1", "1 to 5"]
    assert [rows[0][f"seed_{seed}"] for seed in (42, 43, 44)] == ["6.0", "7.0", "5.0"]
    assert rows[0]["sd"] == "1.0"
    assert [rows[1][f"seed_{seed}"] for seed in (42, 43, 44)] == ["7.8", "6.8", "8.8"]
    assert not any(row["measure"] == "Active" for row in appendix.seed_step_rows(spread))


def interpolation_rows(smoothness, unclear):
    baseline = {"model": "baseline, weight 0", "n": 200, "frames": 10}
    vae = {"model": "VAE KL weight 1", "n": 200, "frames": 10,
           "smoothness_change": smoothness[0], "smoothness_change_se": smoothness[1],
           "unclear_change": unclear[0], "unclear_change_se": unclear[1]}
    return [baseline, vae]


@pytest.mark.parametrize("smoothness, unclear, words", [
    # The full run's numbers: a clearly smaller largest step, unclear frames within the interval.
    ((-0.047, 0.004), (-0.022, 0.014),
     "the paths of the VAE with KL weight 1 are smoother than the baseline's: their largest step "
     "is lower by 0.047 ± 0.004 of the path's change, and their share of unclear frames is not "
     "clearly different (-2.2% ± 1.4%)"),
    ((0.03, 0.004), (0.05, 0.01),
     "are jumpier than the baseline's: their largest step is higher by 0.030 ± 0.004 of the "
     "path's change, and their share of unclear frames is higher by 5.0% ± 1.0%"),
    ((0.001, 0.004), (-0.05, 0.01), "are not clearly smoother or jumpier than the baseline's"),
])
def test_interpolation_text_words_each_difference_by_its_interval(smoothness, unclear, words):
    text = appendix.interpolation_text(interpolation_rows(smoothness, unclear))
    assert words in text
    assert "Over 200 random pairs of test digits, each path decoded at 10 points" in text
    assert "an even path scores 0.111" in text


def test_generation_text_says_when_the_most_recognisable_samples_crowd_on_one_digit():
    rows = generation_rows()
    best = next(row for row in rows if row["model"] == "VAE KL weight 1")
    best.update(digit_entropy=0.575, digit_counts=[637, 10, 23, 53, 12, 23, 9, 27, 104, 102])
    text = appendix.generation_text(rows)
    assert ("The most recognisable samples come from the VAE with KL weight 1, but they are "
            "also the least varied (digit entropy 0.575): the classifier reads 64% of them as "
            "a 0") in text
    best.update(digit_entropy=0.99)
    assert "least varied" not in appendix.generation_text(rows)

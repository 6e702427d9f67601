"""The likelihood paragraph and its tables (ca4lib.discussion_likelihood) on constructed rows:
every branch that words the better estimate, the agreement of the two estimates, the step
check, the K sweep, the images left out and the comparison between weights (with and without
a spread over seeds)."""

from __future__ import annotations

import re

import pytest
from test_likelihood import COARSE_STEP

from ca4lib import discussion_likelihood, likelihood
from ca4lib.estimates import Estimate


def paragraph_row(weight: float = 1.0, **fields) -> dict:
    """A row as likelihood_row writes it: quadrature converged and clearly above importance
    sampling, importance sampling converged at its last K step, 1,000 images, none left out."""
    difference = {"": 0.5, "_se": 0.02, "_median": 0.09, "_p01": -0.4, "_p99": 12.5,
                  "_min": -3.4, "_max": 167.0}
    row = {"kl_weight": weight, "likelihood_images": 1000, "n": 1000, "excluded": 0,
           "uncovered": 0, "estimate": "quadrature", "estimate_reason": "above",
           "test_log_likelihood": -140.0, "test_log_likelihood_se": 0.3, "importance_nll": 140.5,
           "importance_nll_se": 0.3, "quadrature_nll": 140.0, "quadrature_nll_se": 0.3,
           **{f"quadrature_minus_importance{end}": v for end, v in difference.items()},
           "agreement": "beyond", "step_change": 0.004, "step_check_source": "computed",
           "quadrature_points": 64, "importance_sizes": [100, 300, 1000],
           "importance_nll_by_size": [141.2, 140.7, 140.5], "importance_nll_by_size_se": [0.3] * 3,
           "importance_change_by_size": [-0.5, -0.02], "importance_change_by_size_se": [0.02, 0.01],
           "quadrature_sizes": [32, 64], "quadrature_change_by_size": [0.001],
           "quadrature_change_by_size_se": [0.0005], "quadrature_change_by_size_mean_abs": [0.004],
           "quadrature_change_by_size_max_abs": [0.031], "coarse_points": 128, "extent": 6.0,
           "coarse_step": COARSE_STEP, "local_step_median": 0.0074, "local_step_max": 0.027,
           "variational_gap": 3.0, "variational_gap_se": 0.05, "nll_above_best": 0.0,
           "nll_above_best_se": 0.0, "floor": 102.0, "neg_elbo_importance": 143.0}
    row.update(fields)
    return row


def three_rows(**fields) -> list[dict]:
    above = fields.pop("above", ((5.0, 0.1), (0.0, 0.0), (20.0, 0.2)))
    return [paragraph_row(weight, nll_above_best=value, nll_above_best_se=se, **fields)
            for weight, (value, se) in zip((0.1, 1.0, 5.0), above)]


def paragraph(rows) -> str:
    text = discussion_likelihood.likelihood_paragraph(rows)
    assert not re.search(r"-0(\.0+)?(?![\d.])", text), text
    assert "trusts no encoder" not in text
    return text


def test_likelihood_paragraph_method_and_the_better_estimate_above():
    text = paragraph(three_rows())
    assert text.startswith("**Likelihood.** $-\\log p(x)$ of the first 1,000 test images")
    assert "K = 100 / 300 / 1,000 samples" in text
    assert "needs no encoder: a coarse grid of 128×128 points over $[-6, 6]^2$" in text
    assert "a 64×64 grid over a window around its maximum" in text
    assert "(local step: median 0.0074, at most 0.027)" in text
    assert "halving the local step (32 against 64 points per side) checks it" in text
    assert "Every image is covered at every weight" in text
    assert ("At weight 0.1, **quadrature** is the better estimate, $-\\log p(x)$ = 140.00 ± 0.30 "
            "nats: halving its local step moves $-\\log p(x)$ by 0.004 nats per image on average "
            "(at most 0.031), within the 0.1-nat tolerance, and its $\\log p(x)$ lies clearly "
            "above importance sampling's (its $-\\log p(x)$ below), by 0.50 ± 0.02 nats per "
            "image") in text
    # The median against the maximum: the mean alone hides the tail (the referee's 0.09 and 167).
    assert ("Per image, quadrature minus importance sampling has medians of 0.09, 0.09 and 0.09 "
            "nats and maxima of 167, 167 and 167 nats for weights 0.1 / 1 / 5 (Table 13 gives "
            "the tails)") in text
    # The same K and the same verdict at every weight: one sentence (the values are in Table 13).
    assert ("From K = 300 to 1,000 the importance-sampling $-\\log p(x)$ changes by -0.02 ± 0.01, "
            "-0.02 ± 0.01 and -0.02 ± 0.01 nats for weights 0.1 / 1 / 5 (within the 0.1-nat "
            "tolerance: converged; Table 13 gives each K).") in text
    assert "By the better estimate, $-\\log p(x)$ is lowest at weight 1; clearly above it are " \
           "weight 0.1 by 5.00 ± 0.10, weight 5 by 20.00 ± 0.20 nats" in text
    assert "is 3.00 ± 0.05, 3.00 ± 0.05, 3.00 ± 0.05 nats for weights 0.1 / 1 / 5" in text


@pytest.mark.parametrize("difference, agreement, words", [
    ((0.03, 0.02), "within", "(0.03 ± 0.02 nats per image; they agree within the 0.1-nat tolerance)"),
    # 0.0551 ± 0.0232 reaches past 0.1: '0.06 ± 0.02' would read as within.
    ((0.0551, 0.0232), "unclear", "(0.055 ± 0.023 nats per image; the interval is too wide to say "
                                  "whether they agree within the 0.1-nat tolerance)"),
])
def test_likelihood_paragraph_when_the_estimates_agree(difference, agreement, words):
    value, se = difference
    rows = three_rows(estimate_reason="agree", quadrature_minus_importance=value,
                      quadrature_minus_importance_se=se)
    assert likelihood.agreement_of(Estimate(value, se, 1000)) == agreement
    text = paragraph(rows)
    assert "importance sampling is not clearly below or above it " + words in text
    assert "the step check bounds the quadrature's error" in text


def test_likelihood_paragraph_when_quadrature_is_below():
    text = paragraph(three_rows(estimate="importance", estimate_reason="below",
                                quadrature_minus_importance=-0.4, test_log_likelihood=-140.5))
    assert ("At weight 1, **importance sampling** is the better estimate, $-\\log p(x)$ = "
            "140.50 ± 0.30 nats: quadrature's $\\log p(x)$ lies clearly below it, by -0.40 ± "
            "0.02 nats per image, which an exact integral cannot") in text
    assert "the grid misses mass, although halving its local step moves it by only 0.004" in text


def test_likelihood_paragraph_when_the_step_check_fails():
    text = paragraph(three_rows(estimate="importance", estimate_reason="step", step_change=0.1002,
                                quadrature_change_by_size_max_abs=[4.0]))
    # 0.1002 is beyond the tolerance: printed so that it reads so, not as '0.1'.
    assert ("halving the quadrature's local step still moves it by 0.1002 nats per image on "
            "average (at most 4), beyond the 0.1-nat tolerance, so its grid is too coarse") in text


def test_likelihood_paragraph_without_a_step_check_or_a_k_sweep():
    rows = three_rows(estimate="importance", estimate_reason="unchecked", step_change=None,
                      step_check_source=None, quadrature_sizes=[64], quadrature_change_by_size_max_abs=[],
                      importance_sizes=[1000], importance_nll_by_size=[140.5],
                      importance_change_by_size=[], importance_change_by_size_se=[])
    text = paragraph(rows)
    assert "its step was not checked." in text
    assert "the quadrature's step was not checked (one grid size)" in text
    assert "Importance sampling gives 140.50 nats at K = 1,000; its K was not swept." in text


@pytest.mark.parametrize("change, words", [
    ((-0.3, 0.02), "-0.30 ± 0.02 nats (beyond the 0.1-nat tolerance: still falling with K)"),
    ((-0.08, 0.02), "-0.08 ± 0.02 nats (too uncertain to say whether it is within the 0.1-nat "
                    "tolerance)"),
])
def test_likelihood_paragraph_k_sweep_verdicts(change, words):
    value, se = change
    rows = three_rows(importance_change_by_size=[-0.5, value],
                      importance_change_by_size_se=[0.02, se])
    # Another verdict at weight 0.1 (converged): one sentence per weight.
    rows[0].update(importance_change_by_size=[-0.5, -0.02],
                   importance_change_by_size_se=[0.02, 0.01])
    text = paragraph(rows)
    assert "from K = 300 to 1,000 its $-\\log p(x)$ changes by " + words in text
    assert ("from K = 300 to 1,000 its $-\\log p(x)$ changes by -0.02 ± 0.01 nats (within the "
            "0.1-nat tolerance: converged)") in text


def test_likelihood_paragraph_one_k_sweep_sentence_when_every_weight_agrees():
    text = paragraph(three_rows(importance_sizes=[100, 300],
                                importance_change_by_size=[-0.25],
                                importance_change_by_size_se=[0.03]))
    assert ("From K = 100 to 300 the importance-sampling $-\\log p(x)$ changes by -0.25 ± 0.03, "
            "-0.25 ± 0.03 and -0.25 ± 0.03 nats for weights 0.1 / 1 / 5 (beyond the 0.1-nat "
            "tolerance: still falling with K; Table 13 gives each K).") in text


def test_likelihood_paragraph_names_a_step_check_from_the_experiment():
    rows = three_rows(step_check_source="experiment", quadrature_points=32,
                      quadrature_sizes=[32, 64], step_check_offset=0.05,
                      step_check_tolerance=0.95)
    rows[2]["step_check_offset"] = -0.0501
    text = paragraph(rows)
    assert ("a 32×32 grid over a window around its maximum refines it (local step: median "
            "0.0074, at most 0.027), and the coarse grid adds what lies outside the window; "
            "halving the local step (32 against 64 points per side) was checked once on the "
            "same images by experiments/likelihood_checks.py, for models whose $-\\log p(x)$ at "
            "this grid differs from this run's by at most 0.0501 nats at every weight (less "
            "than its standard error, 0.95).") in text


def test_likelihood_paragraph_says_the_experiments_check_was_of_other_models():
    refused = {"kl_weight": 5.0, "offset": -2.004, "tolerance": 0.95}
    text = paragraph(three_rows(estimate="importance", estimate_reason="unchecked",
                                step_change=None, step_check_source=None,
                                quadrature_sizes=[16], quadrature_change_by_size_max_abs=[],
                                step_check_refused=refused))
    assert ("its step was not checked: experiments/likelihood_checks.py checked it for other "
            "models (at weight 5 their $-\\log p(x)$ is 2.00 nats from this run's, beyond the "
            "standard error of 0.95); run it again.") in text


def test_likelihood_paragraph_counts_the_images_left_out():
    rows = [paragraph_row(weight, n=997, excluded=3, uncovered=uncovered, nll_above_best=value,
                          nll_above_best_se=se)
            for weight, uncovered, (value, se) in ((0.1, 2, (5.0, 0.1)), (1.0, 0, (0.0, 0.0)),
                                                   (5.0, 1, (20.0, 0.2)))]
    text = paragraph(rows)
    assert ("3 of the 1,000 images are left out of both estimates at every weight (2 at weight "
            "0.1, 1 at weight 5)") in text
    assert "every number below is over the other 997." in text


def test_likelihood_paragraph_ties_and_mixed_estimates_between_weights():
    rows = three_rows(above=((0.1, 0.1), (0.0, 0.0), (0.0225, 0.0140)))
    rows[0].update(estimate="importance", estimate_reason="step", step_change=0.5,
                   quadrature_change_by_size_max_abs=[4.0])
    text = paragraph(rows)
    assert ("By each weight's better estimate, $-\\log p(x)$ is lowest at weight 1, not clearly "
            "below weight 0.1 / 5.") in text
    assert "clearly above it are" not in text


def test_likelihood_paragraph_prints_enough_digits_for_its_verdicts():
    # '-0.02 ± 0.01' would read as clearly below zero; the interval includes it.
    assert discussion_likelihood.interval_text(Estimate(-0.0226, 0.0140, 1000)) == "-0.023 ± 0.014"
    assert Estimate(-0.02, 0.01, 1000).sign == -1 != Estimate(-0.0226, 0.0140, 1000).sign
    assert discussion_likelihood.interval_text(Estimate(148.93, 0.31, 1000)) == "148.93 ± 0.31"
    assert discussion_likelihood.amount_text(0.10004) == "0.10004"
    assert discussion_likelihood.amount_text(0.0999) == "0.0999"


def test_likelihood_table_gives_both_estimates_and_the_checks():
    rows = three_rows()
    rows[0].update(n=980, excluded=20, estimate="importance", estimate_reason="step",
                   test_log_likelihood=-140.5)
    estimates_table = discussion_likelihood.likelihood_table(rows)
    checks_table = discussion_likelihood.likelihood_checks_table(rows)
    assert "| KL weight | Images | Importance sampling | Quadrature | Better | Negative ELBO | " \
           "Variational gap |" in estimates_table
    assert "| 0.1 | 980 of 1,000 | 140.50 ± 0.30 | 140.00 ± 0.30 | importance sampling | " \
           "143.00 | 3.00 ± 0.05 |" in estimates_table
    assert "| 1 | 1,000 | 140.50 ± 0.30 | 140.00 ± 0.30 | quadrature |" in estimates_table
    # On its side: one column per weight, one row per check.
    assert checks_table.splitlines()[0] == "| KL weight | 0.1 | 1 | 5 |"
    assert "| median | 0.09 | 0.09 | 0.09 |" in checks_table
    assert "| min / max | -3.4 / 167 | -3.4 / 167 | -3.4 / 167 |" in checks_table
    assert ("| $-\\log p(x)$ by importance sampling at K = 100 / 300 / 1,000 | "
            "141.20 / 140.70 / 140.50 |") in checks_table
    assert "| its change at the last K step | -0.02 ± 0.01 |" in checks_table


def test_a_likelihood_difference_within_the_seed_spread_is_not_clear(tmp_path):
    import json as json_module

    from ca4lib import seed_spread

    rows = three_rows()
    path = tmp_path / "seeds.json"
    # -log p(x) per seed for weights 0.1, 1, 5. Against weight 1 (the best), weight 0.1 differs
    # by -5, +5, -9 (sd 7.2, more than its 5.0 nats), weight 5 by 15, 25, 6 (sd 9.5, less than 20).
    nll = {42: (140.0, 145.0, 160.0), 43: (146.0, 141.0, 166.0), 44: (139.0, 148.0, 154.0)}
    path.write_text(json_module.dumps({
        "profile": "full", "epochs": 20, "seeds": [42, 43, 44], "results": {
            str(seed): {"likelihood": [{"kl_weight": w, "nll": value}
                                       for w, value in zip((0.1, 1.0, 5.0), values)]}
            for seed, values in nll.items()}}))
    spread = seed_spread.load_seed_spread("full", 20, path)
    without = discussion_likelihood.comparison_text(rows)
    with_spread = discussion_likelihood.comparison_text(rows, spread)
    assert "clearly above it are weight 0.1 by 5.00 ± 0.10, weight 5 by 20.00 ± 0.20" in without
    assert "training seeds" not in without
    assert "lowest at weight 1, not clearly below weight 0.1; clearly above it are weight 5" \
        in with_spread
    assert ("these differences (by importance sampling at K = 100, the experiment's estimate) "
            "vary by 7.2 nats (weight 0.1) and 9.5 nats (weight 5)") in with_spread

"""The appendix's paragraphs and tables beyond the likelihood (notebook: *Appendix*): each
model on every weight's objective, the latent spaces, generation, interpolation, and the
sweep at three training seeds.

Each builder takes the analyses' rows and returns Markdown (or table rows); a comparison is
stated only where its 95 % interval excludes zero.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from ca4lib.estimates import Estimate, estimate_of, number
from ca4lib.measures import CONFIDENCE
from ca4lib.numbering import figure, table
from ca4lib.seed_spread import SeedSpread
from ca4lib.wording import listed, percent, plural, verdict_by


def objectives_text(objectives: Sequence[Mapping[str, Any]],
                    sweep: Sequence[Mapping[str, Any]]) -> str:
    """Whether each model is best on the objective it was trained for, with the slope of the
    rate-distortion plane between neighbouring models."""
    beaten = [row for row in objectives if "own_minus_rival" in row and Estimate(
        row["own_minus_rival"], row["own_minus_rival_se"], row["n"]).sign > 0]
    text = (f"**Each model on every objective.** A model trained with weight $\\beta$ "
            f"minimises reconstruction + $\\beta$ × KL; {table('task2_objectives')} scores "
            f"every model on each weight's objective over the test images. ")
    if beaten:
        margins = [Estimate(row["own_minus_rival"], row["own_minus_rival_se"], row["n"])
                   for row in beaten]
        text += ("On " + listed([f"weight {row['objective']:g}'s objective the weight-"
                                 f"{row['rival']:g} model does better than the model trained "
                                 f"on it, by {margin.text('.1f')} nats"
                                 for row, margin in zip(beaten, margins)])
                 + (": training did not bring that model to its objective's optimum. "
                    if len(beaten) == 1 else
                    ": training did not bring those models to their objectives' optima. "))
    else:
        text += "Each model does best on its own objective. "
    slopes = []
    for a, b in zip(sweep, sweep[1:]):
        rate = b["kl"] - a["kl"]
        if abs(rate) > 1e-9:
            slopes.append((a["kl_weight"], b["kl_weight"], (b["reconstruction"]
                                                            - a["reconstruction"]) / rate))
    if slopes:
        inside = [low <= -slope <= high for low, high, slope in slopes]
        text += (f"In the rate-distortion plane ({figure('task2_rate_distortion')}), the slope "
                 f"between neighbouring models is "
                 + listed([f"{number(slope, '.2g')} from weight {low:g} to {high:g}"
                           for low, high, slope in slopes])
                 + (": each between the minus weights of its ends, as a frontier of optimal "
                    "models would give." if all(inside) else
                    "; a pair of models at their optima would give a slope between minus the "
                    "weights of its ends, and "
                    + listed([f"from {low:g} to {high:g}" for (low, high, _), ok
                              in zip(slopes, inside) if not ok])
                    + " it does not."))
    return text.rstrip()


def model_phrase(name: str) -> str:
    """A generator's table name in a sentence: 'VAE KL weight 1' -> 'the VAE with KL weight 1',
    'baseline, weight 0' -> 'the baseline'."""
    if name.startswith("VAE KL weight "):
        return "the VAE with KL weight " + name.removeprefix("VAE KL weight ")
    return "the " + name.split(",")[0]


def narrowest_text(best: Mapping[str, Any], generators: Sequence[Mapping[str, Any]]) -> str:
    """Where the most recognisable samples are also clearly the least varied (the lowest
    digit entropy), the clause that says so, with the digit they crowd on: a generator that
    draws mostly one easy digit scores a high confident share."""
    others = [row for row in generators if row is not best]
    if not others or "digit_counts" not in best or not all(
            (estimate_of(row, "digit_entropy") - estimate_of(best, "digit_entropy")).sign > 0
            for row in others):
        return ""
    counts = best["digit_counts"]
    digit = max(range(len(counts)), key=counts.__getitem__)
    return (f", but they are also the least varied (digit entropy "
            f"{number(best['digit_entropy'], '.3f')}): the classifier reads "
            f"{percent(counts[digit] / sum(counts), 0)} of them as a {digit}")


def generation_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """Samples of each generator read by the classifier, against the real test images."""
    reference, *generators = rows
    best = max(generators, key=lambda row: row["confident_share"])
    ties = [model_phrase(row["model"]) for row in generators if row is not best and (
        estimate_of(best, "confident_share") - estimate_of(row, "confident_share")).sign == 0]
    even = [model_phrase(row["model"]) for row in generators if (
        estimate_of(row, "digit_entropy") - estimate_of(reference, "digit_entropy")).sign == 0]
    return (
        f"**Generation.** The classifier reads {percent(reference['confident_share'])} of the "
        f"real test images with confidence (probability at least {CONFIDENCE:g}), and their "
        f"digits have an entropy of {number(reference['digit_entropy'], '.3f')} (1 for ten "
        f"equally frequent digits): these, not 100% and 1, are what a perfect generator would "
        f"score ({table('task2_generation')}, {figure('task2_generated')}). The most "
        f"recognisable samples come from {model_phrase(best['model'])}"
        + (f", not clearly ahead of {listed(ties)}" if ties else "")
        + narrowest_text(best, generators)
        + (f"; the digits of {listed(even)} are as evenly spread as the real ones" if even
           else "; no generator's digits are as evenly spread as the real ones") + ".")


def interpolation_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """Straight paths between test digits: each VAE's against the deterministic baseline's,
    by the largest step's share of the path (lower is smoother) and the unclear frames."""
    baseline, *others = rows
    parts = []
    for row in others:
        smooth = Estimate(row["smoothness_change"], row["smoothness_change_se"], row["n"])
        unclear = Estimate(row["unclear_change"], row["unclear_change_se"], row["n"])
        lead = {-1: "smoother than", 1: "jumpier than",
                0: "not clearly smoother or jumpier than"}[smooth.sign]
        parts.append(
            f"the paths of {model_phrase(row['model'])} are {lead} {model_phrase(baseline['model'])}'s"
            f": their largest step is {verdict_by(smooth, 'lower', 'higher', '.3f')} of the "
            f"path's change, and their share of unclear frames is "
            f"{verdict_by(unclear, 'lower', 'higher', '.1%')} (paired over the pairs)")
    return (f"**Interpolation.** Over {rows[0]['n']} random pairs of test digits, each path "
            f"decoded at {rows[0]['frames']} points ({table('task2_interpolation')}, "
            f"{figure('task2_interpolation')}; an even path scores "
            f"{1 / (rows[0]['frames'] - 1):.3f}), " + "; ".join(parts) + ".")


# The sweep's numbers the seeds tables show: (section, metric, header, format).
SEED_METRICS = (("sweep", "reconstruction", "Reconstruction", ".1f"),
                ("sweep", "mean_code_reconstruction", "Reconstruction at $\\mu$", ".1f"),
                ("sweep", "kl", "KL", ".2f"),
                ("sweep", "neg_elbo", "Negative ELBO", ".1f"),
                ("sweep", "recognised", "Recognised", ".1%"),
                ("sweep", "prior_mismatch", "Prior mismatch", ".2f"),
                ("sweep", "active_dimensions", "Active", "g"),
                ("latent_space", "own_active_neighbour_change", "Neighbour change", ".3f"),
                ("generation", "confident_share", "Confident samples", ".1%"),
                ("likelihood", "nll", "$-\\log p(x)$, K = 100", ".1f"))


def seed_row(measure: str, label: Any, values: Sequence[float], seeds: Sequence[int],
             spec: str) -> dict[str, Any]:
    """One row of a seeds table: the value at each seed and their standard deviation."""
    sd = statistics.stdev(values) if len(values) > 1 else math.nan
    return {"measure": measure, "kl_weight": label,
            **{f"seed_{seed}": format(value, spec) for seed, value in zip(seeds, values)},
            "sd": format(sd, spec) if math.isfinite(sd) else "–"}


def seed_rows(spread: SeedSpread) -> list[dict[str, Any]]:
    """One row per weight and metric: the value at each seed and their standard deviation."""
    return [seed_row(header, format(weight, "g"), spread.of(section, metric, weight),
                     spread.seeds, spec)
            for section, metric, header, spec in SEED_METRICS
            for weight in sorted(spread.values.get(section, {}).get(metric, {}))]


def seed_step_rows(spread: SeedSpread) -> list[dict[str, Any]]:
    """One row per step between neighbouring weights and metric: the step at each seed (the
    later weight's value minus the earlier's) and its standard deviation over the seeds, the
    spread a step between weights must exceed to count."""
    rows = []
    for section, metric, header, spec in SEED_METRICS:
        if metric == "active_dimensions":
            continue
        weights = sorted(spread.values.get(section, {}).get(metric, {}))
        for first, second in zip(weights, weights[1:]):
            rows.append(seed_row(header, f"{first:g} to {second:g}",
                                 spread.differences(section, metric, first, second),
                                 spread.seeds, spec))
    return rows


def seed_columns(spread: SeedSpread, label: str = "Weight") -> dict[str, str]:
    """A seeds table's columns, for report.markdown_table: `label` heads the weight (or the
    step) column."""
    return {"measure": "Measure", "kl_weight": label,
            **{f"seed_{seed}": f"Seed {seed}" for seed in spread.seeds},
            "sd": "Standard deviation"}


def seeds_text(spread: SeedSpread | None, sweep: Sequence[Mapping[str, Any]],
               seed: int) -> str:
    """Where the spread over seeds comes from, and whether this run's own seed reproduces the
    experiment's models: the same numbers, numbers within the standard error of each negative
    ELBO (the same training on another CPU, whose rounding moves a trained model a little),
    or other models."""
    if spread is None:
        return ("**Three training seeds.** No results of `experiments/sweep_seeds.py` for this "
                "profile: the verdicts between weights rest on the test images' intervals "
                "alone, which leave out the spread between training runs.")
    text = (f"**Three training seeds.** `experiments/sweep_seeds.py` trained the sweep at seeds "
            f"{listed([str(s) for s in spread.seeds])} ({plural(sweep[0]['epochs'], 'epoch')} "
            f"each, commit {spread.commit[:12]}, {spread.date[:10]}): {table('task2_seeds')} "
            f"gives each number per seed and {table('task2_seed_steps')} each step between "
            f"weights, with their standard deviations; a step between weights counts in this "
            f"report only when it is clear on the test images and larger than its standard "
            f"deviation over the seeds.")
    if seed not in spread.seeds:
        return text
    index = spread.seeds.index(seed)
    offsets = {row["kl_weight"]: spread.of("sweep", "neg_elbo", row["kl_weight"])[index]
               - row["neg_elbo"] for row in sweep}
    differ = [row["kl_weight"] for row in sweep
              if abs(offsets[row["kl_weight"]]) > row["neg_elbo_se"]]
    if differ:
        return text + (f" Its seed {seed} differs from this run's models at weight "
                       f"{listed([number(w, 'g') for w in differ])} by more than the standard "
                       f"error of the negative ELBO: the experiment measured other models than "
                       f"this report's, so its spread is only indicative.")
    largest = max(abs(offset) for offset in offsets.values())
    if largest <= 1e-6 * max(abs(row["neg_elbo"]) for row in sweep):
        return text + f" Its seed {seed} gives this run's numbers exactly: the same models."
    return text + (f" Its seed {seed} is this run's training (the same code and seed) on "
                   f"another CPU, whose rounding gives slightly different models: their "
                   f"negative ELBO is within {number(largest, '.2g')} nats of this run's at "
                   f"every weight, inside its standard error of "
                   f"{number(min(row['neg_elbo_se'] for row in sweep), '.2g')}, while other "
                   f"numbers may differ by more.")

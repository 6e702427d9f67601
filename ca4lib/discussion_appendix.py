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
from ca4lib.wording import listed, percent, plural


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
                 + ": training stopped those models short of their objectives' optima. ")
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


def generation_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """Samples of each generator read by the classifier, against the real test images."""
    reference, *generators = rows
    best = max(generators, key=lambda row: row["confident_share"])
    ties = [row["model"] for row in generators if row is not best and (
        estimate_of(best, "confident_share") - estimate_of(row, "confident_share")).sign == 0]
    even = [row["model"] for row in generators if (
        estimate_of(row, "digit_entropy") - estimate_of(reference, "digit_entropy")).sign == 0]
    return (
        f"**Generation.** The classifier reads {percent(reference['confident_share'])} of the "
        f"real test images with confidence (probability at least {CONFIDENCE:g}), and their "
        f"digits have an entropy of {number(reference['digit_entropy'], '.3f')} (1 for ten "
        f"equally frequent digits): these, not 100% and 1, are what a perfect generator would "
        f"score ({table('task2_generation')}, {figure('task2_generated')}). The most "
        f"recognisable samples come from the {best['model']}"
        + (f", not clearly ahead of the {listed(ties)}" if ties else "")
        + (f"; the digits of the {listed(even)} are as evenly spread as the real ones" if even
           else "; no generator's digits are as evenly spread as the real ones") + ".")


def interpolation_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """Straight paths between test digits: each VAE's against the deterministic baseline's."""
    baseline, *others = rows
    parts = []
    for row in others:
        smooth = Estimate(row["smoothness_change"], row["smoothness_change_se"], row["n"])
        unclear = Estimate(row["unclear_change"], row["unclear_change_se"], row["n"])
        parts.append(
            f"the {row['model']}'s paths are "
            f"{ {-1: 'smoother', 1: 'jumpier', 0: 'not clearly smoother or jumpier'}[smooth.sign]}"
            f" than the {baseline['model']}'s (largest step {smooth.text('.3f')} of the path's "
            f"change, paired) and hold "
            f"{ {-1: 'fewer', 1: 'more', 0: 'not clearly more or fewer'}[unclear.sign]} unclear "
            f"frames ({unclear.text('.1%')})")
    return (f"**Interpolation.** Over {rows[0]['n']} random pairs of test digits, each path "
            f"decoded at {rows[0]['frames']} points ({table('task2_interpolation')}, "
            f"{figure('task2_interpolation')}; an even path scores "
            f"{1 / (rows[0]['frames'] - 1):.3f}), " + "; ".join(parts) + ".")


# The sweep's numbers the seeds table shows: (section, metric, header, format).
SEED_METRICS = (("sweep", "reconstruction", "Reconstruction", ".1f"),
                ("sweep", "kl", "KL", ".2f"),
                ("sweep", "neg_elbo", "Negative ELBO", ".1f"),
                ("sweep", "recognised", "Recognised", ".1%"),
                ("sweep", "active_dimensions", "Active", "g"),
                ("latent_space", "own_active_neighbour_change", "Neighbour change", ".3f"),
                ("generation", "confident_share", "Confident samples", ".1%"))


def seed_rows(spread: SeedSpread) -> list[dict[str, Any]]:
    """One row per weight and metric: the value at each seed and their standard deviation."""
    rows = []
    for section, metric, header, spec in SEED_METRICS:
        for weight in sorted(spread.values.get(section, {}).get(metric, {})):
            values = spread.of(section, metric, weight)
            sd = statistics.stdev(values) if len(values) > 1 else math.nan
            rows.append({"measure": header, "kl_weight": weight,
                         **{f"seed_{seed}": format(value, spec)
                            for seed, value in zip(spread.seeds, values)},
                         "sd": format(sd, spec) if math.isfinite(sd) else "–"})
    return rows


def seed_columns(spread: SeedSpread) -> dict[str, str]:
    """The seeds table's columns, for report.markdown_table."""
    return {"measure": "Measure", "kl_weight": "Weight|g",
            **{f"seed_{seed}": f"Seed {seed}" for seed in spread.seeds},
            "sd": "Standard deviation"}


def seeds_text(spread: SeedSpread | None, sweep: Sequence[Mapping[str, Any]],
               seed: int, tolerance: float = 1e-6) -> str:
    """Where the spread over seeds comes from, and whether this run's own seed reproduces the
    experiment's numbers (else the experiment measured other models)."""
    if spread is None:
        return ("**Three training seeds.** No results of `experiments/sweep_seeds.py` for this "
                "profile: the verdicts between weights rest on the test images' intervals "
                "alone, which leave out the spread between training runs.")
    text = (f"**Three training seeds.** `experiments/sweep_seeds.py` trained the sweep at seeds "
            f"{listed([str(s) for s in spread.seeds])} ({plural(sweep[0]['epochs'], 'epoch')} "
            f"each, commit {spread.commit[:12]}, {spread.date[:10]}); {table('task2_seeds')} "
            f"gives each number per seed and its standard deviation, the spread every verdict "
            f"between weights in this report must exceed.")
    if seed not in spread.seeds:
        return text
    index = spread.seeds.index(seed)
    differ = [row["kl_weight"] for row in sweep
              if abs(spread.of("sweep", "neg_elbo", row["kl_weight"])[index] - row["neg_elbo"])
              > tolerance * max(1.0, abs(row["neg_elbo"]))]
    if differ:
        return text + (f" Its seed {seed} differs from this run's models at weight "
                       f"{listed([number(w, 'g') for w in differ])}: the experiment measured "
                       f"other models than this report's, so its spread is only indicative.")
    return text + f" Its seed {seed} gives this run's numbers exactly: the same models."

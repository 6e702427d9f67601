"""The likelihood of the test digits in words and tables, written from `likelihood.likelihood_rows`
(notebook: the report's appendix, *The likelihood of the test digits*; the Task 2 discussion
quotes the paragraph).

The paragraph says which estimate of -log p(x) is better and why (the step check, the K sweep
and the paired difference between the two estimates), headlines that one, and gives the
difference's median and tails beside its mean. Every comparison, between the estimates or
between weights, is worded from an Estimate's 95 % interval (`Estimate.sign`,
`likelihood.agreement_of`), and printed with as many digits as it takes for the printed value
and SE to support the same verdict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ca4lib.estimates import Estimate, number, standard_error_text
from ca4lib.likelihood import AGREEMENT_NATS, agreement_of
from ca4lib.numbering import table
from ca4lib.report import markdown_table
from ca4lib.seed_spread import SeedSpread, clear_sign
from ca4lib.wording import joined, listed, weights_text

ESTIMATE_NAMES = {"quadrature": "quadrature", "importance": "importance sampling"}


def interval_text(estimate: Estimate, decimals: int = 2, tolerance: float | None = None) -> str:
    """'value ± SE' with `decimals` decimals, or more (up to four more) until the printed pair
    gives the verdict the unrounded estimate gives: the same sign (`Estimate.sign`) and, with
    a tolerance, the same `agreement_of`. Never '-0.02 ± 0.01' for -0.0225 ± 0.0140."""
    def verdicts(found: Estimate) -> tuple[int, str | None]:
        return found.sign, None if tolerance is None else agreement_of(found, tolerance)

    wanted = verdicts(estimate)
    for places in range(decimals, decimals + 5):
        value = number(estimate.value, f".{places}f")
        se = standard_error_text(estimate.se, f".{places}f")
        if verdicts(Estimate(float(value), float(se), estimate.n)) == wanted:
            break
    return f"{value} ± {se}"


def amount_text(value: float, tolerance: float = AGREEMENT_NATS) -> str:
    """A number without an SE, compared with a tolerance: three significant digits, or more
    until the printed number lies on the same side of the tolerance as the value."""
    for digits in range(3, 8):
        text = number(value, f".{digits}g")
        if (abs(float(text)) <= tolerance) == (abs(value) <= tolerance):
            return text
    return text


def tails_text(row: Mapping[str, Any]) -> str:
    """The median and tails of quadrature minus importance sampling, per image."""
    name = "quadrature_minus_importance"
    return (f"median {number(row[f'{name}_median'], '.3g')}, 1st to 99th percentile "
            f"{number(row[f'{name}_p01'], '.3g')} to {number(row[f'{name}_p99'], '.3g')}, "
            f"minimum {number(row[f'{name}_min'], '.3g')}, maximum "
            f"{number(row[f'{name}_max'], '.3g')}")


def tail_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """The per-image difference across weights: its medians against its maxima, which the mean
    hides."""
    name = "quadrature_minus_importance"
    medians = listed([number(row[f"{name}_median"], ".2g") for row in rows])
    maxima = listed([number(row[f"{name}_max"], ".3g") for row in rows])
    return (f"Per image, quadrature minus importance sampling has medians of {medians} nats "
            f"and maxima of {maxima} nats for weights "
            f"{weights_text([row['kl_weight'] for row in rows])} "
            f"({table('task2_likelihood_checks')} gives the tails): its mean is pulled by the few "
            f"images where the grid finds far more mass than the samples of $q(z \\mid x)$.")


def difference_of(row: Mapping[str, Any]) -> Estimate:
    """Quadrature minus importance sampling (log p(x), per image) as an Estimate."""
    return Estimate(row["quadrature_minus_importance"], row["quadrature_minus_importance_se"],
                    row["n"])


def step_text(row: Mapping[str, Any]) -> str:
    """'0.004 nats per image on average (at most 0.03)': the step check's change."""
    return (f"{amount_text(row['step_change'])} nats per image on average (at most "
            f"{number(row['quadrature_change_by_size_max_abs'][-1], '.3g')})")


def reason_text(row: Mapping[str, Any]) -> str:
    """Why the row's headline estimate is the better one, from the checks."""
    difference = interval_text(difference_of(row), tolerance=AGREEMENT_NATS)
    tolerance = f"the {AGREEMENT_NATS:g}-nat tolerance"
    reason = row["estimate_reason"]
    if reason == "above":
        return (f"halving its local step moves $-\\log p(x)$ by {step_text(row)}, within "
                f"{tolerance}, and its $\\log p(x)$ lies clearly above importance sampling's "
                f"(its $-\\log p(x)$ below), by {difference} nats per image: the samples of "
                f"$q(z \\mid x)$ miss posterior mass that the grid finds, and importance "
                f"sampling, a lower bound in expectation, falls short")
    if reason == "agree":
        agreement = agreement_of(difference_of(row))
        together = ("they agree within " + tolerance if agreement == "within" else
                    "the interval is too wide to say whether they agree within " + tolerance)
        return (f"halving its local step moves $-\\log p(x)$ by {step_text(row)}, within "
                f"{tolerance}, and importance sampling is not clearly below or above it "
                f"({difference} nats per image; {together}); the step check bounds the "
                f"quadrature's error, while importance sampling's shortfall is bounded only "
                f"by how its estimate moves with K")
    if reason == "below":
        return (f"quadrature's $\\log p(x)$ lies clearly below it, by {difference} nats per "
                f"image, which an "
                f"exact integral cannot (the mean importance weight is an unbiased estimate of "
                f"$p(x)$): the grid misses mass, although halving its local step moves it by "
                f"only {step_text(row)}")
    if reason == "step":
        return (f"halving the quadrature's local step still moves it by {step_text(row)}, "
                f"beyond {tolerance}, so its grid is too coarse; quadrature minus importance "
                f"sampling is {difference} nats per image")
    return (f"the quadrature's step was not checked (one grid size); quadrature minus "
            f"importance sampling is {difference} nats per image")


def last_k_change(row: Mapping[str, Any]) -> Estimate | None:
    """Importance sampling's change of -log p(x) at its last K step (None: K was not swept)."""
    if not row["importance_change_by_size"]:
        return None
    return Estimate(row["importance_change_by_size"][-1],
                    row["importance_change_by_size_se"][-1], row["n"])


def k_state(agreement: str, direction: str) -> str:
    """Whether the last K step is within the tolerance (`agreement_of`), and if beyond it,
    which way the estimate still moves with K (`direction`: 'falling', 'rising')."""
    return {"within": f"within the {AGREEMENT_NATS:g}-nat tolerance: converged",
            "beyond": f"beyond the {AGREEMENT_NATS:g}-nat tolerance: still {direction} with K",
            "unclear": f"too uncertain to say whether it is within the {AGREEMENT_NATS:g}-nat "
                       f"tolerance"}[agreement]


def sweep_text(row: Mapping[str, Any]) -> str:
    """What importance sampling gives at each K, and whether its last step is converged."""
    sizes = row["importance_sizes"]
    values = ", ".join(number(value, ".2f") for value in row["importance_nll_by_size"])
    counts = joined([f"{size:,}" for size in sizes])
    if len(sizes) == 1:
        return (f"Importance sampling gives {values} nats at K = {counts}; its K was not "
                f"swept.")
    last = last_k_change(row)
    verdict = k_state(agreement_of(last), "falling" if last.value < 0 else "rising")
    return (f"Importance sampling gives {values} nats at K = {counts}; from K = "
            f"{sizes[-2]:,} to {sizes[-1]:,} its $-\\log p(x)$ changes by "
            f"{interval_text(last, tolerance=AGREEMENT_NATS)} nats ({verdict}).")


def sweeps_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """The K sweep of every weight: one sentence when every weight swept the same K and its
    last step got the same verdict (the values are in the checks table), else one per weight."""
    lasts = [last_k_change(row) for row in rows]
    verdicts = {(tuple(row["importance_sizes"]), None if last is None else agreement_of(last))
                for row, last in zip(rows, lasts)}
    if len(rows) == 1 or len(verdicts) > 1 or None in lasts:
        return " ".join(sweep_text(row) for row in rows)
    sizes = rows[0]["importance_sizes"]
    changes = listed([interval_text(last, tolerance=AGREEMENT_NATS) for last in lasts])
    state = k_state(agreement_of(lasts[0]),
                    "falling" if all(last.value < 0 for last in lasts) else "moving")
    return (f"From K = {sizes[-2]:,} to {sizes[-1]:,} the importance-sampling $-\\log p(x)$ "
            f"changes by {changes} nats for weights "
            f"{weights_text([row['kl_weight'] for row in rows])} ({state}; "
            f"{table('task2_likelihood_checks')} gives each K).")


def weight_sentences(row: Mapping[str, Any]) -> str:
    """One weight's verdict, the difference's median and tails, and its K sweep."""
    name = ESTIMATE_NAMES[row["estimate"]]
    headline = Estimate(-row["test_log_likelihood"], row["test_log_likelihood_se"], row["n"])
    return (f"At weight {row['kl_weight']:g}, **{name}** is the better estimate, "
            f"$-\\log p(x)$ = {interval_text(headline)} nats: {reason_text(row)}.")


def step_check_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """Whether and how the quadrature's local step was checked: by the run, by the experiment
    (on models within its tolerance of this run's), or not, with the experiment's refusal."""
    first, refused = rows[0], rows[0].get("step_check_refused")
    if refused is not None:
        return (f"its step was not checked: experiments/likelihood_checks.py checked it for "
                f"other models (at weight {refused['kl_weight']:g} their $-\\log p(x)$ is "
                f"{number(abs(refused['offset']), '.2f')} nats from this run's, beyond the "
                f"standard error of {number(refused['tolerance'], '.2f')}); run it again")
    if first["step_check_source"] is None:
        return "its step was not checked"
    sides = first["quadrature_sizes"]
    halving = f"halving the local step ({sides[-2]} against {sides[-1]} points per side) "
    if first["step_check_source"] == "computed":
        return halving + "checks it"
    largest = max(abs(row["step_check_offset"]) for row in rows)
    tolerance = min(row["step_check_tolerance"] for row in rows)
    return (halving + "was checked once on the same images by experiments/likelihood_checks.py"
            f", for models whose $-\\log p(x)$ at this grid differs from this run's by at most "
            f"{amount_text(largest, tolerance)} nats at every weight (less than its standard "
            f"error, {number(tolerance, '.2f')})")


def method_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """How the two estimates are made, on which images, and how the grid is checked."""
    first = rows[0]
    counts = joined([f"{size:,}" for size in first["importance_sizes"]])
    side = first["quadrature_points"]
    medians = sorted({number(row["local_step_median"], ".2g") for row in rows}, key=float)
    steps = (f"(local step: median {medians[0]}"
             + (f" to {medians[-1]} by weight" if len(medians) > 1 else "")
             + f", at most {number(max(r['local_step_max'] for r in rows), '.2g')})")
    check = step_check_text(rows)
    text = (
        f"**Likelihood.** $-\\log p(x)$ of the first {first['likelihood_images']:,} test images "
        f"is estimated two ways. Importance sampling draws K = {counts} samples of "
        f"$q(z \\mid x)$ per image (Burda et al.; the same draws, nested), a lower bound on "
        f"$\\log p(x)$ in expectation that rises towards it as K grows. Quadrature integrates "
        f"$p(x \\mid z)\\,p(z)$ over the 2-D latent space and needs no encoder: a coarse grid of "
        f"{first['coarse_points']}×{first['coarse_points']} points over "
        f"$[-{first['extent']:g}, {first['extent']:g}]^2$, decoded once per model, finds where "
        f"each image's integrand has its mass, a {side}×{side} grid over a window around its "
        f"maximum refines it {steps}, and the coarse grid adds what lies outside the window; "
        f"{check}.")
    if first["excluded"]:
        uncovered = ", ".join(f"{row['uncovered']} at weight {row['kl_weight']:g}"
                              for row in rows if row["uncovered"])
        text += (f" {first['excluded']} of the {first['likelihood_images']:,} images are left "
                 f"out of both estimates at every weight ({uncovered}): their integrand peaks on "
                 f"the edge of the coarse grid or of the window, where mass may lie beyond it; "
                 f"every number below is over the other {first['n']:,}.")
    else:
        text += " Every image is covered at every weight: nothing is left out."
    return text


def comparison_text(rows: Sequence[Mapping[str, Any]], spread: SeedSpread | None = None
                    ) -> str:
    """The weights compared by their headline -log p(x), and the variational gaps; a difference
    counts only beyond its interval and, where known, its spread over training seeds."""
    weights = [row["kl_weight"] for row in rows]
    best = min(rows, key=lambda row: row["nll_above_best"])  # 0 for the lowest
    above = {row["kl_weight"]: Estimate(row["nll_above_best"], row["nll_above_best_se"],
                                        row["n"]) for row in rows if row is not best}
    sds = {weight: (None if spread is None else spread.difference_sd(
        "likelihood", "nll", best["kl_weight"], weight)) for weight in above}
    signs = {weight: clear_sign(found, sds[weight]) for weight, found in above.items()}
    ties = [weight for weight in above if signs[weight] == 0]
    clear = [f"weight {weight:g} by {interval_text(found)}" for weight, found in above.items()
             if signs[weight] != 0]
    mixed = len({row["estimate"] for row in rows}) > 1
    chosen = "each weight's better estimate" if mixed else "the better estimate"
    text = (f"By {chosen}, "
            f"$-\\log p(x)$ is lowest at weight {best['kl_weight']:g}"
            + (f", not clearly below weight {weights_text(ties)}" if ties else "")
            + (f"; clearly above it are {', '.join(clear)} nats (paired over the same images)"
               if clear else "") + ".")
    if spread is not None:
        text += (f" Over {len(spread.seeds)} training seeds these differences (by importance "
                 f"sampling at K = 100, the experiment's estimate) vary by "
                 + listed([f"{number(sd, '.2g')} nats (weight {weight:g})"
                           for weight, sd in sds.items()])
                 + f" (standard deviation, {table('task2_seed_steps')}), and a difference "
                   f"counts only beyond that.")
    gaps = ", ".join(interval_text(Estimate(r["variational_gap"], r["variational_gap_se"],
                                            r["n"])) for r in rows)
    return (text + f" The variational gap, negative ELBO minus that $-\\log p(x)$, is {gaps} "
            f"nats for weights {weights_text(weights)}: what the ELBO gives away because "
            f"$q(z \\mid x)$ is not the true posterior.")


def likelihood_paragraph(rows: Sequence[Mapping[str, Any]], spread: SeedSpread | None = None
                         ) -> str:
    """The likelihood of the test digits: the two estimates, which one is better at each weight
    and why, the difference's median and tails, the K sweep and the step check, and the
    weights compared by the better estimate (beyond the spread over seeds, where known)."""
    if not rows:
        raise ValueError("rows: expected one row per KL weight, got none")
    return "\n\n".join([method_text(rows), " ".join(weight_sentences(row) for row in rows),
                        f"{tail_text(rows)} {sweeps_text(rows)}", comparison_text(rows, spread)])


def likelihood_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """-log p(x) per VAE on the same images: the better estimate, both estimates, and the
    variational gap."""
    def pair(row: Mapping[str, Any], name: str, sign: float = 1.0) -> str:
        return interval_text(Estimate(sign * row[name], row[f"{name}_se"], row["n"]))

    estimates = [{
        "kl_weight": row["kl_weight"],
        "images": f"{row['n']:,}" + (f" of {row['likelihood_images']:,}" if row["excluded"]
                                     else ""),
        "importance": pair(row, "importance_nll"), "quadrature": pair(row, "quadrature_nll"),
        "estimate": ESTIMATE_NAMES[row["estimate"]],
        "elbo": number(row["neg_elbo_importance"], ".2f"),
        "gap": pair(row, "variational_gap")} for row in rows]
    return markdown_table(estimates, {
        "kl_weight": "KL weight|g", "images": "Images", "importance": "Importance sampling",
        "quadrature": "Quadrature", "estimate": "Better", "elbo": "Negative ELBO",
        "gap": "Variational gap"})


def likelihood_checks_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The checks of the two estimates per VAE: quadrature minus importance sampling per image
    (mean, median, tails), the K sweep and the step check."""
    sizes = joined([f"{size:,}" for size in rows[0]["importance_sizes"]])
    checks = [{
        "kl_weight": row["kl_weight"],
        "difference": interval_text(difference_of(row), tolerance=AGREEMENT_NATS),
        "median": number(row["quadrature_minus_importance_median"], ".3g"),
        "percentiles": (f"{number(row['quadrature_minus_importance_p01'], '.3g')} / "
                        f"{number(row['quadrature_minus_importance_p99'], '.3g')}"),
        "extremes": (f"{number(row['quadrature_minus_importance_min'], '.3g')} / "
                     f"{number(row['quadrature_minus_importance_max'], '.3g')}"),
        "sweep": joined([number(value, ".2f") for value in row["importance_nll_by_size"]]),
        "last_k": (None if last_k_change(row) is None else
                   interval_text(last_k_change(row), tolerance=AGREEMENT_NATS)),
        "step": (f"{amount_text(row['step_change'])} / "
                 f"{number(row['quadrature_change_by_size_max_abs'][-1], '.3g')}"
                 if row["step_change"] is not None else None)} for row in rows]
    return markdown_table(checks, {
        "kl_weight": "KL weight|g",
        "difference": "$\\log p(x)$, quadrature minus importance sampling: mean",
        "median": "median", "percentiles": "1st / 99th percentile", "extremes": "min / max",
        "sweep": f"$-\\log p(x)$ by importance sampling at K = {sizes}",
        "last_k": "its change at the last K step",
        "step": "Quadrature with its local step halved: mean / largest change"},
        transpose=True)

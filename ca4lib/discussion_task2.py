"""The discussion of Task 2, written from the analyses' rows (notebook: *Discussion of Task 2*).

Each paragraph builder takes the rows and returns Markdown; a sentence that compares numbers
states a difference only when its 95 % interval (Estimate.sign) excludes zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ca4lib.estimates import Estimate, change_of, estimate_of, number, trend
from ca4lib.likelihood import AGREEMENT_NATS
from ca4lib.measures import CONFIDENCE
from ca4lib.vae_analyses import ACTIVE_VARIANCE
from ca4lib.wording import joined, listed, percent, plural, verdict, weights_text


def losses_paragraph(rows: Sequence[Mapping[str, Any]], floor: float) -> str:
    """The sweep's loss terms, the trade-off (with uncertainty), the best negative ELBO and
    the floor set by grey pixels, read off the rate-distortion plane."""
    weights = [row["kl_weight"] for row in rows]
    table = "; ".join(
        f"{label} {joined([estimate_of(r, name).text(spec) for r in rows], '', ', ')}"
        for label, name, spec in (("reconstruction", "reconstruction", ".1f"),
                                  ("KL", "kl", ".2f"), ("negative ELBO", "neg_elbo", ".1f")))
    rising, falling = trend(rows, "reconstruction"), trend(rows, "kl")
    if rising > 0 and falling < 0:
        trade_off = (
            "The weight sets a clear trade-off: every larger weight buys a lower KL (rate) with "
            "a higher reconstruction loss (distortion). A weight $\\beta$ minimises distortion "
            "+ $\\beta$ × rate, so each model sits where the rate-distortion curve's slope is "
            "$-\\beta$ (Alemi et al.): a small weight spends many nats on precise, far-apart "
            "codes, a large one pulls the posteriors towards the prior.")
    else:
        rises = "rises clearly" if rising > 0 else "does not rise clearly at every step"
        falls = "falls clearly" if falling < 0 else "does not fall clearly at every step"
        trade_off = (f"The reconstruction loss {rises} with the weight and the KL {falls}, so "
                     f"the expected trade-off shows only in part here.")
    best = min(rows, key=lambda row: row["neg_elbo"])
    ties = [row["kl_weight"] for row in rows if row is not best and Estimate(
        row["neg_elbo_above_best"], row["neg_elbo_above_best_se"], row["n"]).sign == 0]
    elbo = (f"lowest at weight **{best['kl_weight']:g}** "
            f"({estimate_of(best, 'neg_elbo').text('.1f')})")
    if ties:
        elbo += f", not clearly below weight {weights_text(ties)}"
    if best["kl_weight"] == 1.0:
        elbo += ", the one setting whose objective is the ELBO itself"
    elif 1.0 in ties:
        elbo += "; weight 1, whose objective is the ELBO itself, is within the uncertainty"
    elif 1.0 in weights:
        elbo += ("; weight 1 is the setting that maximises the ELBO directly, so a lower value "
                 "elsewhere shows that its optimisation stopped short of its own optimum")
    return (
        f"**Losses.** After {plural(rows[0]['epochs'], 'epoch')}, the test-set terms per image "
        f"(mean ± SE over {rows[0]['n']:,} images, one sample of $z$ each) for weights "
        f"{weights_text(weights)} are: {table}. {trade_off} The weighted losses measure "
        f"different objectives and cannot be compared across weights; the negative ELBO "
        f"can (the dashed lines of the figure join equal values), and it is {elbo}. No model "
        f"can go below {floor:.1f} nats per image: that is the reconstruction term of an exact "
        f"copy, because grey pixels are neither 0 nor 1.")


def likelihood_paragraph(rows: Sequence[Mapping[str, Any]], samples: int) -> str:
    """-log p(x) per weight by importance sampling, its check by quadrature, and the gap."""
    weights = [row["kl_weight"] for row in rows]
    nll = ", ".join(Estimate(-r["test_log_likelihood"], r["test_log_likelihood_se"], 2).text(".1f")
                    for r in rows)
    gaps = ", ".join(Estimate(r["variational_gap"], r["variational_gap_se"], 2).text(".2f")
                     for r in rows)
    best = min(rows, key=lambda row: -row["test_log_likelihood"])
    ties = [row["kl_weight"] for row in rows if row is not best and Estimate(
        row["nll_above_best"], row["nll_above_best_se"], row["likelihood_images"]).sign == 0]
    text = (
        f"**Likelihood.** An importance-weighted estimate with K = {samples:,} samples of "
        f"$q(z \\mid x)$ per image (Burda et al.) puts $-\\log p(x)$ on the first "
        f"{rows[0]['likelihood_images']:,} test images at {nll} nats for weights "
        f"{weights_text(weights)}: lowest at weight {best['kl_weight']:g}"
        + (f", not clearly below weight {weights_text(ties)}" if ties else "")
        + f". The variational gap, negative ELBO minus $-\\log p(x)$ on the same samples, is "
        f"{gaps} nats: how much the ELBO understates the likelihood because $q(z \\mid x)$ "
        f"is not the true posterior.")
    agreed, higher, lower, unclear, unresolved = [], [], [], [], []
    for row in rows:
        if "quadrature_log_likelihood" not in row:
            unresolved.append(number(row["kl_weight"], "g"))
            continue
        difference = Estimate(row["quadrature_minus_importance"],
                              row["quadrature_minus_importance_se"], row["likelihood_images"])
        found = (f"{difference.text('.2f')} nats at weight {row['kl_weight']:g} "
                 f"({percent(row['resolved_share'], 0)} of the images resolved)")
        {"within": agreed, "unclear": unclear}.get(
            row["agreement"], higher if difference.value > 0 else lower).append(found)
    step = min(row["quadrature_step"] for row in rows)
    text += (f" Quadrature over a grid of the 2-D latent space (step {step:.3f}) checks it; "
             f"quadrature minus importance sampling is ")
    parts = []
    if agreed:
        parts.append(f"{', '.join(agreed)}: within the {AGREEMENT_NATS:g}-nat tolerance")
    if higher:
        parts.append(
            f"{', '.join(higher)}: beyond the {AGREEMENT_NATS:g}-nat tolerance, so there the "
            f"importance samples, drawn around the encoder's guess $q(z \\mid x)$, miss "
            f"posterior mass that the grid finds: quadrature is the better estimate there, "
            f"and the variational gap is larger than above by as much")
    if unclear:
        parts.append(f"{', '.join(unclear)}: too uncertain to say whether it is within the "
                     f"{AGREEMENT_NATS:g}-nat tolerance")
    if lower:
        parts.append(f"{', '.join(lower)}: below importance sampling, which bounds "
                     f"$\\log p(x)$ from below, so there the grid misses probability mass")
    if unresolved:
        parts.append(f"not available at weight {', '.join(unresolved)}, whose posteriors "
                     f"the grid does not resolve")
    return text + "; ".join(parts) + "."


def collapse_paragraph(rows: Sequence[Mapping[str, Any]]) -> str:
    """Active and inactive latent dimensions per weight (Burda et al.'s definition)."""
    sentences = []
    for row in rows:
        dimensions = len(row["mean_variance"])
        inactive = [d for d, v in enumerate(row["mean_variance"]) if v <= ACTIVE_VARIANCE]
        if not inactive:
            continue
        details = ", ".join(
            f"z[{d}]: Var$_x(\\mu)$ = {number(row['mean_variance'][d], '.2g')}, KL "
            f"{number(row['kl_per_dimension'][d], '.2g')} nats, prior-like posterior for "
            f"{percent(row['prior_like_share'][d], 0)} of the images" for d in inactive)
        if len(inactive) == dimensions:
            sentences.append(
                f"At weight {row['kl_weight']:g} **no dimension is active** ({details}): the "
                f"encoder's means hardly move with the image, so the decoder receives "
                f"(nearly) the same code for every input. This is posterior collapse of the "
                f"whole code: the KL price of any information exceeds what it buys in "
                f"reconstruction.")
        else:
            active = dimensions - len(inactive)
            names = " and ".join(f"z[{d}]" for d in inactive)
            sentences.append(
                f"At weight {row['kl_weight']:g}, {names} "
                f"{'is' if len(inactive) == 1 else 'are'} inactive ({details}), so the model "
                f"is effectively {active}-dimensional: the KL price of using the dimension "
                f"(weight × its KL) exceeds what it buys in reconstruction, and the optimum "
                f"switches it off (posterior collapse).")
    if not sentences:
        return (f"**Collapsed dimensions.** Every dimension of every model is active "
                f"(Var$_x(\\mu_d)$ > {ACTIVE_VARIANCE:g}, the definition of Burda et al.).")
    return "**Collapsed dimensions.** " + " ".join(sentences)


def vae_reconstruction_paragraph(rows: Sequence[Mapping[str, Any]]) -> str:
    """Reconstructions from sampled codes and from the mean code, and the digits the
    classifier recognises in the mean reconstructions, per weight."""
    weights = weights_text([row["kl_weight"] for row in rows])
    sampled = joined([estimate_of(r, "reconstruction").text(".1f") for r in rows], "", ", ")
    at_mean = joined([estimate_of(r, "mean_code_reconstruction").text(".1f") for r in rows],
                     "", ", ")
    direction = {1: "rises clearly with the weight", -1: "falls clearly with the weight",
                 0: "does not change clearly at every step of the weight"}
    text = (f"**Reconstructions.** The reconstruction term of a sampled code is {sampled} "
            f"nats and that of the mean code {at_mean} nats for weights {weights}; the "
            f"latter {direction[trend(rows, 'mean_code_reconstruction')]}.")
    bottleneck = " A 2-D code is a severe bottleneck at every weight"
    if "recognised" not in rows[0]:
        return text + bottleneck + " (see the figure)."
    misread = [1 - r["recognised"] for r in rows]
    return text + (f" The classifier recognises the original digit in "
                   f"{joined([percent(r['recognised']) for r in rows], '', ' / ')} of the mean "
                   f"reconstructions; that share {direction[trend(rows, 'recognised')]}."
                   f"{bottleneck}: {percent(min(misread))} to {percent(max(misread))} of the "
                   f"mean reconstructions come back as another digit (see the figure).")


def continuity_paragraph(space_rows: Sequence[Mapping[str, Any]],
                         interpolation: Sequence[Mapping[str, Any]],
                         grid_extent: float) -> str:
    """Coverage of posterior samples against the prior's, grid smoothness, kNN, and straight
    paths between test digits against the deterministic baseline."""
    prior, models = space_rows[0], space_rows[1:]
    region = f"$[-{grid_extent:g}, {grid_extent:g}]^2$"
    coverage = []
    for row in models:
        gap = estimate_of(row, "coverage") - estimate_of(prior, "coverage")
        coverage.append(f"{percent(row['coverage'], 0)} at weight {row['kl_weight']:g} ("
                        + ("as the prior" if gap.sign == 0 else
                           f"{'below' if gap.sign < 0 else 'above'} the prior's by "
                           f"{percent(abs(gap.value), 0)}") + ")")
    smoothest = min(models, key=lambda row: row["own_neighbour_change"])
    ties = [row["kl_weight"] for row in models if row is not smoothest and (
        estimate_of(row, "own_neighbour_change")
        - estimate_of(smoothest, "own_neighbour_change")).sign == 0]
    clustered = max(models, key=lambda row: row["knn"])
    knn_ties = [row["kl_weight"] for row in models if row is not clustered and (
        estimate_of(clustered, "knn") - estimate_of(row, "knn")).sign == 0]
    changes = ", ".join(estimate_of(r, "own_neighbour_change").text(".3f") for r in models)
    text = (
        f"**Continuity of the latent space.** Samples $z \\sim q(z \\mid x)$ of the test "
        f"images reach {', '.join(coverage)} of the grid's cells over {region}, against "
        f"{percent(prior['coverage'], 0)} for as many samples of the prior. Between "
        f"neighbouring tiles of each model's grid over its own codes (1st to 99th percentile) "
        f"the mean pixel change is {changes}: "
        f"smoothest at weight {smoothest['kl_weight']:g}"
        + (f", not clearly smoother than at {weights_text(ties)}" if ties else "")
        + (" (partly because its grid repeats along an inactive dimension)"
           if "active_dimensions" in smoothest
           and smoothest["active_dimensions"] < len(smoothest["z_std"]) else "")
        + f". The kNN accuracy of the mean codes is "
        f"{joined([percent(r['knn']) for r in models], '', ' / ')}: best at weight "
        f"{clustered['kl_weight']:g}"
        + (f", not clearly better than {weights_text(knn_ties)}" if knn_ties else "") + ".")
    baseline, *others = interpolation
    for row in others:
        smooth = Estimate(row["smoothness_change"], row["smoothness_change_se"], row["n"])
        unclear = Estimate(row["unclear_change"], row["unclear_change_se"], row["n"])
        text += (
            f" Along straight paths between {row['n']} random pairs of test digits, decoded "
            f"at {row['frames']} points, the largest step takes "
            f"{estimate_of(row, 'smoothness').text('.3f')} of a path's total change for the "
            f"{row['model']} against {estimate_of(baseline, 'smoothness').text('.3f')} for "
            f"the {baseline['model']} (an even path scores {1 / (row['frames'] - 1):.3f}): "
            f"{verdict(smooth, 'smoother', 'jumpier', '.3f')}; "
            f"{percent(row['unclear'], 0)} against {percent(baseline['unclear'], 0)} of the "
            f"interior frames are read as neither end digit with confidence: "
            f"{verdict(unclear, 'fewer', 'more', '.2f')}.")
    return text


def generation_paragraph(rows: Sequence[Mapping[str, Any]]) -> str:
    """Samples of each generator judged by the classifier, relative to real test images."""
    reference, *generators = rows

    def against(row: Mapping[str, Any], name: str, smaller: str, larger: str) -> str:
        gap = estimate_of(row, name) - estimate_of(reference, name)
        return {-1: smaller, 1: larger, 0: "as the real images"}[gap.sign]

    parts = [f"{row['model']}: {percent(row['confident_share'], 0)} confident "
             f"({against(row, 'confident_share', 'fewer', 'more')}), digit entropy "
             f"{number(row['digit_entropy'], '.2f')} "
             f"({against(row, 'digit_entropy', 'less even', 'more even')}), least digit "
             f"{percent(row['least_digit_share'])}" for row in generators]
    best = max(generators, key=lambda row: row["confident_share"])
    ties = [row["model"] for row in generators if row is not best and (
        estimate_of(best, "confident_share") - estimate_of(row, "confident_share")).sign == 0]
    more_even = [row for row in generators if (
        estimate_of(row, "digit_entropy") - estimate_of(best, "digit_entropy")).sign > 0]
    narrow = (f"; but its digits are less evenly spread than those of "
              f"{listed([row['model'] for row in more_even])} (digit entropy "
              f"{number(best['digit_entropy'], '.2f')} against "
              f"{joined([number(row['digit_entropy'], '.2f') for row in more_even], '', ', ')}): "
              f"a generator that draws a few easy digits is read with confidence more often"
              if more_even else "")
    return (
        f"**Generation.** The classifier reads {percent(reference['confident_share'])} of the "
        f"real test images with confidence (probability at least {CONFIDENCE:g}), with digit "
        f"entropy {number(reference['digit_entropy'], '.3f')} and the least frequent digit at "
        f"{percent(reference['least_digit_share'])}: MNIST is not uniform, so these, not 100% "
        f"and 1, are what a perfect generator would score. Against them ("
        f"{'; '.join(parts)}). " + (
            "No generator's samples are clearly more recognisable than the others'."
            if len(ties) == len(generators) - 1 else
            f"The most recognisable samples come from the {best['model']}"
            + (f", not clearly ahead of {' and '.join(ties)}" if ties else "") + narrow + "."))


def expectations_paragraph(sweep: Sequence[Mapping[str, Any]],
                           space_rows: Sequence[Mapping[str, Any]],
                           generation: Sequence[Mapping[str, Any]]) -> str:
    """The assignment's second question: were the effects of the weight those the beta-VAE
    view predicts, and why or why not."""
    models = space_rows[1:]
    checks = []
    rising, falling = trend(sweep, "reconstruction"), trend(sweep, "kl")
    weights = weights_text([row["kl_weight"] for row in sweep])
    terms = (f" (reconstruction {joined([row['reconstruction'] for row in sweep], '.1f')} "
             f"and KL {joined([row['kl'] for row in sweep], '.1f')} nats for weights {weights})")
    checks.append(("a larger weight trades reconstruction for a smaller KL",
                   rising > 0 and falling < 0,
                   ("every step of the weight raised the reconstruction loss and lowered the KL"
                    if rising > 0 and falling < 0 else
                    "not every step moved both terms clearly") + terms))
    best = min(sweep, key=lambda row: row["neg_elbo"])
    tied_one = any(row["kl_weight"] == 1.0 and Estimate(
        row["neg_elbo_above_best"], row["neg_elbo_above_best_se"], row["n"]).sign == 0
        for row in sweep)
    checks.append(("weight 1, whose objective is the ELBO, reaches the best ELBO",
                   best["kl_weight"] == 1.0 or tied_one,
                   f"the lowest negative ELBO is at weight {best['kl_weight']:g} "
                   f"({estimate_of(best, 'neg_elbo').text('.1f')} nats)"))
    closer = all(change_of(row, "prior_mismatch").sign < 0 for row in sweep[1:])
    checks.append(("a larger weight brings the aggregate posterior closer to the prior",
                   closer, "the summed distance of Var(z_d) from the prior's 1 is "
                   f"{joined([estimate_of(r, 'prior_mismatch').text('.2f') for r in sweep], '', ', ')}"
                   f" for weights {weights}"))
    smoother = all((estimate_of(b, "own_neighbour_change")
                    - estimate_of(a, "own_neighbour_change")).sign < 0
                   for a, b in zip(models, models[1:]))
    changes = joined([estimate_of(row, "own_neighbour_change").text(".3f") for row in models],
                     "", ", ")
    checks.append(("a larger weight makes the decoded space smoother", smoother,
                   ("the mean change between neighbouring tiles fell clearly at every step"
                    if smoother else "it did not fall clearly at every step")
                   + f" ({changes} per pixel)"))
    by_weight = {row.get("kl_weight"): row for row in generation}
    confident = [by_weight[row["kl_weight"]] for row in sweep]
    better_samples = all((estimate_of(b, "confident_share")
                          - estimate_of(a, "confident_share")).sign >= 0
                         for a, b in zip(confident, confident[1:])) and (
        estimate_of(confident[-1], "confident_share")
        - estimate_of(confident[0], "confident_share")).sign > 0
    checks.append(("samples from the prior become more recognisable as the weight grows",
                   better_samples,
                   f"{joined([percent(r['confident_share'], 0) for r in confident], '', ' / ')}"
                   " of them are read with confidence"))
    collapsed = [row["kl_weight"] for row in sweep
                 if row["active_dimensions"] < len(row["mean_variance"])]
    checks.append(("the largest weight switches a dimension off (posterior collapse)",
                   bool(collapsed) and max(collapsed) == max(r["kl_weight"] for r in sweep),
                   f"inactive dimensions at weight {weights_text(collapsed)}" if collapsed
                   else "every dimension stayed active at every weight"))
    lines = [f"- *{claim}*: {'**consistent**' if held else '**not borne out**'}; {what}."
             for claim, held, what in checks]
    held = sum(held for _, held, _ in checks)
    return (
        "**Were the effects as expected?** The weight multiplies the KL term, the price of "
        "information in the code (Higgins et al.): a larger weight should buy a posterior "
        "closer to the prior with worse reconstructions, a smoother space that the prior "
        "covers and better samples, and too large a weight should switch dimensions off. "
        f"Measured against each expectation ({held} of {len(checks)} consistent):\n\n"
        + "\n".join(lines) + "\n\n"
        f"The beta-VAE view describes each objective's optimum; these models are what "
        f"{plural(sweep[0]['epochs'], 'epoch')} of Adam reached, and a difference between "
        f"weights counts only where its 95% interval excludes zero. These intervals are over "
        f"the test images, for one trained model per weight; they leave out the spread "
        f"between training runs, which Q1's seeds show can be larger.")


def task2_discussion(sweep: Sequence[Mapping[str, Any]], floor: float,
                     likelihood: Sequence[Mapping[str, Any]], samples: int,
                     space: Sequence[Mapping[str, Any]],
                     interpolation: Sequence[Mapping[str, Any]],
                     generation: Sequence[Mapping[str, Any]], grid_extent: float) -> str:
    """The discussion of Task 2, paragraph by paragraph, from the analyses' rows."""
    return "\n\n".join([
        losses_paragraph(sweep, floor), likelihood_paragraph(likelihood, samples),
        collapse_paragraph(sweep), vae_reconstruction_paragraph(sweep),
        continuity_paragraph(space, interpolation, grid_extent),
        generation_paragraph(generation), expectations_paragraph(sweep, space, generation)])

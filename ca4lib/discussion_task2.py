"""The answers of Task 2, written from the analyses' rows (notebook: *Task 2 > Discussion*).

Question 1, what the KL weight does, is answered in three parts (the losses, the
reconstructions, the continuity of the latent space), then against the deterministic
baseline; question 2, whether that was expected, item by item. Each part opens with a plain
answer and cites its figures and tables by number. A difference between two weights is called
clear only when its 95 % interval over the test images excludes zero and, where the spread
over training seeds is known (ca4lib.seed_spread), it is also larger than that spread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ca4lib.estimates import Estimate, change_of, estimate_of, number
from ca4lib.measures import CONFIDENCE
from ca4lib.numbering import figure, table
from ca4lib.seed_spread import SeedSpread, clear_sign, step_signs
from ca4lib.wording import listed, percent, plural, steps_text, weights_text


def seed_note(spread: SeedSpread | None, steps: Mapping[str, list[float]],
              shares: Sequence[str] = ()) -> str:
    """What the seed spread of the steps named in `steps` is (those in `shares` as
    percentages), or that none is known."""
    if spread is None:
        return ("no spread over training seeds is known for this profile, so each step rests "
                "on the test images' interval alone")
    parts = [f"{name} {listed([percent(sd) if name in shares else number(sd, '.2g') for sd in sds])}"
             for name, sds in steps.items()]
    return (f"the standard deviation of each step over {len(spread.seeds)} training seeds is "
            f"{'; '.join(parts)} ({table('task2_seed_steps')}), and a step counts only beyond "
            f"it")


def step_sds(spread: SeedSpread | None, rows: Sequence[Mapping[str, Any]], metric: str,
             section: str = "sweep") -> list[float]:
    """The seed spread of each step between neighbouring weights (empty without a spread)."""
    if spread is None or not spread.has(section, metric):
        return []
    return [spread.difference_sd(section, metric, a["kl_weight"], b["kl_weight"])
            for a, b in zip(rows, rows[1:])]


def clear_steps(changes: Sequence[Estimate], sds: Sequence[float]) -> list[int]:
    """The clear sign of each step (`clear_sign`), beyond its seed spread where `sds` gives
    one per step (an empty `sds`: no spread is known)."""
    return [clear_sign(change, sds[index] if index < len(sds) else None)
            for index, change in enumerate(changes)]


def inactive_dimensions(row: Mapping[str, Any]) -> int:
    """How many of a sweep row's latent dimensions are inactive (Var_x(mu_d) <= 0.01)."""
    return len(row["mean_variance"]) - row["active_dimensions"]


def weight_answer(sweep: Sequence[Mapping[str, Any]], space: Sequence[Mapping[str, Any]],
                  spread: SeedSpread | None) -> str:
    """Question 1 in one sentence: what each step of the weight did to the KL term, the
    reconstruction term, the recognised mean reconstructions, the latent space's smoothness
    (along active dimensions) and the active dimensions (each step counted only where clear,
    as in the paragraphs that follow with the numbers)."""
    weights = [row["kl_weight"] for row in sweep]
    parts = [f"the KL term {steps_text(weights, step_signs(sweep, 'kl', spread))}",
             f"the reconstruction term "
             f"{steps_text(weights, step_signs(sweep, 'reconstruction', spread))}"]
    if "recognised" in sweep[0]:
        parts.append(f"the share of mean reconstructions read as their digit "
                     f"{steps_text(weights, step_signs(sweep, 'recognised', spread))}")
    measured = [row for row in space[1:] if row["active_dimensions"] > 0]
    if len(measured) > 1:
        rough = smoothness_steps(measured, spread)
        parts.append(f"the change between neighbouring decoded tiles along active dimensions "
                     f"(how rough the latent space is) "
                     f"{steps_text([row['kl_weight'] for row in measured], rough)}")
    collapsed = [f"{inactive_dimensions(row)} of {len(row['mean_variance'])} latent dimensions "
                 f"switched off at weight {row['kl_weight']:g}" for row in sweep
                 if inactive_dimensions(row)]
    parts.append(listed(collapsed) if collapsed else "every latent dimension stayed active")
    return (f"**Q1: What does the KL weight do?** Across weights {weights_text(weights)}, "
            f"{listed(parts)}. The paragraphs below give the numbers and what each change "
            f"means.")


def losses_answer(sweep: Sequence[Mapping[str, Any]], objectives: Sequence[Mapping[str, Any]],
                  spread: SeedSpread | None) -> str:
    """What the weight does to the two loss terms, where the negative ELBO is lowest, and
    whether each model is at the optimum of its own objective."""
    weights = [row["kl_weight"] for row in sweep]
    reconstruction = step_signs(sweep, "reconstruction", spread)
    kl = step_signs(sweep, "kl", spread)
    answer = {"consistent": "A larger KL weight trades reconstruction for a smaller KL",
              "partly": "A larger KL weight trades reconstruction for a smaller KL where the "
                        "steps are clear, and no clear step goes the other way",
              "against": "The KL weight does not trade reconstruction for KL at every step"}[
        combined_status(status_of(reconstruction, 1), status_of(kl, -1))]
    note = seed_note(spread, {"reconstruction": step_sds(spread, sweep, "reconstruction"),
                              "KL": step_sds(spread, sweep, "kl")})
    text = (f"**The losses.** {answer}: across weights {listed([number(w, 'g') for w in weights])}, "
            f"the reconstruction term {steps_text(weights, reconstruction)} and the KL term "
            f"{steps_text(weights, kl)} ({table('task2_sweep')}, {figure('task2_loss')}); "
            f"{note}.")
    best = min(sweep, key=lambda row: row["neg_elbo"])
    ties = [row["kl_weight"] for row in sweep if row is not best and clear_sign(
        Estimate(row["neg_elbo_above_best"], row["neg_elbo_above_best_se"], row["n"]),
        None if spread is None else spread.difference_sd(
            "sweep", "neg_elbo", best["kl_weight"], row["kl_weight"])) == 0]
    text += (f" The weighted losses are different objectives; the negative ELBO, their "
             f"common scale, is lowest at weight {best['kl_weight']:g}"
             + (f", not clearly below weight {weights_text(ties)}" if ties else "") + ".")
    beaten = [row for row in objectives if "own_minus_rival" in row and Estimate(
        row["own_minus_rival"], row["own_minus_rival_se"], row["n"]).sign > 0]
    if not beaten:
        return text + (f" Each model scores best on the objective it was trained for "
                       f"({table('task2_objectives')}).")
    for index, row in enumerate(beaten):
        text += (
            f" {'But' if index == 0 else 'Likewise,'} on its own objective, reconstruction + "
            f"{row['objective']:g} × KL, the "
            f"weight-{row['objective']:g} model scores "
            f"{estimate_of(row, 'own').text('.1f')} nats and the weight-{row['rival']:g} model "
            f"{estimate_of(row, 'rival_score').text('.1f')} ({table('task2_objectives')}): "
            f"another model does better on the objective the weight-{row['objective']:g} "
            f"model was trained for, so its {plural(sweep[0]['epochs'], 'epoch')} of Adam did "
            f"not bring that model to its objective's optimum, and what it became "
            f"({table('task2_dimensions')}) is not shown to be what the objective demands.")
    return text


def reconstructions_answer(sweep: Sequence[Mapping[str, Any]], spread: SeedSpread | None
                           ) -> str:
    """The mean reconstructions per weight: their reconstruction term and the digits the
    classifier recognises in them, step by step."""
    weights = [row["kl_weight"] for row in sweep]
    at_mean = step_signs(sweep, "mean_code_reconstruction", spread)
    recognised = step_signs(sweep, "recognised", spread) if "recognised" in sweep[0] else []
    answer = {"consistent": "Reconstructions get worse as the weight grows",
              "partly": "Reconstructions get worse as the weight grows where the steps are "
                        "clear, and no clear step makes them better",
              "against": "Reconstructions do not get worse at every step of the weight"}[
        status_of(at_mean, 1)]
    text = (f"**The reconstructions.** {answer}: the reconstruction term of the mean code "
            f"$z = \\mu$ {steps_text(weights, at_mean)} ({table('task2_sweep')}, "
            f"{figure('task2_reconstructions')})")
    if not recognised:
        return text + "."
    shares = listed([percent(row["recognised"]) for row in sweep])
    misread = [1 - row["recognised"] for row in sweep]
    note = seed_note(spread, {"recognised": step_sds(spread, sweep, "recognised")},
                     shares=("recognised",))
    return text + (
        f". The digit classifier recognises the original digit in {shares} of the mean "
        f"reconstructions for weights {weights_text(weights)}: that share "
        f"{steps_text(weights, recognised)} ({note}). Even at best, a 2-D code is a severe "
        f"bottleneck: {percent(min(misread))} of the mean reconstructions come back as "
        f"another digit, up to {percent(max(misread))}.")


def smoothness_changes(measured: Sequence[Mapping[str, Any]]) -> list[Estimate]:
    """Each step's change of the neighbour change along active dimensions between neighbouring
    models (all with an active dimension): positive is rougher."""
    return [estimate_of(b, "own_active_neighbour_change")
            - estimate_of(a, "own_active_neighbour_change") for a, b in zip(measured, measured[1:])]


def smoothness_sds(measured: Sequence[Mapping[str, Any]], spread: SeedSpread | None
                   ) -> list[float]:
    """The seed spread of each of those steps (empty without a spread)."""
    return step_sds(spread, measured, "own_active_neighbour_change", "latent_space")


def smoothness_steps(measured: Sequence[Mapping[str, Any]], spread: SeedSpread | None
                     ) -> list[int]:
    """The clear sign of each of those steps: +1 rougher, -1 smoother, 0 unclear."""
    return clear_steps(smoothness_changes(measured), smoothness_sds(measured, spread))


def continuity_answer(space: Sequence[Mapping[str, Any]], spread: SeedSpread | None) -> str:
    """Active dimensions, coverage and smoothness of each latent space, measured along its
    active dimensions only (an ignored dimension holds prior noise and repeats the grid)."""
    models = list(space[1:])
    weights = [row["kl_weight"] for row in models]
    collapsed = [row for row in models if row["active_dimensions"] < len(row["z_std"])]
    sentences = []
    for row in collapsed:
        if row["active_dimensions"] == 0:
            sentences.append(f"At weight {row['kl_weight']:g} no dimension is active: the "
                             f"mean codes hardly move with the image.")
        else:
            active = listed([f"z[{d}]" for d in row["active"]])
            sentences.append(f"At weight {row['kl_weight']:g} only {active} is active: the "
                             f"mean codes of {figure('task2_latent_means')} lie on a line "
                             f"and the decoded grid repeats along the other dimension.")
    measured = [row for row in models if row["active_dimensions"] > 0]
    coverage = []
    for row in measured:
        gap = (Estimate(row["active_coverage"], row["active_coverage_se"], row["n"])
               - Estimate(row["prior_active_coverage"], row["prior_active_coverage_se"],
                          row["n"]))
        coverage.append(
            f"{percent(row['active_coverage'], 0)} at weight {row['kl_weight']:g} "
            + ("(as the prior)" if gap.sign == 0 else
               f"({'below' if gap.sign < 0 else 'above'} the prior's "
               f"{percent(row['prior_active_coverage'], 0)})"))
    steps = smoothness_steps(measured, spread)
    rougher = [f"from {a['kl_weight']:g} to {b['kl_weight']:g}"
               for a, b, sign in zip(measured, measured[1:], steps) if sign > 0]
    answer = {"consistent": "A larger weight gives a smoother latent space",
              "partly": "A larger weight gives a smoother latent space where the steps are "
                        "clear, and no clear step makes it rougher",
              "against": (f"A larger weight does not make the latent space smoother; it gets "
                          f"rougher {listed(rougher)}" if rougher else
                          "The weight does not clearly change how smooth the latent space is")}[
        status_of(steps, -1)]
    change_text = (f"the mean pixel change between neighbouring tiles of each model's grid "
                   f"over its own codes {steps_text([row['kl_weight'] for row in measured], steps)}"
                   if len(measured) > 1 else "")
    sds = smoothness_sds(measured, spread)
    if len(measured) > 1:
        change_text += f" ({seed_note(spread, {'neighbour change': sds})})"
    text = (f"**Continuity of the latent space.** {answer}: measured along the active "
            f"dimensions only ({table('task2_latent_space')}), {change_text}"
            + f". Samples $z \\sim q(z \\mid x)$ of the test images reach "
            f"{listed(coverage)} of the grid's cells along those dimensions "
            f"({figure('task2_grid_prior_region')} decodes that grid). ")
    text += " ".join(sentences)
    ignored = listed([number(row["kl_weight"], "g") for row in collapsed])
    return text.rstrip() + (f" A dimension the encoder ignores holds the prior's noise: "
                            f"counted, it would look covered and smooth at weight {ignored}."
                            if collapsed else "") + (
        "" if weights == [row["kl_weight"] for row in measured] else
        " A model without an active dimension has no such measures.")


def baseline_reconstruction_text(baseline: Mapping[str, Any],
                                 sweep: Sequence[Mapping[str, Any]],
                                 changes: Sequence[Mapping[str, Any]],
                                 spread: SeedSpread | None = None) -> str:
    """The baseline's reconstruction term against the best VAE's, by their paired difference
    over the test images (`vae_analyses.baseline_changes`), counted only beyond the VAE's
    spread over training seeds where known: best, no clear difference, or worse."""
    best = min(sweep, key=lambda row: row["reconstruction"])
    change = change_of(next(row for row in changes if row["kl_weight"] == best["kl_weight"]),
                       "reconstruction")
    sd = (spread.sd("sweep", "reconstruction", best["kl_weight"])
          if spread is not None and spread.has("sweep", "reconstruction") else None)
    sign = clear_sign(change, sd)
    seeds = ("" if sd is None else f"; the VAE's term varies by {number(sd, '.1f')} nats over "
             f"training seeds, {table('task2_seeds')}")
    lead = {1: "Without the KL term the baseline reconstructs best",
            0: "Without the KL term the baseline reconstructs neither clearly better nor "
               "clearly worse than the best VAE",
            -1: "Even without the KL term the baseline reconstructs worse than the best VAE"}
    words = lead[sign]
    if sign == 0 and change.sign != 0:
        words += (" (on these test images it does " + ("worse" if change.sign < 0 else "better")
                  + ", by less than the VAE's spread over training seeds)")
    return (f"{words}: its reconstruction term is "
            f"{estimate_of(baseline, 'reconstruction').text('.1f')} nats against "
            f"{estimate_of(best, 'reconstruction').text('.1f')} at weight {best['kl_weight']:g}, "
            f"the lowest of the VAEs (VAE minus baseline, paired over the test images: "
            f"{change.text('.1f')}; the terms are in {table('task2_sweep')}{seeds})")


def baseline_answer(baseline: Mapping[str, Any], sweep: Sequence[Mapping[str, Any]],
                    generation: Sequence[Mapping[str, Any]],
                    changes: Sequence[Mapping[str, Any]], spread: SeedSpread | None = None
                    ) -> str:
    """The deterministic baseline (KL weight 0) against the VAEs: its reconstructions (against
    the best VAE's, `changes` from `vae_analyses.baseline_changes`), its posterior spread, and
    whether its generated digits are read as well as a VAE's: a difference counts only beyond
    the VAE's spread over training seeds, where known (the baseline's is not measured)."""
    by_weight = {row.get("kl_weight"): row for row in generation}
    base = next(row for row in generation if row.get("kl_weight") is None
                and row["model"] != "MNIST test images")
    vae = by_weight.get(1.0) or by_weight[sweep[len(sweep) // 2]["kl_weight"]]
    gap = estimate_of(vae, "confident_share") - estimate_of(base, "confident_share")
    sd = (spread.sd("generation", "confident_share", vae["kl_weight"])
          if spread is not None and spread.has("generation", "confident_share") else None)
    sign = clear_sign(gap, sd)
    verdict = {1: "more recognisable", -1: "less recognisable",
               0: "not clearly more or less recognisable"}[sign]
    if sign == 0 and gap.sign != 0:
        verdict = (f"{'more' if gap.sign > 0 else 'less'} recognisable on these samples but, "
                   f"by less than the VAE's spread over training seeds, not clearly")
    seeds = ("" if sd is None else f" The VAE's share varies by {percent(sd)} over "
             f"training seeds ({table('task2_seeds')}), and a difference counts only beyond it.")
    return (
        f"**Against a plain autoencoder.** "
        f"{baseline_reconstruction_text(baseline, sweep, changes, spread)}"
        f". Nothing keeps its posterior wide: its mean $\\sigma$ is "
        f"{number(baseline['mean_sigma'], '.2g')}, against "
        f"{listed([number(row['mean_sigma'], '.2g') for row in sweep])} for the VAEs. But "
        f"it has no prior to generate from: decoding codes drawn from a Gaussian fitted to its "
        f"own codes, it gives digits the classifier reads with confidence (probability at "
        f"least {CONFIDENCE:g}) {percent(base['confident_share'], 0)} of the time, against "
        f"{percent(vae['confident_share'], 0)} for the weight-{vae['kl_weight']:g} VAE "
        f"decoding the prior's samples: the VAE's samples are {verdict} "
        f"({gap.text('.1%')}; {table('task2_generation')}, {figure('task2_generated')})."
        + seeds)


def broken_steps(weights: Sequence[float], changes: Sequence[Estimate],
                 sds: Sequence[float], expected: int, spec: str = ".2g") -> str:
    """Why steps of the weight did not move a quantity in the `expected` direction, step by
    step: the wrong way, not clear on the test images, or within the spread over seeds."""
    signs = clear_steps(changes, sds)
    if len(changes) > 1 and all(sign == -expected for sign in signs):
        return (f"Every step moved the other way "
                f"({listed([change.text(spec) for change in changes])})")
    reasons = []
    for index, (a, b, change, sign) in enumerate(zip(weights, weights[1:], changes, signs)):
        if sign == expected:
            continue
        where = f"from {number(a, 'g')} to {number(b, 'g')}"
        if sign == -expected:
            reasons.append(f"{where} it moved the other way ({change.text(spec)})")
        elif change.sign == 0:
            reasons.append(f"{where} the change ({change.text(spec)}) is not clear on the "
                           f"test images")
        else:
            reasons.append(f"{where} the change ({change.text(spec)}) is within its spread "
                           f"over seeds ({number(sds[index], spec)})")
    text = "; ".join(reasons)
    return text[:1].upper() + text[1:]


VERDICTS = {"consistent": "**consistent**", "partly": "**partly borne out**",
            "against": "**not borne out**"}


def status_of(signs: Sequence[int], expected: int) -> str:
    """An expectation's status from the clear signs of its steps: 'consistent' when every step
    goes the `expected` way, 'partly' when some do and none goes against it (the others are
    not clear), 'against' when a step goes the other way or none is clear."""
    if signs and all(sign == expected for sign in signs):
        return "consistent"
    if any(sign == expected for sign in signs) and not any(sign == -expected for sign in signs):
        return "partly"
    return "against"


def combined_status(*statuses: str) -> str:
    """The status of an expectation with several parts: its weakest part's."""
    order = ("against", "partly", "consistent")
    return min(statuses, key=order.index)


def expectation(claim: str, status: str, measured: str, why: str = "") -> str:
    """One item of the expectations list; an item that did not fully hold must say why."""
    if status not in VERDICTS:
        raise ValueError(f"status: expected one of {sorted(VERDICTS)}, got {status!r}")
    if status != "consistent" and not why:
        raise ValueError(f"why: an expectation that did not hold needs its reason ({claim!r})")
    return (f"- *{claim}*: {VERDICTS[status]}; {measured}"
            + (f". {why[:1].upper()}{why[1:]}" if why else "") + ".")


def expectations_headline(items: Sequence[str]) -> str:
    """'Yes', 'Partly' or 'No', and how many expectations held at every step, held where the
    steps are clear, or did not hold."""
    counts = {status: sum(verdict in item for item in items)
              for status, verdict in VERDICTS.items()}
    answer = ("Yes" if counts["consistent"] == len(items) else
              "No" if counts["against"] == len(items) else "Partly")
    def hold(count: int) -> str:
        return f"{count} {'holds' if count == 1 else 'hold'}"

    parts = [f"{hold(counts['consistent'])} at every step of the weight"]
    if counts["partly"]:
        parts.append(f"{hold(counts['partly'])} where the steps are clear, with no clear step "
                     f"against them")
    parts.append(f"{counts['against']} {'does' if counts['against'] == 1 else 'do'} not")
    return (f"{answer}: of {len(items)} expectations of the beta-VAE view (Higgins et al.), "
            f"{listed(parts)}")


def expectations_answer(sweep: Sequence[Mapping[str, Any]], space: Sequence[Mapping[str, Any]],
                        generation: Sequence[Mapping[str, Any]],
                        objectives: Sequence[Mapping[str, Any]], spread: SeedSpread | None
                        ) -> str:
    """Question 2: were the effects of the weight those the beta-VAE view predicts? Each
    expectation, whether the measurements bear it out, and, where not, why."""
    weights = [row["kl_weight"] for row in sweep]
    items = []
    reconstruction = step_signs(sweep, "reconstruction", spread)
    kl = step_signs(sweep, "kl", spread)
    traded = combined_status(status_of(reconstruction, 1), status_of(kl, -1))
    rec_changes = [change_of(row, "reconstruction") for row in sweep[1:]]
    kl_changes = [change_of(row, "kl") for row in sweep[1:]]
    why = "; ".join(part for part in (
        broken_steps(weights, rec_changes, step_sds(spread, sweep, "reconstruction"), 1, ".2f"),
        broken_steps(weights, kl_changes, step_sds(spread, sweep, "kl"), -1, ".2f")) if part)
    items.append(expectation(
        "a larger weight trades reconstruction for a smaller KL", traded,
        f"the reconstruction term {steps_text(weights, reconstruction)} and the KL "
        f"{steps_text(weights, kl)}", "" if traded == "consistent" else why))
    own = {row["objective"]: row for row in objectives}
    best = min(sweep, key=lambda row: row["neg_elbo"])
    one = own.get(1.0)
    beaten_one = one is not None and "own_minus_rival" in one and Estimate(
        one["own_minus_rival"], one["own_minus_rival_se"], one["n"]).sign > 0
    items.append(expectation(
        "weight 1, whose objective is the ELBO, reaches the best ELBO",
        "against" if beaten_one else "consistent",
        f"the lowest negative ELBO is at weight {best['kl_weight']:g}",
        "" if not beaten_one else
        f"the weight-{one['rival']:g} model scores better on the ELBO itself, so training "
        f"stopped the weight-1 model short of its own objective's optimum"))
    mismatch = step_signs(sweep, "prior_mismatch", spread)
    closer = status_of(mismatch, -1)
    widest = max(sweep, key=lambda row: row["kl_weight"])
    items.append(expectation(
        "a larger weight brings the aggregate posterior closer to the prior", closer,
        f"the summed distance of Var$(z_d)$ from the prior's 1 "
        f"{steps_text(weights, mismatch)}",
        "" if closer == "consistent" else broken_steps(
            weights, [change_of(row, "prior_mismatch") for row in sweep[1:]],
            step_sds(spread, sweep, "prior_mismatch"), -1, ".2f")
        + f"; at weight {widest['kl_weight']:g} the aggregate posterior's variances are "
          f"{listed([number(v, '.2f') for v in widest['aggregate_variance']])} against the "
          f"prior's 1 ({table('task2_dimensions')})"))
    models = [row for row in space[1:] if row["active_dimensions"] > 0]
    model_weights = [row["kl_weight"] for row in models]
    smooth_steps = smoothness_steps(models, spread)
    smoother = status_of(smooth_steps, -1)
    why = broken_steps(model_weights, smoothness_changes(models), smoothness_sds(models, spread),
                       -1, ".3f")
    items.append(expectation(
        "a larger weight makes the decoded space smoother", smoother,
        "along active dimensions, the change between neighbouring tiles "
        + (steps_text(model_weights, smooth_steps) if smooth_steps else "cannot be compared"),
        "" if smoother == "consistent" else why or "No two models with an active dimension to compare"))
    by_weight = {row.get("kl_weight"): row for row in generation}
    confident = [by_weight[w] for w in weights if w in by_weight]
    gen_changes = [estimate_of(b, "confident_share") - estimate_of(a, "confident_share")
                   for a, b in zip(confident, confident[1:])]
    gen_sds = step_sds(spread, confident, "confident_share", "generation")
    gen_steps = clear_steps(gen_changes, gen_sds)
    better = status_of(gen_steps, 1)
    why = broken_steps(weights[:len(confident)], gen_changes, gen_sds, 1, ".1%")
    if len(confident) > 1 and (estimate_of(confident[-1], "digit_entropy")
                               - estimate_of(confident[-2], "digit_entropy")).sign < 0:
        top_row, before = confident[-1], confident[-2]
        why += (f"; at weight {top_row['kl_weight']:g} the classifier also reads fewer kinds "
                f"of digit in the samples (digit entropy "
                f"{number(top_row['digit_entropy'], '.2f')} against "
                f"{number(before['digit_entropy'], '.2f')})")
    items.append(expectation(
        "samples from the prior become more recognisable as the weight grows", better,
        f"the share read with confidence {steps_text(weights[:len(confident)], gen_steps)} "
        f"({table('task2_generation')})",
        "" if better == "consistent" else why or "No step of the weight changed it clearly"))
    collapsed = [row["kl_weight"] for row in sweep if inactive_dimensions(row)]
    top = max(weights)
    switched = bool(collapsed) and max(collapsed) == top
    at_top = own.get(top)
    beaten_top = at_top is not None and "own_minus_rival" in at_top and Estimate(
        at_top["own_minus_rival"], at_top["own_minus_rival_se"], at_top["n"]).sign > 0
    variances = listed([number(v, ".2g") for v in max(
        sweep, key=lambda row: row["kl_weight"])["mean_variance"]])
    why = "" if switched else (f"At weight {top:g} every dimension keeps Var$_x(\\mu_d)$ above "
                               f"0.01 ({variances})")
    inactive = [f"{inactive_dimensions(row)} of {len(row['mean_variance'])} dimensions inactive "
                f"at weight {row['kl_weight']:g}" for row in sweep if inactive_dimensions(row)]
    measured = listed(inactive) if collapsed else "every dimension is active at every weight"
    if switched and beaten_top:
        rival = next(row for row in sweep if row["kl_weight"] == at_top["rival"])
        measured += (f"; but the weight-{rival['kl_weight']:g} model, with "
                     f"{plural(rival['active_dimensions'], 'active dimension')}, scores better "
                     f"on weight {top:g}'s own objective ({table('task2_objectives')}), so the "
                     f"collapsed model is not at that objective's optimum, and the collapse is "
                     f"not shown to be what the objective demands")
    items.append(expectation("the largest weight switches a dimension off (posterior collapse)",
                             "consistent" if switched else "against", measured, why))
    return (f"**Q2: Were the effects consistent with expectations?** "
            f"{expectations_headline(items)}. The "
            f"weight prices the information in the code: a larger weight should buy a "
            f"posterior closer to the prior at the cost of reconstruction, a smoother space "
            f"and better samples, and too large a weight should switch dimensions off. Each "
            f"difference counts only where it is clear on the test images and, where known, "
            f"beyond its spread over training seeds.\n\n" + "\n".join(items))

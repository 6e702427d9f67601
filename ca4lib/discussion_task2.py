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


def seed_note(spread: SeedSpread | None, steps: Mapping[str, list[float]]) -> str:
    """What the seed spread of the steps named in `steps` is, or that none is known."""
    if spread is None:
        return ("no spread over training seeds is known for this profile, so each step rests "
                "on the test images' interval alone")
    parts = [f"{name} {listed([number(sd, '.2g') for sd in sds])}"
             for name, sds in steps.items()]
    return (f"the standard deviation of each step over {len(spread.seeds)} training seeds is "
            f"{'; '.join(parts)} ({table('task2_seeds')}), and a step counts only beyond it")


def step_sds(spread: SeedSpread | None, rows: Sequence[Mapping[str, Any]], metric: str,
             section: str = "sweep") -> list[float]:
    """The seed spread of each step between neighbouring weights (empty without a spread)."""
    if spread is None:
        return []
    return [spread.difference_sd(section, metric, a["kl_weight"], b["kl_weight"])
            for a, b in zip(rows, rows[1:])]


def losses_answer(sweep: Sequence[Mapping[str, Any]], objectives: Sequence[Mapping[str, Any]],
                  spread: SeedSpread | None) -> str:
    """What the weight does to the two loss terms, where the negative ELBO is lowest, and
    whether each model is at the optimum of its own objective."""
    weights = [row["kl_weight"] for row in sweep]
    reconstruction = step_signs(sweep, "reconstruction", spread)
    kl = step_signs(sweep, "kl", spread)
    traded = all(sign > 0 for sign in reconstruction) and all(sign < 0 for sign in kl)
    answer = ("A larger KL weight trades reconstruction for a smaller KL" if traded else
              "The KL weight does not trade reconstruction for KL at every step")
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
            f"model was trained for, so {plural(sweep[0]['epochs'], 'epoch')} of Adam stopped "
            f"it short of that objective's optimum, and what it became is where training "
            f"stopped, not what the objective demands.")
    return text


def reconstructions_answer(sweep: Sequence[Mapping[str, Any]], spread: SeedSpread | None
                           ) -> str:
    """The mean reconstructions per weight: their reconstruction term and the digits the
    classifier recognises in them, step by step."""
    weights = [row["kl_weight"] for row in sweep]
    at_mean = step_signs(sweep, "mean_code_reconstruction", spread)
    recognised = step_signs(sweep, "recognised", spread) if "recognised" in sweep[0] else []
    worse = all(sign > 0 for sign in at_mean)
    answer = ("Reconstructions get worse as the weight grows" if worse else
              "Reconstructions do not get worse at every step of the weight")
    text = (f"**The reconstructions.** {answer}: the reconstruction term of the mean code "
            f"$z = \\mu$ {steps_text(weights, at_mean)} ({table('task2_sweep')}, "
            f"{figure('task2_reconstructions')})")
    if not recognised:
        return text + "."
    shares = listed([percent(row["recognised"]) for row in sweep])
    misread = [1 - row["recognised"] for row in sweep]
    note = seed_note(spread, {"recognised": step_sds(spread, sweep, "recognised")})
    return text + (
        f". The digit classifier recognises the original digit in {shares} of the mean "
        f"reconstructions for weights {weights_text(weights)}: that share "
        f"{steps_text(weights, recognised)} ({note}). Even at best, a 2-D code is a severe "
        f"bottleneck: {percent(min(misread))} of the mean reconstructions come back as "
        f"another digit, up to {percent(max(misread))}.")


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
    steps = []
    for a, b in zip(measured, measured[1:]):
        change = (Estimate(b["own_active_neighbour_change"], b["own_active_neighbour_change_se"],
                           b["n"])
                  - Estimate(a["own_active_neighbour_change"],
                             a["own_active_neighbour_change_se"], a["n"]))
        sd = None if spread is None else spread.difference_sd(
            "latent_space", "own_active_neighbour_change", a["kl_weight"], b["kl_weight"])
        steps.append(clear_sign(change, sd))
    smoother = bool(steps) and all(sign < 0 for sign in steps)
    answer = ("A larger weight gives a smoother latent space" if smoother else
              "The weight does not make the latent space clearly smoother at every step")
    change_text = (f"the mean pixel change between neighbouring tiles of each model's grid "
                   f"over its own codes {steps_text([row['kl_weight'] for row in measured], steps)}"
                   if len(measured) > 1 else "")
    sds = step_sds(spread, measured, "own_active_neighbour_change", "latent_space")
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


def baseline_answer(baseline: Mapping[str, Any], sweep: Sequence[Mapping[str, Any]],
                    generation: Sequence[Mapping[str, Any]]) -> str:
    """The deterministic baseline (KL weight 0) against the VAEs: its reconstructions, its
    posterior spread, and whether its generated digits are read as well as a VAE's."""
    by_weight = {row.get("kl_weight"): row for row in generation}
    base = next(row for row in generation if row.get("kl_weight") is None
                and row["model"] != "MNIST test images")
    vae = by_weight.get(1.0) or by_weight[sweep[len(sweep) // 2]["kl_weight"]]
    gap = estimate_of(vae, "confident_share") - estimate_of(base, "confident_share")
    verdict = {1: "more", -1: "fewer", 0: "not clearly more or fewer"}[gap.sign]
    return (
        f"**Against a plain autoencoder.** Without the KL term the baseline reconstructs "
        f"best, with a reconstruction term of {estimate_of(baseline, 'reconstruction').text('.1f')} "
        f"nats against {estimate_of(sweep[0], 'reconstruction').text('.1f')} at weight "
        f"{sweep[0]['kl_weight']:g} ({table('task2_sweep')}), and nothing keeps its posterior "
        f"wide: its mean $\\sigma$ is {number(baseline['mean_sigma'], '.2g')}, against "
        f"{listed([number(row['mean_sigma'], '.2g') for row in sweep])} for the VAEs. But "
        f"it has no prior to generate from: decoding codes drawn from a Gaussian fitted to its "
        f"own codes, it gives digits the classifier reads with confidence (probability at "
        f"least {CONFIDENCE:g}) {percent(base['confident_share'], 0)} of the time, against "
        f"{percent(vae['confident_share'], 0)} for the weight-{vae['kl_weight']:g} VAE "
        f"decoding the prior's samples: the VAE generates {verdict} recognisable digits "
        f"({gap.text('.1%')}; {table('task2_generation')}, {figure('task2_generated')}).")


def broken_steps(weights: Sequence[float], changes: Sequence[Estimate],
                 sds: Sequence[float], expected: int, spec: str = ".2g") -> str:
    """Why steps of the weight did not move a quantity in the `expected` direction, step by
    step: the wrong way, not clear on the test images, or within the spread over seeds."""
    reasons = []
    for index, (a, b, change) in enumerate(zip(weights, weights[1:], changes)):
        sd = sds[index] if index < len(sds) else None
        if clear_sign(change, sd) == expected:
            continue
        where = f"from {number(a, 'g')} to {number(b, 'g')}"
        if clear_sign(change, sd) == -expected:
            reasons.append(f"{where} it moved the other way ({change.text(spec)})")
        elif change.sign == 0:
            reasons.append(f"{where} the change ({change.text(spec)}) is not clear on the "
                           f"test images")
        else:
            reasons.append(f"{where} the change ({change.text(spec)}) is within its spread "
                           f"over seeds ({number(sd, spec)})")
    text = "; ".join(reasons)
    return text[:1].upper() + text[1:]


def expectation(claim: str, held: bool, measured: str, why: str = "") -> str:
    """One item of the expectations list; an item that failed must say why."""
    if not held and not why:
        raise ValueError(f"why: an expectation that failed needs its reason ({claim!r})")
    verdict = "**consistent**" if held else "**not borne out**"
    return (f"- *{claim}*: {verdict}; {measured}" + (f". {why[:1].upper()}{why[1:]}" if why else "")
            + ".")


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
    traded = all(s > 0 for s in reconstruction) and all(s < 0 for s in kl)
    rec_changes = [change_of(row, "reconstruction") for row in sweep[1:]]
    kl_changes = [change_of(row, "kl") for row in sweep[1:]]
    why = "; ".join(part for part in (
        broken_steps(weights, rec_changes, step_sds(spread, sweep, "reconstruction"), 1),
        broken_steps(weights, kl_changes, step_sds(spread, sweep, "kl"), -1)) if part)
    items.append(expectation(
        "a larger weight trades reconstruction for a smaller KL", traded,
        f"the reconstruction term {steps_text(weights, reconstruction)} and the KL "
        f"{steps_text(weights, kl)}", "" if traded else why))
    own = {row["objective"]: row for row in objectives}
    best = min(sweep, key=lambda row: row["neg_elbo"])
    one = own.get(1.0)
    beaten_one = one is not None and "own_minus_rival" in one and Estimate(
        one["own_minus_rival"], one["own_minus_rival_se"], one["n"]).sign > 0
    items.append(expectation(
        "weight 1, whose objective is the ELBO, reaches the best ELBO", not beaten_one,
        f"the lowest negative ELBO is at weight {best['kl_weight']:g}",
        "" if not beaten_one else
        f"the weight-{one['rival']:g} model scores better on the ELBO itself, so training "
        f"stopped the weight-1 model short of its own objective's optimum"))
    mismatch = step_signs(sweep, "prior_mismatch", spread)
    closer = all(s < 0 for s in mismatch)
    widest = max(sweep, key=lambda row: row["kl_weight"])
    far = max(widest["aggregate_variance"], key=lambda v: abs(v - 1.0))
    items.append(expectation(
        "a larger weight brings the aggregate posterior closer to the prior", closer,
        f"the summed distance of Var$(z_d)$ from the prior's 1 "
        f"{steps_text(weights, mismatch)}",
        "" if closer else
        f"At weight {widest['kl_weight']:g} a dimension's Var$(z_d)$ is {number(far, '.2f')} "
        f"against the prior's 1 ({table('task2_dimensions')})"))
    models = [row for row in space[1:] if row["active_dimensions"] > 0]
    model_weights = [row["kl_weight"] for row in models]
    smooth_changes = [estimate_of(b, "own_active_neighbour_change")
                      - estimate_of(a, "own_active_neighbour_change")
                      for a, b in zip(models, models[1:])]
    smooth_sds = step_sds(spread, models, "own_active_neighbour_change", "latent_space")
    smooth_steps = [clear_sign(change, smooth_sds[i] if smooth_sds else None)
                    for i, change in enumerate(smooth_changes)]
    smoother = bool(smooth_steps) and all(s < 0 for s in smooth_steps)
    why = broken_steps(model_weights, smooth_changes, smooth_sds, -1, ".3f")
    items.append(expectation(
        "a larger weight makes the decoded space smoother", smoother,
        "along active dimensions, the change between neighbouring tiles "
        + (steps_text(model_weights, smooth_steps) if smooth_steps else "cannot be compared"),
        "" if smoother else why or "No two models with an active dimension to compare"))
    by_weight = {row.get("kl_weight"): row for row in generation}
    confident = [by_weight[w] for w in weights if w in by_weight]
    gen_changes = [estimate_of(b, "confident_share") - estimate_of(a, "confident_share")
                   for a, b in zip(confident, confident[1:])]
    gen_steps = [change.sign for change in gen_changes]
    better = bool(gen_steps) and all(s >= 0 for s in gen_steps) and any(s > 0 for s in gen_steps)
    why = broken_steps(weights[:len(confident)], gen_changes, [], 1, ".1%")
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
        "" if better else why or "No step of the weight changed it clearly"))
    collapsed = [row["kl_weight"] for row in sweep
                 if row["active_dimensions"] < len(row["mean_variance"])]
    top = max(weights)
    switched = bool(collapsed) and max(collapsed) == top
    at_top = own.get(top)
    beaten_top = at_top is not None and "own_minus_rival" in at_top and Estimate(
        at_top["own_minus_rival"], at_top["own_minus_rival_se"], at_top["n"]).sign > 0
    variances = listed([number(v, ".2g") for v in max(
        sweep, key=lambda row: row["kl_weight"])["mean_variance"]])
    why = "" if switched else (f"At weight {top:g} every dimension keeps Var$_x(\\mu_d)$ above "
                               f"0.01 ({variances})")
    measured = (f"inactive dimensions at weight {weights_text(collapsed)}" if collapsed
                else "every dimension is active at every weight")
    if switched and beaten_top:
        rival = next(row for row in sweep if row["kl_weight"] == at_top["rival"])
        measured += (f"; but the weight-{rival['kl_weight']:g} model, with "
                     f"{plural(rival['active_dimensions'], 'active dimension')}, scores better "
                     f"on weight {top:g}'s own objective ({table('task2_objectives')}), so the "
                     f"collapse is where training stopped, not that objective's optimum")
    items.append(expectation("the largest weight switches a dimension off (posterior collapse)",
                             switched, measured, why))
    held = sum("**consistent**" in item for item in items)
    answer = ("Yes" if held == len(items) else "Partly" if held else "No")
    return (f"**Q2: Were the effects consistent with expectations?** {answer}: {held} of "
            f"{len(items)} expectations of the beta-VAE view (Higgins et al.) hold here. The "
            f"weight prices the information in the code: a larger weight should buy a "
            f"posterior closer to the prior at the cost of reconstruction, a smoother space "
            f"and better samples, and too large a weight should switch dimensions off. Each "
            f"difference counts only where it is clear on the test images and, where known, "
            f"beyond its spread over training seeds.\n\n" + "\n".join(items))

"""The discussion of Task 1, written from the analyses' rows (notebook: *Discussion of Task 1*).

Each paragraph builder takes the rows and returns Markdown; a sentence that compares numbers
states a difference only when its 95 % interval (Estimate.sign) excludes zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ca4lib.estimates import Estimate, change_of, estimate_of, number, paired_estimate
from ca4lib.wording import joined, percent, plural, verdict


def reconstruction_paragraph(autoencoder: Mapping[str, Any]) -> str:
    """The Task 1 autoencoder's test BCE, what the classifier reads in its reconstructions
    against the originals, and what the PCA plot shows of the code space."""
    bce = estimate_of(autoencoder, "bce")
    kept = Estimate(autoencoder["recognised_change"], autoencoder["recognised_change_se"],
                    autoencoder["n"])
    if kept.sign < 0:
        identity = (f"loses the digit of {percent(-kept.value)} of the test images "
                    f"(± {percent(kept.se)})")
    elif kept.sign > 0:
        identity = (f"even makes {percent(kept.value)} (± {percent(kept.se)}) more of them "
                    f"readable: it draws a typical version of each digit")
    else:
        identity = "keeps the digit as often as the originals show it (no clear difference)"
    ratios = autoencoder["pca_explained_variance"]
    shown = ("nearly all of the code's variance" if sum(ratios[:2]) >= 0.95 else
             f"{percent(sum(ratios[:2]), 0)} of it, a part of the code space only")
    return (
        f"**Reconstructions and latent space.** With a {autoencoder['latent_dim']}-number "
        f"code the autoencoder reaches a test binary cross-entropy of **{bce.text('.4f')}** "
        f"per pixel after {plural(autoencoder['epochs'], 'epoch')} (mean ± standard error over "
        f"the {autoencoder['n']:,} test images; an exact copy would score "
        f"{autoencoder['copy_bce']:.4f}, because grey edge pixels are neither 0 nor 1). The "
        f"digit classifier reads {percent(autoencoder['recognised'])} of the reconstructions "
        f"as the digit they show, against {percent(autoencoder['originals_recognised'])} of "
        f"the originals: the bottleneck {identity}. The first two principal components explain "
        f"{percent(ratios[0], 0)} and {percent(ratios[1], 0)} of the code variance, so the "
        f"PCA plot shows {shown}; how well the codes are organised by digit is measured "
        f"instead, by the kNN accuracy in Q2.")


def normalisation_paragraph(bce_at_255: float, seed_rows: Sequence[Mapping[str, Any]]
                            ) -> str:
    """Q1: the target argument, then raw against normalised inputs over seeds (paired)."""
    by_input: dict[str, dict[int, Mapping[str, Any]]] = {}
    for row in seed_rows:
        by_input.setdefault(row["inputs"], {})[row["seed"]] = row
    normalised, raw = by_input["[0, 1]"], by_input["raw 0-255"]
    seeds = sorted(normalised)
    if sorted(raw) != seeds:
        raise ValueError("seed_rows: expected the same seeds for both inputs")
    epochs = seed_rows[0]["epochs"]
    bce = paired_estimate([raw[s]["test_bce"] for s in seeds],
                          [normalised[s]["test_bce"] for s in seeds])
    dead = paired_estimate([raw[s]["dead"] for s in seeds],
                           [normalised[s]["dead"] for s in seeds])

    def spread(rows: Mapping[int, Mapping[str, Any]], name: str, spec: str) -> str:
        values = [rows[s][name] for s in seeds]
        text = number(float(np.mean(values)), spec)
        if len(values) > 1:
            text += f" (seeds {joined(values, spec, ', ')})"
        return text

    difference = (f"a paired difference of {bce.text('.4f')}" if len(seeds) > 1 else
                  f"a difference of {number(bce.value, '.4f')}")
    dead_difference = ("." if len(seeds) < 2 else
                       f" ({dead.text('.3f')}{'; no clear difference' if dead.sign == 0 else ''}).")
    measured = (
        f"Over {plural(len(seeds), 'seed')}, after {plural(epochs, 'epoch')} of the same "
        f"training, the model fed raw 0–255 pixels reached a test BCE of "
        f"{spread(raw, 'test_bce', '.4f')} against {spread(normalised, 'test_bce', '.4f')} "
        f"with inputs in $[0, 1]$, {difference}; its encoder had "
        f"{percent(float(np.mean([raw[s]['dead'] for s in seeds])))} dead ReLU units against "
        f"{percent(float(np.mean([normalised[s]['dead'] for s in seeds])))}{dead_difference}")
    if len(seeds) < 2:
        reading = "One seed gives no spread to judge the difference by."
    elif bce.sign > 0:
        reading = ("Raw inputs learn clearly slower. The default initialisation and learning "
                   "rate assume inputs of order 1; raw pixels multiply everything after the "
                   "first layer by up to 255.")
        if dead.sign > 0:
            reading += " They also switch more units off for good: a unit that never " \
                       "activates never learns again."
    elif dead.sign > 0:
        reading = ("The raw-input model is not clearly worse after this short run, but it has "
                   "clearly more dead units, which never learn again. Adam moves every weight "
                   "by about the learning rate per step whatever the scale of its gradient, so "
                   "with raw pixels each step changes the first layer's outputs 255 times as "
                   "much; normalised inputs keep those steps in proportion to the others'.")
    elif bce.sign < 0:
        reading = ("In this short run raw inputs even reach a lower loss. Adam moves each "
                   "weight by about the learning rate per step whatever the scale of its "
                   "gradient, so with raw pixels each step changes the first layer's outputs "
                   "255 times as much: in effect a larger learning rate for that layer, which "
                   "can speed the first epoch; a short run says nothing about where training "
                   "ends. The target argument above holds whatever the optimiser, and an "
                   "autoencoder's inputs are its targets.")
    else:
        reading = ("Within the spread over seeds, raw inputs cost nothing measurable in this "
                   "short run: Adam rescales each update by the running size of its own "
                   "gradients. What holds for any optimiser is the target argument above, and "
                   "an autoencoder's inputs are its targets.")
    return (
        f"**Q1: Why normalise?** Binary cross-entropy needs targets in $[0, 1]$: it reads each "
        f"pixel as the probability of ink. With raw targets of 255 the loss is unbounded below "
        f"(at $p = 0.999999$ it is {bce_at_255:.0f}, and it keeps falling), so training would "
        f"chase saturated outputs instead of copies, and a sigmoid output cannot produce 255 "
        f"anyway. {measured} {reading}")


def latent_size_paragraph(rows: Sequence[Mapping[str, Any]]) -> str:
    """Q2: reconstruction, recognised digits and kNN accuracy against the latent size."""
    if len(rows) < 2:
        raise ValueError(f"rows: expected at least two latent sizes to compare, got {len(rows)}")
    sizes = [row["latent_dim"] for row in rows]
    steps = [(rows[i - 1]["latent_dim"], row["latent_dim"],
              Estimate(row["bce_change"], row["bce_change_se"], row["n"]))
             for i, row in enumerate(rows) if i > 0]
    listed = ", ".join(f"latent {row['latent_dim']}: **{estimate_of(row, 'bce').text('.4f')}**"
                       for row in rows)
    text = (f"**Q2: Latent size.** Test BCE per pixel after "
            f"{plural(rows[0]['epochs'], 'epoch')} each: {listed}.")
    if steps and all(change.sign < 0 for _, _, change in steps):
        text += " Each larger code reconstructs clearly better"
        shrinks = [row for row in rows[2:] if "gain_shrink" in row]
        if shrinks and all(Estimate(row["gain_shrink"], row["gain_shrink_se"],
                                    row["n"]).sign > 0 for row in shrinks):
            gains = ", ".join(f"{number(-change.value, '.4f')} from {a} to {b}"
                              for a, b, change in steps)
            text += f", and the gain clearly shrinks as the code grows ({gains})"
        text += "."
    else:
        steps_text = "; ".join(
            f"from {a} to {b} the BCE is {verdict(change, 'lower', 'higher', '.4f')}"
            for a, b, change in steps)
        text += f" {steps_text[:1].upper()}{steps_text[1:]}."
    recognised = joined([percent(row["recognised"]) for row in rows], "", " / ")
    first_step = change_of(rows[1], "recognised")
    text += (f" The digit classifier recognises the digit in {recognised} of the "
             f"reconstructions for latent sizes {joined(sizes)}")
    if first_step.sign > 0:
        text += (f": the smallest code returns {percent(first_step.value)} "
                 f"(± {percent(first_step.se)}) more test digits as another digit than "
                 f"latent {sizes[1]} does")
    elif first_step.sign < 0:
        text += (f": latent {sizes[1]} returns {percent(-first_step.value)} "
                 f"(± {percent(first_step.se)}) more test digits as another digit than the "
                 f"smallest code")
    else:
        text += f": no clear difference between latent {sizes[0]} and {sizes[1]}"
    knn_changes = [Estimate(row["knn_change"], row["knn_change_se"], row["n"])
                   for row in rows[1:]]
    knn = joined([percent(row["knn"]) for row in rows], "", " / ")
    if knn_changes and all(change.sign > 0 for change in knn_changes):
        knn_text = "each larger code also separates the digits clearly better"
    else:
        best = max(rows, key=lambda row: row["knn"])
        ties = [row["latent_dim"] for row in rows if row is not best and (
            Estimate(best["knn"], best["knn_se"], best["n"])
            - Estimate(row["knn"], row["knn_se"], row["n"])).sign == 0]
        knn_text = (f"the codes separate the digits best at latent size {best['latent_dim']}"
                    + (f", not clearly better than at {joined(ties, '', ' and ')}" if ties
                       else ""))
    return (text + f". A 5-nearest-neighbour classifier on the codes labels {knn} of the test "
            f"digits correctly (never having seen a label in training): {knn_text}.")


def denoising_paragraph(rows: Sequence[Mapping[str, Any]], noise_stddev: float) -> str:
    """Q3: MSE to the clean images of the noisy inputs, the denoiser and a clean-trained
    autoencoder (paired), and the denoiser's blur."""
    noisy, denoiser, plain = rows
    denoised = Estimate(denoiser["mse_change"], denoiser["mse_change_se"], denoiser["n"])
    bottleneck = Estimate(plain["mse_change"], plain["mse_change_se"], plain["n"])
    trained = Estimate(denoiser["mse_vs_plain"], denoiser["mse_vs_plain_se"], denoiser["n"])
    blur = Estimate(denoiser["grey_vs_clean"], denoiser["grey_vs_clean_se"], denoiser["n"])
    answer = "Yes, when trained for it." if denoised.sign < 0 else \
        "Not in this run: the denoiser's output is not clearly closer than its input."
    text = (
        f"**Q3: Can autoencoders remove noise?** {answer} With Gaussian noise of standard "
        f"deviation {noise_stddev:g}, the noisy inputs differ from the clean images by a mean "
        f"squared error of **{estimate_of(noisy, 'mse').text('.4f')}** per pixel; the "
        f"denoising autoencoder's outputs by **{estimate_of(denoiser, 'mse').text('.4f')}**")
    if denoised.sign < 0:
        text += f", **{noisy['mse'] / denoiser['mse']:.1f} times closer**"
    text += (
        ". Trained with a per-pixel loss on noisy inputs and clean targets, the network "
        "approximates, as far as its bottleneck allows, the conditional mean of the clean "
        "image given the noisy one, $E[x \\mid \\tilde{x}]$ (what minimises the expected "
        "per-pixel cross-entropy, and the squared error this table reports): where the input "
        "leaves several digits or strokes plausible, it outputs their average")
    if blur.sign > 0:
        text += (f", and its outputs are blurrier than the clean digits: "
                 f"{percent(denoiser['grey'])} of their pixels are grey (between 0.1 and 0.9) "
                 f"against {percent(denoiser['clean_grey'])} in the clean images")
    text += (f". The Task 1 autoencoder, trained only on clean images, reaches "
             f"{estimate_of(plain, 'mse').text('.4f')} on the same noisy inputs: ")
    text += ("closer than the inputs, so the bottleneck alone removes some noise"
             if bottleneck.sign < 0 else
             "not clearly closer than the inputs, so the bottleneck alone does not denoise"
             if bottleneck.sign == 0 else
             "further from the clean images than the inputs themselves")
    text += {-1: "; training on noisy inputs with clean targets improves on it clearly",
             0: "; training on noisy inputs does not clearly improve on it",
             1: "; here the clean-trained autoencoder is even closer than the denoiser"}[
        trained.sign] + f" (denoiser minus clean-trained: {trained.text('.4f')})."
    return text + (" Noise unlike the training noise was not tested and may not be removed "
                   "as well.")


def task1_discussion(autoencoder: Mapping[str, Any], bce_at_255: float,
                     seed_rows: Sequence[Mapping[str, Any]],
                     latent_rows: Sequence[Mapping[str, Any]],
                     denoising: Sequence[Mapping[str, Any]], noise_stddev: float) -> str:
    """The discussion of Task 1, paragraph by paragraph, from the analyses' rows."""
    return "\n\n".join([reconstruction_paragraph(autoencoder),
                        normalisation_paragraph(bce_at_255, seed_rows),
                        latent_size_paragraph(latent_rows),
                        denoising_paragraph(denoising, noise_stddev)])

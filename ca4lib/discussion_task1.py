"""The answers of Task 1, written from the analyses' rows (notebook: *Task 1*, after each
piece of evidence).

Each builder takes rows and returns a Markdown paragraph that opens with a plain answer and
then gives its evidence, citing figures and tables by number (ca4lib.numbering). A sentence
that compares numbers states a difference only when its 95 % interval (Estimate.sign)
excludes zero; inside it, the sentence says there is no clear difference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ca4lib.estimates import Estimate, change_of, estimate_of, number, paired_estimate
from ca4lib.numbering import figure, table
from ca4lib.wording import joined, listed, percent, plural, steps_text, verdict, verdict_by


def reconstruction_answer(autoencoder: Mapping[str, Any]) -> str:
    """What the reconstructions of the Task 1 autoencoder keep and lose: blur (grey pixels
    against the originals), the digits the classifier reads in the figure's reconstructions
    and in all of them, and the test BCE."""
    bce = estimate_of(autoencoder, "bce")
    blur, kept = change_of(autoencoder, "grey"), change_of(autoencoder, "recognised")
    sharpness = {1: "blurrier than the originals", -1: "sharper than the originals",
                 0: "not clearly blurrier than the originals"}[blur.sign]
    identity = {-1: "lose the digit of some images", 0: "keep the digit as often as the "
                "originals show it", 1: "are read as their digit even more often than the "
                "originals"}[kept.sign]
    swaps = [(row["digit"], row["read"]) for row in autoencoder.get("shown", [])
             if row["digit"] != row["read"]]
    shown = len(autoencoder.get("shown", []))
    if not shown:
        figure_text = ""
    elif swaps:
        figure_text = (f" Of the {shown} digits in {figure('task1_reconstructions')}, the "
                       f"classifier reads " + listed([f"the {digit} as a {read}"
                                                      for digit, read in swaps])
                       + " in the reconstruction.")
    else:
        figure_text = (f" The classifier reads each of the {shown} reconstructions in "
                       f"{figure('task1_reconstructions')} as its digit.")
    return (
        f"**Originals against reconstructions.** The reconstructions are {sharpness} and "
        f"{identity}: {percent(autoencoder['grey'])} of their pixels are grey (between 0.1 and "
        f"0.9) against {percent(autoencoder['originals_grey'])} in the originals, and the "
        f"digit classifier reads {percent(autoencoder['recognised'])} of them as their digit "
        f"against {percent(autoencoder['originals_recognised'])} of the originals (paired "
        f"change {kept.text('.2%')}).{figure_text} The test binary cross-entropy is "
        f"{bce.text('.4f')} per pixel after {plural(autoencoder['epochs'], 'epoch')} (mean ± "
        f"standard error over the {autoencoder['n']:,} test images; an exact copy would score "
        f"{autoencoder['copy_bce']:.4f}, because grey pixels are neither 0 nor 1). "
        f"{figure('task1_loss')} shows the training and validation losses per epoch.")


def pca_answer(autoencoder: Mapping[str, Any], overlap: Mapping[str, Any],
               shown: int = 3) -> str:
    """What the PCA plot shows: the digits that form clusters of their own in the plane, the
    pairs that overlap most, and the share of the code's variance the plane holds."""
    purity = overlap["purity"]
    apart = sorted(range(len(purity)), key=lambda digit: -purity[digit])[:shown]
    pairs = overlap["pairs"][:shown]
    ratios = autoencoder["pca_explained_variance"]
    return (
        f"**The latent space in two dimensions.** In the PCA plane of "
        f"{figure('task1_pca')}, the digits {listed([str(d) for d in apart])} stand most apart "
        f"({listed([percent(purity[d], 0) for d in apart])} of their points' nearest "
        f"neighbours in the plane are the same digit), while "
        + listed([f"{a} and {b}" for a, b in (pair['digits'] for pair in pairs)])
        + f" overlap most (they share {listed([percent(p['share'], 0) for p in pairs])} of "
        f"their neighbours). The plane holds {percent(sum(ratios[:2]), 0)} of the codes' "
        f"variance ({percent(ratios[0], 0)} and {percent(ratios[1], 0)}), so digits that "
        f"overlap in it may lie apart in the other {autoencoder['latent_dim'] - 2} "
        f"dimensions; the kNN accuracy of whole codes measures that ({table('q2_latent_sizes')}"
        f", for the shorter-trained models of question 2).")


def normalisation_answer(bce_at_255: float, seed_rows: Sequence[Mapping[str, Any]]) -> str:
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

    runs = (f"once for each of {len(seeds)} seeds" if len(seeds) > 1 else "with one seed")
    trained = (f"Trained for {plural(epochs, 'epoch')} on raw and on normalised pixels, {runs} "
               f"({table('q1_inputs')}), ")
    if len(seeds) > 1:
        measured = (f"{trained}against the normalised model of the same seed, the raw-input "
                    f"model's test BCE is {verdict_by(bce, 'lower', 'higher', '.4f')} and its "
                    f"share of dead ReLU units is {verdict_by(dead, 'lower', 'higher', '.1%')}.")
    else:
        measured = (f"{trained}the raw-input model reached a test BCE of "
                    f"{number(raw[seeds[0]]['test_bce'], '.4f')} against "
                    f"{number(normalised[seeds[0]]['test_bce'], '.4f')}, with "
                    f"{percent(raw[seeds[0]]['dead'])} dead ReLU units against "
                    f"{percent(normalised[seeds[0]]['dead'])}.")
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
        f"**Q1: Why normalise the images?** Because binary cross-entropy reads every target "
        f"pixel as a probability of ink in $[0, 1]$, and an autoencoder's targets are its "
        f"inputs. With raw targets of 255 the loss has no minimum: at $p = 0.999999$ it is "
        f"{bce_at_255:,.0f}, and it keeps falling as $p \\to 1$ ({table('q1_targets')}); a "
        f"sigmoid output cannot reach 255 anyway. Normalised inputs also keep everything after "
        f"the first layer at the scale that the default initialisation and learning rate "
        f"assume. {measured} {reading}")


def latent_size_answer(rows: Sequence[Mapping[str, Any]]) -> str:
    """Q2: reconstruction, recognised digits and kNN accuracy against the latent size."""
    if len(rows) < 2:
        raise ValueError(f"rows: expected at least two latent sizes to compare, got {len(rows)}")
    sizes = [row["latent_dim"] for row in rows]
    bce_steps = [change_of(row, "bce") for row in rows[1:]]
    better = all(change.sign < 0 for change in bce_steps)
    shrinking = better and len(rows) > 2 and all(
        Estimate(row["gain_shrink"], row["gain_shrink_se"], row["n"]).sign > 0
        for row in rows[2:])
    if better:
        answer = "A larger latent space reconstructs better" + (
            ", with diminishing returns" if shrinking else "")
    else:
        answer = "A larger latent space does not reconstruct better at every step"
    text = (f"**Q2: How does the size of the latent space change the reconstructions?** "
            f"{answer}: after {plural(rows[0]['epochs'], 'epoch')} of the same training, the "
            f"test BCE per pixel {steps_text(sizes, [c.sign for c in bce_steps], 'rose', 'fell')}"
            f" ({table('q2_latent_sizes')})")
    if shrinking:
        gains = [number(-change.value, ".4f") for change in bce_steps]
        text += f", and by less at each step ({listed(gains)})"
    first_step = change_of(rows[1], "recognised")
    text += (f". The smallest code loses digits: the classifier recognises "
             f"{percent(rows[0]['recognised'])} of the latent-{sizes[0]} reconstructions "
             f"against {percent(rows[1]['recognised'])} at latent {sizes[1]}"
             if first_step.sign > 0 else
             f". The classifier recognises the digit in "
             f"{joined([percent(row['recognised']) for row in rows], '', ' / ')} of the "
             f"reconstructions for sizes {joined(sizes)}, "
             f"{verdict(first_step, 'fewer', 'more', '.2%')} from {sizes[0]} to {sizes[1]}")
    text += f" ({figure('task1_latent_sizes')} shows the same digits at each size)."
    knn_changes = [change_of(row, "knn") for row in rows[1:]]
    if all(change.sign > 0 for change in knn_changes):
        knn_text = "each larger code also separates the digits clearly better"
    else:
        best = max(rows, key=lambda row: row["knn"])
        ties = [row["latent_dim"] for row in rows if row is not best and (
            estimate_of(best, "knn") - estimate_of(row, "knn")).sign == 0]
        knn_text = (f"the codes separate the digits best at size {best['latent_dim']}"
                    + (f", not clearly better than at {joined(ties, '', ' and ')}" if ties
                       else ""))
    return (text + f" A 5-nearest-neighbour classifier on the codes, which never saw a label in "
            f"training, labels {joined([percent(row['knn']) for row in rows], '', ' / ')} of the "
            f"test digits correctly: {knn_text}.")


def denoising_answer(rows: Sequence[Mapping[str, Any]], noise_stddev: float) -> str:
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
        f"deviation {noise_stddev:g} ({figure('task1_denoising')}), the noisy inputs differ "
        f"from the clean images by a mean squared error of "
        f"{estimate_of(noisy, 'mse').text('.4f')} per pixel and the denoising autoencoder's "
        f"outputs by {estimate_of(denoiser, 'mse').text('.4f')} ({table('q3_denoising')})")
    if denoised.sign < 0:
        text += f", {noisy['mse'] / denoiser['mse']:.1f} times closer"
    text += (
        ". Trained with a per-pixel loss on noisy inputs and clean targets, the network "
        "approximates, as far as its bottleneck allows, the conditional mean of the clean "
        "image given the noisy one, $E[x \\mid \\tilde{x}]$ (what minimises the expected "
        "per-pixel cross-entropy and squared error): where the input "
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

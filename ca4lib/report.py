"""The report's scaffolding: title block, run record (`metrics.json` provenance), Markdown tables,
layer summaries and the printed source of the graded code.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ca4lib.backend import keras
from ca4lib.cache_key import library_versions
from ca4lib.checks import check_non_negative_int
from ca4lib.estimates import number, standard_error_text
from ca4lib.settings import PROJECT_DIR, build_dir, get_profile
from ca4lib.wording import joined

TITLE = "CA4: Autoencoders and variational autoencoders on MNIST"


def title_block(group: str | None, members: str | None, profile: str) -> str:
    """Return the report's title block: a smoke-run banner first (any profile but `full`),
    the title, and the group and members, or a plain note that they are not set."""
    missing = "**not set** (set {} in the parameters cell, or {} in the environment)"
    banner = "" if profile == "full" else (
        f"> **Smoke run (profile `{profile}`): not the assignment.** The models below train "
        f"for one or two epochs on a few thousand images; no number or sentence in this "
        f"document is a result. Run `make run` for the report.\n\n")
    rows = [("Group", (group or "").strip() or missing.format("GROUP", "CA4_GROUP")),
            ("Members", (members or "").strip() or missing.format("MEMBERS", "CA4_MEMBERS")),
            ("Course", "CA4, deep learning coursework")]
    table = "\n".join(["| | |", "|---|---|", *(f"| **{key}** | {value} |" for key, value in rows)])
    return f"{banner}# {TITLE}\n\n{table}"


def start_run_record(profile: str, seed: int) -> dict[str, Any]:
    """Begin the run's record for build/metrics.json: remove the previous run's file (so a
    failed run never leaves an old file looking current) and return the provenance: commit,
    date, profile, seed and library versions."""
    (build_dir() / "metrics.json").unlink(missing_ok=True)

    def git(*arguments: str) -> str | None:
        try:
            return subprocess.run(["git", *arguments], cwd=PROJECT_DIR, capture_output=True,
                                  text=True, timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    if commit and git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    return {"profile": get_profile(profile).name, "seed": check_non_negative_int(seed, "seed"),
            "commit": commit or "unknown (not a git checkout)",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": library_versions()}


def short_commit(commit: str) -> str:
    """Shorten a run record's commit for a printed line: a full hash to its first 12 digits,
    the rest ('(with uncommitted changes)') kept."""
    return re.sub(r"\b([0-9a-f]{12})[0-9a-f]{28}\b", r"\1", str(commit))


def layer_rows(model: keras.Model) -> list[dict[str, Any]]:
    """Return one row per layer of a Functional model: name, type, output shape, parameters."""
    if not isinstance(model, keras.Model) or not hasattr(model, "layers"):
        raise TypeError(f"model: expected a keras.Model, got {type(model).__name__}")
    return [{"layer": layer.name, "type": type(layer).__name__,
             "output": str(tuple(layer.output.shape)) if hasattr(layer, "output") else "",
             "parameters": layer.count_params()} for layer in model.layers]


def summary_markdown(*models: keras.Model) -> str:
    """Render the layers of one or more models as Markdown tables (a PDF-friendly summary)."""
    if not models:
        raise ValueError("models: expected at least one model, got none")
    parts = []
    for model in models:
        table = markdown_table(layer_rows(model), {"layer": "Layer", "type": "Type",
                                                  "output": "Output shape",
                                                  "parameters": "Parameters|,"})
        parts.append(f"**{model.name}** ({model.count_params():,} parameters)\n\n{table}")
    return "\n\n".join(parts)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str]) -> str:
    """Render rows as a Markdown table; `columns` maps each key to 'Header|format'.

    A format starting with '±' prints the value with its standard error, read from the
    row's `{key}_se`: '±.1f' gives '148.9 ± 0.3'. A missing value prints as '–'. The dashes
    under each header are as many as the column's widest entry: pandoc sizes the PDF's
    columns in that proportion, so long headers do not run into their neighbours.

    >>> print(markdown_table([{"loss": 148.93, "loss_se": 0.31}], {"loss": "Loss|±.1f"}))
    | Loss |
    |-----------|
    | 148.9 ± 0.3 |
    """
    if not rows:
        raise ValueError("rows: expected at least one row, got none")

    def cell(row: Mapping[str, Any], key: str, fmt: str) -> str:
        if row.get(key) is None:
            return "–"
        if fmt.startswith("±"):
            return f"{number(row[key], fmt[1:])} ± {standard_error_text(row[f'{key}_se'], fmt[1:])}"
        return number(row[key], fmt) if fmt else str(row[key])

    headers = [spec.partition("|")[0] for spec in columns.values()]
    body = [[cell(row, key, spec.partition("|")[2]) for key, spec in columns.items()]
            for row in rows]
    widths = [max(3, len(header), *(len(cells[i]) for cells in body))
              for i, header in enumerate(headers)]
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("-" * width for width in widths) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def vae_sweep_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The sweep's loss terms per test image, then its latent dimensions: two tables."""
    losses = markdown_table(rows, {
        "kl_weight": "KL weight|g", "reconstruction": "Reconstruction|±.1f",
        "kl": "KL|±.2f", "neg_elbo": "Negative ELBO|±.1f",
        "mean_code_reconstruction": "Reconstruction at $z = \\mu$|±.1f"})
    shown = [{**row, "per_dimension": joined(row["kl_per_dimension"], ".2f"),
              "mean_variance": joined(row["mean_variance"], ".2g"),
              "variance": joined(row["aggregate_variance"], ".2f")} for row in rows]
    dimensions = markdown_table(shown, {
        "kl_weight": "KL weight|g", "per_dimension": "KL per dimension",
        "mean_variance": "Var$_x(\\mu_d)$", "active_dimensions": "Active",
        "variance": "Var$(z_d)$"})
    return f"{losses}\n\n{dimensions}"


def likelihood_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """-log p(x) by importance sampling, the quadrature's paired difference from it on the
    images the grid resolves, and the variational gap, per VAE."""
    # The quadrature is shown as its paired difference on the images it resolves: its mean
    # over that subset beside the importance mean over all images would compare two sets.
    shown = [{**row, "nll": -row["test_log_likelihood"], "nll_se": row["test_log_likelihood_se"],
              "quadrature": row.get("quadrature_minus_importance"),
              "quadrature_se": row.get("quadrature_minus_importance_se")} for row in rows]
    return markdown_table(shown, {
        "kl_weight": "KL weight|g", "nll": "$-\\log p(x)$, importance|±.2f",
        "resolved_share": "Resolved images|.0%",
        "quadrature": "$\\log p(x)$, quadrature $-$ importance|±.2f",
        "variational_gap": "Variational gap|±.2f"})


def latent_space_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Coverage, smoothness and kNN accuracy of each latent space, the prior's first."""
    return markdown_table(rows, {
        "model": "Codes", "coverage": "Coverage|±.0%",
        "neighbour_change": "Neighbour change|±.3f",
        "own_neighbour_change": "On its own codes|±.3f", "knn": "kNN accuracy|±.1%"})


def generation_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The classifier's reading of each generator's samples, real test images first."""
    return markdown_table(rows, {
        "model": "Images", "samples": "Count|,", "confident_share": "Confident|±.1%",
        "digit_entropy": "Digit entropy|±.3f", "least_digit_share": "Least digit|±.1%"})


def interpolation_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Smoothness and unclear interior frames of each model's latent paths."""
    return markdown_table(rows, {
        "model": "Model", "n": "Paths", "smoothness": "Largest step / total|±.3f",
        "unclear": "Unclear interior frames|±.1%"})


def merge_rows(first: Sequence[Mapping[str, Any]], second: Sequence[Mapping[str, Any]],
               key: str) -> list[dict[str, Any]]:
    """Join two lists of rows on `key` (the second's values win where both have a field)."""
    found = {row[key]: row for row in second}
    if set(found) != {row[key] for row in first}:
        raise ValueError(f"second: expected rows for the same {key}s as first, "
                         f"got {sorted(found)}")
    return [{**row, **found[row[key]]} for row in first]


def show_source(*objects: Any) -> Any:
    """Return the source code of functions or classes, syntax-highlighted for the report."""
    from IPython.display import Code

    if not objects or not all(inspect.isfunction(o) or inspect.isclass(o) for o in objects):
        raise TypeError(f"objects: expected functions or classes, got {objects!r}")
    return Code("\n\n".join(inspect.getsource(item).rstrip() for item in objects), language="python")

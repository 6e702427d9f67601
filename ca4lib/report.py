"""The report's scaffolding: title block, run record (`metrics.json` provenance), Markdown tables,
layer summaries and the printed source of the graded code.
"""

from __future__ import annotations

import inspect
import math
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ca4lib import numbering
from ca4lib.backend import keras
from ca4lib.cache_key import library_versions
from ca4lib.checks import check_non_negative_int
from ca4lib.estimates import Estimate, number, standard_error_text
from ca4lib.progress import format_duration
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
    failed run never leaves an old file looking current) and return the provenance."""
    (build_dir() / "metrics.json").unlink(missing_ok=True)
    return provenance(profile, seed)


def provenance(profile: str, seed: int) -> dict[str, Any]:
    """Return what a result file records of the run: commit (and whether the tree had
    uncommitted changes), date, profile, seed and library versions."""
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


# How much wider than a digit some characters print in the PDF's body font (multiples of a
# digit's width in Latin Modern; other characters count as one digit).
WIDE_CHARACTERS = {"%": 1.7, "±": 1.4, "M": 1.7, "W": 1.9, "m": 1.6, "w": 1.4,
                   "N": 1.5, "G": 1.4, "O": 1.5, "Q": 1.5, "D": 1.4, "H": 1.5}


def shown_width(text: str) -> int:
    """About how many digits wide `text` prints: LaTeX markup counted as what it shows
    (`$-\\log p(x)$` as '-log p(x)', a command such as `\\sigma` as one character)."""
    shown = re.sub(r"\\(log|exp)\b", r"\1", text)
    shown = re.sub(r"\\[a-zA-Z]+", "x", shown)
    shown = re.sub(r"[${}^_\\]", "", shown)
    return math.ceil(sum(WIDE_CHARACTERS.get(character, 1.0) for character in shown))


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str],
                   transpose: bool = False) -> str:
    """Render rows as a Markdown table; `columns` maps each key to 'Header|format'.

    `transpose` turns the table on its side for rows with many columns: the first column's
    values head the columns, and each other header labels a row (labels wrap between words).

    A format starting with '±' prints the value with its standard error, read from the
    row's `{key}_se`: '±.1f' gives '148.9 ± 0.3' (with a digit more where the row's `n` says
    the printed pair would suggest a verdict its interval does not support). A missing value
    prints as '–'. The dashes under each header are as many as the column's widest cell
    (`shown_width`, plus one for the space between columns) or the header's longest word:
    pandoc sizes the PDF's columns in that proportion, so cells do not wrap or run into their
    neighbours, and headers wrap between words.

    >>> print(markdown_table([{"loss": 148.93, "loss_se": 0.31}], {"loss": "Loss|±.1f"}))
    | Loss |
    |-------------|
    | 148.9 ± 0.3 |
    """
    if not rows:
        raise ValueError("rows: expected at least one row, got none")

    def cell(row: Mapping[str, Any], key: str, fmt: str) -> str:
        if row.get(key) is None:
            return "–"
        if fmt.startswith("±") and "n" in row:
            return Estimate(row[key], row[f"{key}_se"], row["n"]).text(fmt[1:])
        if fmt.startswith("±"):
            return f"{number(row[key], fmt[1:])} ± {standard_error_text(row[f'{key}_se'], fmt[1:])}"
        return number(row[key], fmt) if fmt else str(row[key])

    headers = [spec.partition("|")[0] for spec in columns.values()]
    body = [[cell(row, key, spec.partition("|")[2]) for key, spec in columns.items()]
            for row in rows]
    if transpose:
        headers, body = ([headers[0], *(cells[0] for cells in body)],
                         [[header, *(cells[index] for cells in body)]
                          for index, header in enumerate(headers) if index])
    widths = [max(3, *(shown_width(word) for word in header.split()),
                  *(max(shown_width(word) for word in cells[i].split()) + 1
                    if transpose and i == 0 else shown_width(cells[i]) + 1 for cells in body))
              for i, header in enumerate(headers)]
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("-" * width for width in widths) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def show_table(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str], name: str,
               transpose: bool = False, **caption_fields: Any) -> None:
    """Show a Markdown table (markdown_table) under its numbered caption (ca4lib.numbering)."""
    show_markdown_table(markdown_table(rows, columns, transpose), name, **caption_fields)


def show_markdown_table(table: str, name: str, **caption_fields: Any) -> None:
    """Show a table already in Markdown under its numbered caption (ca4lib.numbering)."""
    from IPython.display import Markdown, display

    display(Markdown(f"{numbering.caption('table', name, **caption_fields)}\n\n{table}"))


# The columns of the report's tables (Markdown headers and formats, see markdown_table).
LAYER_COLUMNS = {"layer": "Layer", "type": "Type", "output": "Output shape",
                 "parameters": "Parameters|,"}
DIMENSION_COLUMNS = {"kl_weight": "KL weight|g", "per_dimension": "KL per dimension",
                     "mean_variance": "Var$_x(\\mu_d)$", "active_dimensions": "Active",
                     "variance": "Var$(z_d)$"}
LATENT_SPACE_COLUMNS = {
    "model": "Codes", "active_dimensions": "Active dimensions",
    "coverage": "Coverage, all dimensions|±.0%",
    "active_coverage": "Coverage, active dimensions|±.0%",
    "prior_active_coverage": "The prior's coverage, as many dimensions|±.0%",
    "own_active_neighbour_change": "Neighbour change, active dimensions|±.3f",
    "knn": "kNN accuracy|±.1%"}
TRAINING_COLUMNS = {"name": "Model", "epochs": "Epochs", "seconds": "Training time",
                    "source": "This run"}
GENERATION_COLUMNS = {
    "model": "Images", "samples": "Count|,", "confident_share": "Confident|±.1%",
    "digit_entropy": "Digit entropy|±.3f", "least_digit_share": "Least digit|±.1%"}
INTERPOLATION_COLUMNS = {
    "model": "Model", "n": "Paths", "smoothness": "Largest step / total|±.3f",
    "unclear": "Unclear interior frames|±.1%"}


def dimension_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The sweep's rows with their per-dimension lists as text, for DIMENSION_COLUMNS."""
    return [{**row, "per_dimension": joined(row["kl_per_dimension"], ".2f"),
             "mean_variance": joined(row["mean_variance"], ".2g"),
             "variance": joined(row["aggregate_variance"], ".2f")} for row in rows]


def training_rows(runs: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per TrainingResult, for TRAINING_COLUMNS: its name, epochs, training time and
    whether this run trained it."""
    sources = {"trained": "trained", "resumed": "trained (resumed)", "cache": "from the cache"}
    return [{"name": run.name, "epochs": run.epochs, "seconds": format_duration(run.seconds),
             "source": sources[run.source]} for run in runs]


def show_layers(model: keras.Model, name: str) -> None:
    """Show a model's layer table under its numbered caption, with its parameter count."""
    show_table(layer_rows(model), LAYER_COLUMNS, name, parameters=model.count_params())


def show_source(*objects: Any) -> Any:
    """Return the source code of functions or classes, syntax-highlighted for the report."""
    from IPython.display import Code

    if not objects or not all(inspect.isfunction(o) or inspect.isclass(o) for o in objects):
        raise TypeError(f"objects: expected functions or classes, got {objects!r}")
    return Code("\n\n".join(inspect.getsource(item).rstrip() for item in objects), language="python")

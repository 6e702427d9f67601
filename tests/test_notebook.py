"""The notebook end to end: headless execution in the fast profile, its outputs, and the PDF."""

from __future__ import annotations

import ast
import datetime
import inspect
import io
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import numpy as np
import pytest

import ca4_helpers as ca4
from ca4lib import explorer, numbering, progress, report, settings
from tools import build as build_tools

NOTEBOOK = settings.PROJECT_DIR / "ca4.ipynb"
# Every figure goes through figures.show_figure, once per call (never in a loop): count the calls.
EXPECTED_FIGURES = sum(cell.source.count("figures.show_figure(")
                       for cell in nbformat.read(NOTEBOOK, as_version=4).cells
                       if cell.cell_type == "code")
# Characters of code that fit one line of the PDF (measured with the report's template: 87
# in a code cell's box, 88 in an output such as report.show_source's), less a margin for cells.
CODE_WIDTH = 86
SOURCE_WIDTH = 88
# nbconvert breaks printed output at 80 characters (without a mark).
OUTPUT_WIDTH = 80

pytestmark = pytest.mark.slow


def notebook_parameters() -> dict:
    """The values of the notebook's parameters cell, evaluated without running the notebook."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    (cell,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    namespace: dict = {}
    exec(cell.source, namespace)  # the cell only assigns constants (and imports os)
    return namespace


def test_committed_notebook_is_clean_and_parameterised() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells, "the notebook has no code cells"
    for cell in code_cells:
        assert cell.outputs == [] and cell.execution_count is None, \
            "commit the notebook without outputs"
    parameter_cells = [c for c in code_cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameter_cells) == 1
    assert "CA4_PROFILE" in parameter_cells[0].source
    assert code_cells.index(parameter_cells[0]) == 0, "the parameters cell comes first"


def shown_objects(notebook: nbformat.NotebookNode) -> list[str]:
    """Names of the ca4 objects whose source the notebook prints with report.show_source."""
    names = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source.replace("%matplotlib inline", ""))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "show_source"):
                names += [arg.attr for arg in node.args if isinstance(arg, ast.Attribute)]
    return names


def test_code_in_the_pdf_fits_its_line_width() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    too_long = [line for cell in notebook.cells
                if cell.cell_type == "code" and "hide-input" not in cell.metadata.get("tags", [])
                for line in cell.source.splitlines() if len(line) > CODE_WIDTH]
    assert not too_long, f"visible code lines over {CODE_WIDTH} characters: {too_long}"
    names = shown_objects(notebook)
    assert {"Sampling", "reconstruction_loss", "kl_divergence", "VariationalAutoencoder",
            "build_vae_encoder", "build_decoder", "build_autoencoder_encoder"} <= set(names)
    for name in names:
        lines = inspect.getsource(getattr(ca4, name)).splitlines()
        assert all(len(line) <= SOURCE_WIDTH for line in lines), \
            f"ca4.{name} has lines over {SOURCE_WIDTH} characters; the PDF would wrap them"


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory):
    """Execute the notebook once in the fast profile with its own build folder and cache."""
    build = tmp_path_factory.mktemp("notebook-build")
    saved = os.environ.get("CA4_BUILD_DIR")
    os.environ["CA4_BUILD_DIR"] = str(build)
    terminal = io.StringIO()
    try:
        target = build_tools.execute_notebook(NOTEBOOK, build / "ca4.ipynb", profile="fast",
                                      timeout=900, stream=terminal)
    finally:
        if saved is None:
            os.environ.pop("CA4_BUILD_DIR", None)
        else:
            os.environ["CA4_BUILD_DIR"] = saved
    return nbformat.read(target, as_version=4), build, terminal.getvalue()


def outputs_of(notebook: nbformat.NotebookNode) -> list[dict]:
    return [output for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.outputs]


def test_notebook_runs_without_errors_or_warnings(executed) -> None:
    notebook, _, terminal = executed
    outputs = outputs_of(notebook)
    assert not [o for o in outputs if o.output_type == "error"]
    # Warnings, TensorFlow's native log and tracebacks all arrive on stderr.
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert stderr == "", f"the notebook wrote to stderr:\n{stderr[:2000]}"
    assert not re.search(r"warn|traceback|exception", terminal, re.IGNORECASE), terminal[:2000]


def test_terminal_shows_sections_and_progress(executed) -> None:
    _, _, terminal = executed
    lines = terminal.splitlines()
    assert any(line.endswith("Task 1: a convolutional autoencoder > Data, model and training")
               for line in lines), terminal[:1000]
    epoch_lines = [line for line in lines if progress.EPOCH_LINE.match(line)]
    parameters = notebook_parameters()
    profile = settings.get_profile("fast")
    assert len(epoch_lines) == sum(profile.planned_models(
        parameters["LATENT_DIM"], parameters["LATENT_SIZES"], parameters["KL_WEIGHTS"],
        parameters["Q1_SEEDS"]).values())
    assert all("left" in line for line in epoch_lines)
    assert "run: about" in epoch_lines[0]


def test_printed_lines_fit_the_pdf(executed) -> None:
    notebook, _, _ = executed
    text = "".join(o.get("text", "") for o in outputs_of(notebook)
                   if o.get("output_type") == "stream")
    long = [line for line in text.splitlines() if len(line) > OUTPUT_WIDTH and not any(
        pattern.match(line) for pattern in (progress.EPOCH_LINE, progress.TICKER_LINE))]
    assert not long, long


def test_notebook_draws_every_figure(executed) -> None:
    notebook, build, _ = executed
    images = [o for o in outputs_of(notebook) if "image/png" in o.get("data", {})]
    assert EXPECTED_FIGURES >= 14
    assert len(images) == EXPECTED_FIGURES
    saved = sorted((build / "figures").glob("*.png"))
    assert len(saved) == EXPECTED_FIGURES, [path.name for path in saved]


def test_explorer_is_a_one_line_note_outside_jupyterlab(executed) -> None:
    notebook, _, _ = executed
    (cell,) = [c for c in notebook.cells if "explorer.latent_explorer(" in c.source]
    (output,) = cell.outputs
    assert output.output_type == "display_data"
    assert output.data["text/plain"] == explorer.EXPLORER_NOTE
    assert "application/vnd.jupyter.widget-view+json" in output.data
    assert not [mime for mime in output.data if mime.startswith("image/")]


ANSWERS = ("Originals against reconstructions.", "The latent space in two dimensions.",
           "Q1: Why normalise the images?",
           "Q2: How does the size of the latent space change the reconstructions?",
           "Q3: Can autoencoders remove noise?", "The losses.", "The reconstructions.",
           "Continuity of the latent space.", "Against a plain autoencoder.",
           "Q2: Were the effects consistent with expectations?")


def test_every_figure_and_table_has_its_number_and_caption_in_order(executed) -> None:
    notebook, build, _ = executed
    markdown = [o["data"]["text/markdown"] for o in outputs_of(notebook)
                if "text/markdown" in o.get("data", {})]
    for kind, names in (("Figure", numbering.FIGURES), ("Table", numbering.TABLES)):
        shown = [int(number) for text in markdown
                 for number in re.findall(rf"\*\*{kind} (\d+)\.\*\*", text)]
        # The fast profile has no result file of the three seeds: its tables are left out.
        expected = [number + 1 for number, name in enumerate(names)
                    if name not in ("task2_seeds", "task2_seed_steps")]
        assert shown == expected, (kind, shown)
    saved = sorted(path.stem for path in (build / "figures").glob("*.png"))
    assert saved == sorted(numbering.FIGURES)
    # The notebook's own text cites no number (only generated captions and sentences do,
    # from ca4lib.numbering), and never points at 'the figure' without one.
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            assert not re.search(r"\b(Figure|Table) \d", cell.source), cell.source[:80]
            assert not re.search(r"(see|below|above) the (figure|table)", cell.source)


def test_notebook_shows_result_tables_and_numeric_answers(executed) -> None:
    notebook, _, _ = executed
    markdown = "\n".join(o["data"]["text/markdown"] for o in outputs_of(notebook)
                         if "text/markdown" in o.get("data", {}))
    for header in ("| Latent size |", "| KL weight |", "MSE per pixel", "Coverage",
                   "KL per dimension", "Negative ELBO", "kNN", "| Images |",
                   "Unclear interior frames", "Dead ReLU units", "| Model |",
                   "| prior N(0, I) |", "| MNIST test images |", "Own minus other"):
        assert header in markdown, header
    # Tables print the uncertainty beside the numbers.
    assert re.search(r"\| \d+\.\d+ ± \d", markdown)
    for answer in ANSWERS:
        # An answer runs to the next bold heading: its list items belong to it.
        answer_text = re.split(r"\n\n\*\*|\n\n#", markdown.split(answer, 1)[1], maxsplit=1)[0]
        assert re.search(r"\d+\.\d+", answer_text), f"the answer {answer!r} quotes no number"
    # Outside LaTeX math ($\tilde{x}$ is not a placeholder).
    prose = re.sub(r"\$[^$]*\$", "", markdown)
    assert not re.search(r"\{\w+[\[}]", prose), "an f-string placeholder was left unformatted"
    negative_zeros = [text for text in re.findall(r"(?<![\w.])-\d+(?:\.\d+)?", markdown)
                      if float(text) == 0]
    assert not negative_zeros, "a negative zero is printed"
    assert not re.search(r"\b1 epochs\b", markdown)
    assert "Smoke run (profile `fast`)" in markdown
    assert "**not set**" in markdown  # no group or members in the test's environment


def constant_predictor_bce(train: np.ndarray, test: np.ndarray) -> float:
    """BCE per pixel of the best constant prediction (the training set's mean), in NumPy."""
    p = float(train.mean())
    return float(np.mean(-(test * np.log(p) + (1 - test) * np.log(1 - p))))


def normalised_entropy(counts: list[int]) -> float:
    """Entropy of a histogram over its maximum, log(bins), computed here independently."""
    p = np.asarray(counts, float) / sum(counts)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / np.log(len(counts)))


def test_notebook_writes_metrics_for_every_section(executed, mnist_raw) -> None:
    _, build, _ = executed
    text = (build / "metrics.json").read_text()

    def refuse(constant: str) -> None:
        raise AssertionError(f"metrics.json is not strict JSON: it holds {constant}")

    metrics = json.loads(text, parse_constant=refuse)
    parameters = notebook_parameters()
    profile = settings.get_profile("fast")
    assert metrics["profile"] == "fast" and metrics["seed"] == parameters["SEED"]
    assert set(metrics["versions"]) >= {"tensorflow", "keras", "numpy", "python"}
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=settings.PROJECT_DIR,
                          capture_output=True, text=True).stdout.strip()
    assert metrics["commit"].startswith(head or "unknown")
    written = datetime.datetime.fromisoformat(metrics["date"])
    assert abs((datetime.datetime.now(written.tzinfo) - written).total_seconds()) < 3 * 3600

    (x_train, _), (x_test, _) = mnist_raw
    train = x_train[: profile.train_size].astype(np.float64) / 255
    test = x_test[: profile.test_size].astype(np.float64) / 255
    # Even two short epochs must beat the best constant image (a model that outputs 0.5
    # everywhere scores ln 2 = 0.693 and fails this).
    baseline = constant_predictor_bce(train, test)
    assert metrics["autoencoder"]["epochs"] == profile.autoencoder_epochs
    assert metrics["autoencoder"]["bce"] < baseline
    # The copy floor, recomputed here: the binary entropy of each grey pixel.
    t = np.clip(test, 1e-7, 1 - 1e-7)
    floor = float(np.mean(-(test * np.log(t) + (1 - test) * np.log(1 - t))))
    assert metrics["autoencoder"]["copy_bce"] == pytest.approx(floor, rel=1e-4)
    sweep = metrics["latent_size_sweep"]
    assert [row["latent_dim"] for row in sweep] == list(parameters["LATENT_SIZES"])
    assert all(row["bce"] < math.log(2) for row in sweep)
    assert len(metrics["normalisation"]) == 2 * len(parameters["Q1_SEEDS"])

    # Gaussian noise of the notebook's spread, clipped to [0, 1], drawn here independently.
    noise = np.random.default_rng(0).normal(0, parameters["NOISE_STDDEV"], test.shape)
    expected_noisy_mse = float(np.mean((np.clip(test + noise, 0, 1) - test) ** 2))
    noisy, denoiser, _ = metrics["denoising"]
    assert noisy["mse"] == pytest.approx(expected_noisy_mse, rel=0.02)
    assert denoiser["mse"] < noisy["mse"]

    vae_rows = metrics["vae_sweep"]
    assert [row["kl_weight"] for row in vae_rows] == list(parameters["KL_WEIGHTS"])
    likelihood_rows = metrics["vae_likelihood"]
    assert [row["kl_weight"] for row in likelihood_rows] == list(parameters["KL_WEIGHTS"])
    for row, likelihood in zip(vae_rows, likelihood_rows):
        assert row["epochs"] == profile.vae_epochs and row["n"] == len(test)
        # The analytic KL per dimension adds up to the KL term; the negative ELBO is the sum.
        assert sum(row["kl_per_dimension"]) == pytest.approx(row["kl"], rel=1e-6)
        assert row["neg_elbo"] == pytest.approx(row["reconstruction"] + row["kl"], rel=1e-9)
        # -log p(x) is bounded below by the copy floor, and the gap is not clearly negative.
        assert -likelihood["test_log_likelihood"] >= likelihood["floor"]
        assert likelihood["variational_gap"] > -3 * likelihood["variational_gap_se"]
        assert likelihood["likelihood_images"] == profile.likelihood_images

    assert metrics["digit_classifier"]["epochs"] == profile.classifier_epochs
    reference, *generators = metrics["generation"]
    assert reference["model"] == "MNIST test images" and reference["samples"] == len(test)
    assert len(generators) == len(parameters["KL_WEIGHTS"]) + 1  # and the baseline
    for row in metrics["generation"]:
        counts = row["digit_counts"]
        assert sum(counts) == row["samples"]
        assert row["least_digit_share"] == pytest.approx(min(counts) / sum(counts))
        assert row["digit_entropy"] == pytest.approx(normalised_entropy(counts))
    assert all(row["samples"] == parameters["SAMPLES"] for row in generators)
    interpolation = metrics["interpolation"]
    assert len(interpolation) == 2
    for row in interpolation:
        assert row["n"] == profile.interpolation_pairs
        # The largest of k steps is at least their mean, 1/k of the total, and at most all.
        assert 1 / (row["frames"] - 1) - 1e-12 <= row["smoothness"] <= 1 + 1e-12
    prior, *spaces = metrics["vae_latent_space"]
    assert prior["model"] == "prior N(0, I)" and len(spaces) == len(parameters["KL_WEIGHTS"])
    for name, run in metrics["training"].items():
        assert run["source"] == "trained" and run["seconds"] > 0, name
    # The run's estimate of the time left plans exactly the models the notebook trains.
    planned = profile.planned_models(parameters["LATENT_DIM"], parameters["LATENT_SIZES"],
                                     parameters["KL_WEIGHTS"], parameters["Q1_SEEDS"])
    assert {name: run["epochs"] for name, run in metrics["training"].items()} == planned


def test_pdf_export_holds_the_report(executed, tmp_path: Path) -> None:
    missing = build_tools.missing_pdf_tools() + [tool for tool in ("pdftotext", "pdfimages")
                                         if not shutil.which(tool)]
    if missing:
        if os.environ.get("CA4_REQUIRE_PDF") == "1":
            pytest.fail(f"CA4_REQUIRE_PDF=1 but {missing} are not installed")
        pytest.skip(f"PDF tools missing: {missing}")
    _, build, _ = executed
    pdf = build_tools.export_pdf(build / "ca4.ipynb", tmp_path / "ca4.pdf")
    assert pdf.read_bytes().startswith(b"%PDF")
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True,
                          capture_output=True, text=True).stdout
    flat = re.sub(r"\s+", " ", text)
    for heading in ("Task 1: a convolutional autoencoder", "Task 2: a variational autoencoder",
                    "Appendix", *ANSWERS):
        assert heading in flat, f"{heading!r} is not in the PDF"
    # The implementation a grader marks is printed from the module.
    for code in ("class Sampling(layers.Layer):", "def train_step(self, data",
                 "def kl_divergence(", "def reconstruction_loss(", "def build_vae_encoder("):
        assert code in flat, f"{code!r} is not in the PDF"
    # Greek letters of the Markdown reach the page (as text or math italic).
    assert re.search("[εϵ𝜀𝜖]", text) and re.search("[μ𝜇]", text) and re.search("[σ𝜎]", text)
    assert "Smoke run (profile fast): not the assignment." in flat
    # The title block (banner, title, group and members) opens page 1.
    first_page = subprocess.run(["pdftotext", "-l", "1", "-layout", str(pdf), "-"], check=True,
                                capture_output=True, text=True).stdout
    flat_first = re.sub(r"\s+", " ", first_page).strip()
    assert flat_first.startswith("Smoke run (profile fast): not the assignment.")
    assert flat_first.index(report.TITLE) < flat_first.index("The assignment")
    assert "Group not set" in flat_first and "Members not set" in flat_first
    # The explorer's place in the PDF: its one-line note, no widget.
    assert explorer.EXPLORER_NOTE in flat.replace("- ", "-"), "the explorer's note is not in the PDF"
    # Discussion cells are tagged hide-input: their answers are in the PDF, their code is not.
    assert "display(Markdown(f'''" not in text
    assert "↪" not in text, "a code line was wrapped in the PDF"
    assert not [line for line in text.splitlines()
                if progress.EPOCH_LINE.match(line) or progress.RECORD_LINE.match(line)]
    assert not re.search(r"-[0-9a-f]{16}(\.partial)?\.npz", text), \
        "cache file names leaked into the report"
    # Every figure is printed at no more than about 150 pixels per inch.
    listing = subprocess.run(["pdfimages", "-list", str(pdf)], check=True,
                             capture_output=True, text=True).stdout.splitlines()[2:]
    ppi = [int(line.split()[12]) for line in listing if line.split()[2] == "image"]
    assert len(ppi) == EXPECTED_FIGURES
    assert max(ppi) <= 150, ppi


def test_no_cell_is_silent_for_more_than_30_s(executed) -> None:
    """The run log (every line with the seconds since the start, and where each cell starts
    and ends) has no gap over 30 s: each cell prints within 30 s of its start and of its last
    line, and ends within 30 s of its last line."""
    notebook, build, _ = executed
    log = build / build_tools.LOG_NAME
    lines = build_tools.read_run_log(log)
    assert lines[-1][2].startswith("-- run finished in "), lines[-3:]
    started = [text for _, _, text in lines if build_tools.CELL_START.match(text)]
    assert len(started) == sum(1 for cell in notebook.cells
                               if cell.cell_type == "code" and cell.source.strip())
    longest = build_tools.longest_silence(log)
    assert longest is not None and longest.seconds <= 30, \
        f"a silence over 30 s in {log}:\n{build_tools.describe_silence(longest)}"

"""The student's experience in a real browser: JupyterLab runs ca4.ipynb in Chromium.

Debian's Chromium, driven by Playwright, opens the notebook in JupyterLab (free port, token,
fast profile, a fresh model cache), runs every cell with Run > Run All Cells and watches the
page while it runs: the epoch lines must appear under a training cell while that cell is
still running. Then it checks what a student sees: no error or stderr output, every figure
rendered as an image, the latent-space explorer answering a slider, and, after Restart Kernel
and Run All Cells, every model loaded from the cache. Screenshots of the first figure and of
the explorer go to build/browser/.

Needs Chromium (`make browser-tools` installs Debian's as root) and MNIST; without them the
test skips, except with CA4_REQUIRE_BROWSER=1 (CI), where it fails.
"""

from __future__ import annotations

import ast
import io
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pytest
from PIL import Image

from ca4lib import mnist, progress, settings

pytestmark = pytest.mark.slow

NOTEBOOK = settings.PROJECT_DIR / "ca4.ipynb"
SCREENSHOTS = settings.PROJECT_DIR / "build" / "browser"
# The fast profile trains its 11 models in a fresh cache: a few minutes on two shared cores.
RUN_SECONDS = 1500
CACHED_RUN_SECONDS = 600
POLL_SECONDS = 0.5
# Headless Chromium as root, on a machine without a network: no sandbox, no GPU, and none of
# the background connections (updates, sync) that a closed network refuses.
CHROMIUM_ARGUMENTS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                      "--no-first-run", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync"]
# For the test only: no autosave (the committed notebook must stay without outputs) and no
# news or update checks (no network). Neither changes how the cells run.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false",
                                                    "checkForUpdates": False},
}
STDERR = "application/vnd.jupyter.stderr"  # JupyterLab renders errors with this type too
RECORD_LINE = re.compile(r"^(\S+) (trained|from the cache|resumed): ")

# What the page shows, read in one go: each cell's kind, prompt and outputs, and the kernel.
SNAPSHOT = """() => ({
  kernel: document.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status ?? null,
  cells: [...document.querySelectorAll('.jp-Notebook .jp-Cell')].map(cell => ({
    code: cell.classList.contains('jp-CodeCell'),
    prompt: (cell.querySelector('.jp-InputPrompt')?.textContent ?? '').trim(),
    outputs: [...cell.querySelectorAll('.jp-OutputArea-output')].map(output => ({
      mime: output.dataset.mimeType ?? '',
      text: (output.dataset.mimeType ?? '').startsWith('application/vnd.jupyter.std')
            ? output.textContent : output.textContent.slice(0, 300),
      images: [...output.querySelectorAll(':scope > img')].map(
        img => img.complete && img.naturalWidth > 0),
    })),
    explorer: cell.querySelector('.ca4-latent-explorer') !== null,
  })),
})"""
# An image's pixels as the page has them (a data URL of a canvas copy).
# null when the widget replaced the image (and revoked its blob URL) while it was decoded.
PIXELS = """async (img) => {
  try { await img.decode(); } catch (error) { return null; }
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  canvas.getContext('2d').drawImage(img, 0, 0);
  return canvas.toDataURL();
}"""


def require(condition: bool, reason: str) -> None:
    """Skip for a missing prerequisite, or fail when CA4_REQUIRE_BROWSER=1 (CI)."""
    if condition:
        return
    if os.environ.get("CA4_REQUIRE_BROWSER") == "1":
        pytest.fail(f"CA4_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def find_chromium() -> str | None:
    return os.environ.get("CA4_CHROMIUM") or shutil.which("chromium")


def figure_calls(notebook: nbformat.NotebookNode) -> dict[int, int]:
    """Count each code cell's figure calls: `plt.show()` and `figures.show_figure(...)`.

    One call shows one figure, so a call inside a loop cannot be counted and is refused.
    """
    counts = {}
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines()
                           if not line.lstrip().startswith(("%", "!")))
        tree = ast.parse(source)
        loops = [node for node in ast.walk(tree) if isinstance(node, (ast.For, ast.While,
                                                                      ast.comprehension))]
        in_loops = {id(inner) for loop in loops for inner in ast.walk(loop)}
        calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
                 and isinstance(node.func, ast.Attribute)
                 and isinstance(node.func.value, ast.Name)
                 and (node.func.value.id, node.func.attr) in {("plt", "show"),
                                                              ("figures", "show_figure")}]
        assert not [call for call in calls if id(call) in in_loops], (
            f"cell {index} shows figures in a loop; the test counts one figure per call")
        if calls:
            counts[index] = len(calls)
    return counts


def describe(notebook: nbformat.NotebookNode, index: int) -> str:
    first = notebook.cells[index].source.strip().splitlines()[0][:70]
    return f"cell {index} ({first!r})"


def settle(locator: Any) -> None:
    """Scroll an element into view until it stays put: JupyterLab lays out cells away from
    the view only when they are scrolled to, which moves what follows them."""
    for _ in range(40):
        locator.scroll_into_view_if_needed()
        box = locator.bounding_box()
        time.sleep(0.25)
        if box is not None and box == locator.bounding_box():
            return


def steady_screenshot(locator: Any, path: Path) -> None:
    settle(locator)
    locator.screenshot(path=path)


def similarity(path: Path, data_url: str) -> float:
    """Correlation of a screenshot's grey levels with an image's own pixels, both shrunk to
    a quarter of the screenshot's size (a figure's thin lines then survive the scaling)."""
    import base64

    shot = Image.open(path).convert("L")
    image = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))
    image = image.convert("RGBA")
    paper = Image.new("RGBA", image.size, "white")
    image = Image.alpha_composite(paper, image).convert("L")
    size = (max(1, shot.width // 4), max(1, shot.height // 4))
    a, b = (np.asarray(picture.resize(size, Image.Resampling.BOX), np.float64).ravel()
            for picture in (shot, image))
    return float(np.corrcoef(a, b)[0, 1]) if a.std() and b.std() else 0.0


def not_blank(path: Path) -> tuple[bool, str]:
    """Whether a screenshot shows something: varied pixels, not one flat colour."""
    pixels = np.asarray(Image.open(path).convert("L"), np.float64)
    inked = float(np.mean(np.abs(pixels - np.median(pixels)) > 40))
    return pixels.std() > 5 and inked > 0.005, (
        f"{path}: {pixels.shape[1]}x{pixels.shape[0]} px, grey std {pixels.std():.1f}, "
        f"{inked:.1%} of pixels far from the background")


class NotebookPage:
    """The notebook open in JupyterLab, read through the DOM."""

    def __init__(self, page: Any, notebook: nbformat.NotebookNode) -> None:
        self.page, self.notebook = page, notebook
        self.started = time.monotonic()
        self.log: list[str] = []

    def say(self, message: str) -> None:
        line = f"[{time.monotonic() - self.started:6.1f} s] {message}"
        self.log.append(line)
        print(line, flush=True)

    def snapshot(self) -> dict[str, Any]:
        return self.page.evaluate(SNAPSHOT)

    def menu(self, menu: str, item: str) -> None:
        self.page.click(f".lm-MenuBar-itemLabel:text-is('{menu}')")
        self.page.click(f".lm-Menu-itemLabel:text-is('{item}')")

    def wait_for_idle_kernel(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (state := self.snapshot())["kernel"] != "idle" or \
                len(state["cells"]) != len(self.notebook.cells):
            assert time.monotonic() < deadline, (
                f"after {seconds:.0f} s the kernel is {state['kernel']!r} and the page shows "
                f"{len(state['cells'])} of {len(self.notebook.cells)} cells")
            time.sleep(POLL_SECONDS)

    def start_run(self, menu: str, item: str, confirm: bool = False) -> None:
        """Choose a Run menu item and wait until a cell is queued or running."""
        for attempt in range(3):
            self.menu(menu, item)
            if confirm:
                self.page.click(".jp-Dialog .jp-mod-accept")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if any(cell["prompt"] == "[*]:" for cell in self.snapshot()["cells"]):
                    self.say(f"{menu} > {item}: cells are running")
                    return
                time.sleep(POLL_SECONDS)
            self.say(f"{menu} > {item}: nothing started after 30 s (attempt {attempt + 1})")
        pytest.fail(f"{menu} > {item} did not start the notebook")

    def watch_run(self, seconds: float) -> tuple[dict[str, Any], set[tuple[int, str]]]:
        """Poll until no cell is queued or running and the kernel is idle.

        Returns the last snapshot and the epoch lines seen under a cell while that cell was
        still running ([*]), as (cell index, line).
        """
        deadline = time.monotonic() + seconds
        streamed: set[tuple[int, str]] = set()
        running, quiet = None, 0
        while True:
            state = self.snapshot()
            busy = [i for i, cell in enumerate(state["cells"]) if cell["prompt"] == "[*]:"]
            for index in busy:
                for output in state["cells"][index]["outputs"]:
                    if output["mime"] == "application/vnd.jupyter.stdout":
                        streamed |= {(index, line) for line in output["text"].splitlines()
                                     if progress.EPOCH_LINE.match(line)}
            now = busy[0] if busy else None
            if now != running and now is not None:
                self.say(f"running {describe(self.notebook, now)}")
            running = now
            quiet = quiet + 1 if not busy and state["kernel"] == "idle" else 0
            if quiet >= 3:
                return state, streamed
            if time.monotonic() > deadline:
                where = describe(self.notebook, running) if running is not None else "none"
                pytest.fail(f"the notebook did not finish within {seconds:.0f} s; running: "
                            f"{where}; kernel {state['kernel']!r}\n" + "\n".join(self.log))
            time.sleep(POLL_SECONDS)

    def problems(self, state: dict[str, Any]) -> list[str]:
        """Error and stderr outputs with their text, then the code cells that did not run."""
        found, skipped = [], []
        for index, cell in enumerate(state["cells"]):
            if cell["code"] and not re.fullmatch(r"\[\d+\]:", cell["prompt"]):
                skipped.append(index)
            for output in cell["outputs"]:
                if output["mime"] == STDERR:
                    kind = "raised" if "Traceback" in output["text"] else "wrote to stderr"
                    found.append(f"{describe(self.notebook, index)} {kind}:\n"
                                 f"{output['text'][-1500:]}")
        if skipped:
            found.append(f"{len(skipped)} code cell(s) did not run: "
                         f"{describe(self.notebook, skipped[0])} and cells "
                         f"{', '.join(map(str, skipped[1:]))}" if len(skipped) > 1 else
                         f"{describe(self.notebook, skipped[0])} did not run")
        return found

    def stdout_lines(self, state: dict[str, Any]) -> list[tuple[int, str]]:
        return [(index, line) for index, cell in enumerate(state["cells"])
                for output in cell["outputs"]
                if output["mime"] == "application/vnd.jupyter.stdout"
                for line in output["text"].splitlines()]


@pytest.fixture
def browser_prerequisites():
    chromium = find_chromium()
    require(chromium is not None and os.access(chromium, os.X_OK),
            "Chromium is not installed (as root: make browser-tools, or "
            "apt-get install --no-install-recommends chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "Playwright is not installed (make venv installs requirements.txt)")
    require(mnist.find_mnist() is not None,
            "MNIST is not available: set CA4_MNIST or link data/mnist.npz")
    return chromium, sync_playwright


def test_student_runs_the_notebook_in_jupyterlab(browser_prerequisites, jupyter_lab, tmp_path):
    chromium, sync_playwright = browser_prerequisites
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    committed = NOTEBOOK.read_bytes()
    figure_counts = figure_calls(notebook)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()

    (tmp_path / "checkpoints").mkdir()
    # The kernel inherits the server's environment: the fast profile and a fresh model cache,
    # so the small models really train here; no test-only matplotlib or TensorFlow settings.
    server = jupyter_lab(
        environment={"CA4_PROFILE": "fast", "CA4_BUILD_DIR": str(tmp_path / "build"),
                     "MPLBACKEND": None, "TF_CPP_MIN_LOG_LEVEL": None},
        settings=LAB_SETTINGS,
        arguments=[f"--FileCheckpoints.root_dir={tmp_path / 'checkpoints'}"])
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True,
                                                 chromium_sandbox=False,
                                                 args=CHROMIUM_ARGUMENTS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(60_000)
                page.goto(server.url("lab/tree/ca4.ipynb"))
                lab = NotebookPage(page, notebook)
                lab.say(f"Chromium {browser.version}: JupyterLab at {server.base}")
                lab.wait_for_idle_kernel(180)
                lab.say("the notebook is open and its kernel idle")

                # Run > Run All Cells, as a student does, watching the page while it runs.
                lab.start_run("Run", "Run All Cells")
                state, streamed = lab.watch_run(RUN_SECONDS)
                lab.say("Run All Cells finished")
                problems = lab.problems(state)
                assert not problems, ("what a student sees after Run All Cells:\n"
                                      + "\n\n".join(problems))

                # Progress: an epoch line that is not a model's last one was on the page
                # while its cell still ran (the next epoch was training).
                epoch_lines = [(i, line) for i, line in lab.stdout_lines(state)
                               if progress.EPOCH_LINE.match(line)]
                assert epoch_lines, "no epoch line in any cell's output"
                early = [(i, line) for i, line in epoch_lines
                         if (m := re.search(r"epoch (\d+)/(\d+)", line))
                         and int(m[1]) < int(m[2])]
                assert early, "the fast profile has no model with more than one epoch"
                late = [f"{describe(notebook, i)}: {line.strip()}" for i, line in early
                        if (i, line) not in streamed]
                assert not late, ("epoch lines that appeared only after their cell had "
                                  "finished:\n" + "\n".join(late))
                lab.say(f"{len(streamed)} epoch lines seen while their cells ran, in "
                        f"{len({i for i, _ in streamed})} training cells")

                # Every figure rendered as an image, cell by cell.
                shown = {i: sum(sum(o["images"]) for o in cell["outputs"]
                                if o["mime"] == "image/png")
                         for i, cell in enumerate(state["cells"])}
                broken = {i: sum(not ok for o in cell["outputs"] if o["mime"] == "image/png"
                                 for ok in o["images"])
                          for i, cell in enumerate(state["cells"])}
                wrong = [f"{describe(notebook, i)}: {figure_counts.get(i, 0)} figure call(s), "
                         f"{shown[i]} image(s) rendered"
                         + (f", {broken[i]} image(s) that did not load" if broken[i] else "")
                         for i in range(len(notebook.cells))
                         if shown[i] != figure_counts.get(i, 0) or broken[i]]
                assert not wrong, (f"expected {sum(figure_counts.values())} figures, "
                                   f"{sum(shown.values())} rendered:\n" + "\n".join(wrong))
                first_figure = page.locator(
                    '.jp-OutputArea-output[data-mime-type="image/png"] > img').first
                steady_screenshot(first_figure, SCREENSHOTS / "first-figure.png")
                match = similarity(SCREENSHOTS / "first-figure.png",
                                   page.evaluate(PIXELS, first_figure.element_handle()))
                assert match > 0.8, (f"the screenshot of the first figure does not show it "
                                     f"(correlation {match:.2f} with the figure's pixels)")
                lab.say(f"{sum(shown.values())} figures rendered")

                # The explorer: a widget, and it answers a slider with a new decoded digit.
                cells = [i for i, cell in enumerate(state["cells"]) if cell["explorer"]]
                explorer_cells = [i for i, cell in enumerate(notebook.cells)
                                  if "explorer.latent_explorer(" in cell.source]
                assert len(explorer_cells) == 1, "the notebook should build one explorer"
                assert cells == explorer_cells, (
                    f"the explorer widget is not rendered under "
                    f"{describe(notebook, explorer_cells[0])}; the cell shows: "
                    f"{[o['text'][:200] for o in state['cells'][explorer_cells[0]]['outputs']]}")
                explorer = page.locator(".ca4-latent-explorer")
                settle(explorer)
                digit = explorer.locator("img").first
                reading = explorer.locator(".widget-label", has_text="classifier reads")
                readout = explorer.locator(".widget-readout").first
                before = (digit.get_attribute("src"), page.evaluate(PIXELS, digit.element_handle()),
                          reading.text_content())
                assert before[1] is not None, "the explorer's digit image does not decode"
                assert re.fullmatch(r"classifier reads: digit \d \(p = \d\.\d\d\)", before[2]), (
                    f"the explorer's classifier line reads {before[2]!r}")
                handle = explorer.locator(".noUi-handle").first
                handle.focus()
                for _ in range(12):
                    handle.press("ArrowRight")
                deadline = time.monotonic() + 15
                while True:
                    after = (digit.get_attribute("src"),
                             page.evaluate(PIXELS, digit.element_handle()))
                    if after[0] != before[0] and after[1] not in (None, before[1]):
                        break
                    assert time.monotonic() < deadline, (
                        "the explorer did not respond: 15 s after moving the z[0] slider "
                        f"(now {readout.text_content()}) the decoded digit is unchanged"
                        + (" (same image)" if after[0] == before[0] else " (same pixels)"))
                    time.sleep(0.2)
                lab.say(f"the explorer answered the slider: z[0] = {readout.text_content()}, "
                        f"{reading.text_content()}")
                time.sleep(1)  # let the marker's image settle before the screenshot
                steady_screenshot(explorer, SCREENSHOTS / "explorer.png")
                for name in ("first-figure.png", "explorer.png"):
                    ok, description = not_blank(SCREENSHOTS / name)
                    assert ok, f"the screenshot is blank: {description}"
                    lab.say(f"screenshot {description}")

                # Kernel restart and Run All: every model comes from the cache.
                trained = {m[1] for _, line in lab.stdout_lines(state)
                           if (m := RECORD_LINE.match(line)) and m[2] == "trained"}
                assert trained, "no model was trained in the fresh cache"
                lab.start_run("Run", "Restart Kernel and Run All Cells…", confirm=True)
                state, _ = lab.watch_run(CACHED_RUN_SECONDS)
                lab.say("Restart Kernel and Run All Cells finished")
                problems = lab.problems(state)
                assert not problems, ("after a kernel restart and Run All:\n"
                                      + "\n\n".join(problems))
                records = {m[1]: m[2] for _, line in lab.stdout_lines(state)
                           if (m := RECORD_LINE.match(line))}
                assert records == dict.fromkeys(trained, "from the cache"), (
                    f"after a kernel restart, expected every model from the cache: {records}")
                assert not [line for _, line in lab.stdout_lines(state)
                            if progress.EPOCH_LINE.match(line)], "a model trained again"
            finally:
                browser.close()
    finally:
        if NOTEBOOK.read_bytes() != committed:
            NOTEBOOK.write_bytes(committed)
            pytest.fail("JupyterLab wrote to ca4.ipynb during the test (restored)")

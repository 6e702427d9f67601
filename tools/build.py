"""Run the ca4 notebook headlessly and export its PDF: the build, not the coursework.

`make run`, `make execute`, `make pdf` and the tests use this module:

    python -m tools.build run [--profile P]      execute, then pdf, in one process
    python -m tools.build preflight [--no-pdf]   check MNIST and the PDF tools before a run
    python -m tools.build execute [--profile P]  preflight --no-pdf, then papermill:
                                                 build/ca4.ipynb, its progress streamed
    python -m tools.build pdf                    nbconvert: build/ca4.pdf from build/ca4.ipynb
    python -m tools.build silences [LOG]         the longest gaps between the lines of a run
                                                 log (default build/run.log)

Executing writes a run log beside the executed notebook (build/run.log): what the terminal
shows, and a line where each code cell starts and ends, each line stamped with the seconds
since the start of the run, `[  123.4] text`, so that silences can be found afterwards.

This process never imports TensorFlow or the coursework module: what it needs (the build folder,
the MNIST check, the epoch-line pattern, durations) comes from rooms of `ca4lib` that import no
TensorFlow, and it starts no thread. The kernel alone imports the coursework, so nothing here
can race the kernel's start-up imports.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ca4lib.mnist import MnistFileError, load_mnist
from ca4lib.progress import EPOCH_LINE, RECORD_LINE, TICKER_LINE, format_duration
from ca4lib.settings import PROJECT_DIR, build_dir

PDF_TOOLS = {"xelatex": "texlive-xetex", "pandoc": "pandoc"}
PDF_PACKAGES = "texlive-xetex texlive-fonts-recommended texlive-plain-generic pandoc"
# nbconvert's LaTeX template ("latex"), changed for the report: no LaTeX title (the notebook's
# title block is), unnumbered headings (they read as in the notebook), code in \small so that
# lines of up to 88 characters fit without wrapping, and a character missing from the fonts
# stops the export (\tracinglostchars=3) instead of silently dropping out.
PDF_TEMPLATE = r"""((*- extends 'index.tex.j2' -*))
((* block commands *))
((( super() )))
\setcounter{secnumdepth}{0}
\tracinglostchars=3
\fvset{fontsize=\small}
\setlength{\LTcapwidth}{\linewidth}
\captionsetup[table]{format=plain,labelformat=empty,justification=justified,
                     singlelinecheck=false,skip=4pt,width=\linewidth}
((* endblock commands *))
((* block maketitle *))((* endblock maketitle *))
((* block body -*))
((( super() | keep_together )))
((* endblock body *))
"""
# A table and the caption above it, a figure and the caption below it: one block each, never
# split across pages (the page breaks before the block instead).
LONGTABLE = re.compile(r"\\begin\{longtable\}.*?\\end\{longtable\}", re.S)
CAPTION_AND_TABLE = re.compile(r"(\\textbf\{Table \d+\.\}(?:(?!\n\s*\n).)*?)\s*\n\s*\n\s*"
                               r"(\\begin\{longtable\}(?:\[[^\]]*\])?\{.*?@\{\}\}\n)", re.S)
FIGURE_AND_CAPTION = re.compile(
    r"(\\begin\{center\}\s*\\adjustimage\{[^\n]*\}\s*\\end\{center\}\s*"
    r"\{ \\hspace\*\{\\fill\} \\\\\})\s*(\\textbf\{Figure \d+\.\}.*?)\n\s*\n", re.S)
# The cell that prints the title block (group, members, smoke-run banner) is tagged so; the
# PDF puts it first, above the parameters cell that must precede it in the notebook.
TITLE_TAG = "title"
# The run log: beside the executed notebook; every line '[  123.4] text', the seconds since the
# start of the run. Lines the terminal did not show (the run's start and end, where each code
# cell starts and ends) begin with LOG_NOTE.
LOG_NAME = "run.log"
LOG_LINE = re.compile(r"^\[ *(\d+(?:\.\d+)?)\] ?(.*)$")
LOG_NOTE = "-- "
CELL_START = re.compile(rf"^{re.escape(LOG_NOTE)}cell \d+ starts")


def clock(seconds: float) -> str:
    """Format the time since a run started for its progress lines: '0:12:40'."""
    return str(datetime.timedelta(seconds=round(seconds)))


def missing_pdf_tools() -> list[str]:
    """Return the PDF tools (xelatex, pandoc) not on PATH."""
    return [tool for tool in PDF_TOOLS if shutil.which(tool) is None]


def pdf_tools_message() -> str:
    """Return how to install the missing PDF tools, or an empty string when none is missing."""
    missing = missing_pdf_tools()
    if not missing:
        return ""
    return (f"PDF export needs {', '.join(missing)}, which is not installed. On Debian/Ubuntu: "
            f"sudo apt-get install --no-install-recommends {PDF_PACKAGES}")


def section_titles(notebook: Any) -> dict[str, str]:
    """Map each code cell's id to the headings it sits under ('Task 1 > Training')."""
    titles: dict[str, str] = {}
    headings: dict[int, str] = {}
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for match in re.finditer(r"^(#{1,3})\s+(.+)$", cell.source, re.MULTILINE):
                level = len(match[1])
                headings = {k: v for k, v in headings.items() if k < level}
                headings[level] = match[2].strip()
        elif cell.cell_type == "code":
            titles[cell.id] = " > ".join(headings[level] for level in sorted(headings))
    return titles


class RunLog:
    """A log file in which every line carries the seconds since the run started: `[  123.4] text`.

    `tee(stream)` gives a stream that passes what is written to STREAM (None: to nothing) and
    writes it to the log line by line. A line is stamped when its end arrives, so a gap in the
    log is never shorter than the silence it stands for. Every line is flushed at once: a run
    can be followed with `tail -f`, and a run that is killed keeps its log.
    """

    def __init__(self, path: str | os.PathLike,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.path = Path(path)
        self.clock = clock
        self.started = clock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.path.open("w", encoding="utf-8")
        self.tees: list[LogTee] = []

    def elapsed(self) -> float:
        """Seconds since the log was opened (the start of the run)."""
        return self.clock() - self.started

    def write_lines(self, text: str) -> None:
        """Write TEXT to the log, each of its lines stamped with the time now."""
        stamp = f"[{self.elapsed():7.1f}]"
        self.file.write("".join(f"{stamp} {line}\n" for line in text.split("\n")))
        self.file.flush()

    def note(self, text: str) -> None:
        """A line for the log alone (not the terminal), marked with LOG_NOTE."""
        self.end_lines()
        self.write_lines(LOG_NOTE + text)

    def tee(self, stream: Any = None) -> LogTee:
        """A stream for papermill's stdout_file or stderr_file: to STREAM and to this log."""
        tee = LogTee(self, stream)
        self.tees.append(tee)
        return tee

    def end_lines(self) -> None:
        """Log the unfinished lines of the tees as they are (at the end of a cell)."""
        for tee in self.tees:
            tee.end_line()

    def close(self) -> None:
        self.end_lines()
        self.file.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


class LogTee:
    """Text written here goes to a stream (if any) at once and to a RunLog by whole lines."""

    def __init__(self, log: RunLog, stream: Any = None) -> None:
        self.log, self.stream, self.pending = log, stream, ""

    def write(self, text: str) -> int:
        if self.stream is not None:
            self.stream.write(text)
        # A carriage return redraws the line: in the log it starts a new one.
        lines = (self.pending + text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self.pending = lines.pop()
        if lines:
            self.log.write_lines("\n".join(lines))
        return len(text)

    def flush(self) -> None:
        if self.stream is not None:
            self.stream.flush()

    def end_line(self) -> None:
        if self.pending:
            self.log.write_lines(self.pending)
            self.pending = ""


def execute_notebook(source: str | os.PathLike, target: str | os.PathLike, profile: str,
                     timeout: int = 4 * 3600, stream: Any = sys.stdout,
                     log: str | os.PathLike | None = None) -> Path:
    """Execute a notebook headlessly with papermill, PROFILE injected as a parameter.

    With a `stream`, what the notebook prints reaches it as it happens, each section's
    heading when the run gets there, and the time since the start. The same lines, and where
    each code cell starts and ends, go to the run log LOG (default: LOG_NAME beside TARGET),
    each stamped with the seconds since the start (see RunLog and `silences`).
    """
    import nbformat
    import papermill
    from traitlets.config import Config

    notebook = nbformat.read(source, as_version=4)
    titles = section_titles(notebook)
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    with RunLog(Path(target).with_name(LOG_NAME) if log is None else log) as run_log:
        out, err = run_log.tee(stream), run_log.tee(stream)
        shown = [""]

        def announce(cell: Any, cell_index: int, **_: Any) -> None:
            if cell.cell_type != "code" or not cell.source.strip():
                return
            title = titles.get(cell.get("id"), "")
            first = cell.source.strip().splitlines()[0]
            run_log.note(f"cell {cell_index} starts ({title or 'no section'}): {first[:60]}")
            if title and title != shown[0]:
                shown[0] = title
                out.write(f"[{clock(run_log.elapsed())}] {title}\n")
                out.flush()

        def executed(cell: Any, cell_index: int, **_: Any) -> None:
            run_log.note(f"cell {cell_index} ends")

        run_log.note(f"run of {Path(source).name} (profile {profile!r}) into {target}, "
                     f"started {datetime.datetime.now().isoformat(timespec='seconds')}")
        try:
            papermill.execute_notebook(
                str(source), str(target), parameters={"PROFILE": profile},
                kernel_name="python3", cwd=str(PROJECT_DIR), progress_bar=False,
                stdout_file=out, stderr_file=err, execution_timeout=timeout,
                on_cell_start=announce, on_cell_executed=executed,
                # Unix sockets between runner and kernel: nothing on TCP, and no warning about it.
                config=Config({"KernelManager": {"transport": "ipc"}}))
        except BaseException as error:
            run_log.note(f"run stopped after {format_duration(run_log.elapsed())}: "
                         f"{type(error).__name__}: {str(error).strip()[:200]}")
            raise
        run_log.note(f"run finished in {format_duration(run_log.elapsed())}")
    return Path(target)


@dataclasses.dataclass(frozen=True)
class Silence:
    """A gap between two consecutive lines of a run log: SECONDS long, from AT seconds into the
    run, ending at line number LINE (counted from 1); the lines on either side, and the cell
    in which it ended ('cell 14 (section): its first line'; '' before the first cell)."""

    seconds: float
    at: float
    line: int
    before: str
    after: str
    cell: str


def read_run_log(path: str | os.PathLike) -> list[tuple[int, float, str]]:
    """The lines of a run log as (line number, seconds since the start, text)."""
    entries = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), start=1):
        if not line:
            continue
        match = LOG_LINE.match(line)
        if match is None:
            raise ValueError(f"{path}, line {number}: not a run-log line '[seconds] text': "
                             f"{line[:80]!r}")
        entries.append((number, float(match[1]), match[2]))
    return entries


def silences(path: str | os.PathLike, terminal_only: bool = False) -> list[Silence]:
    """Every gap between consecutive lines of the run log at PATH, longest first.

    With `terminal_only`, the log's own LOG_NOTE lines (where cells start and end) do not
    count as lines: the silences a reader of the terminal saw, across cells.
    """
    entries, gaps, cell = read_run_log(path), [], ""
    previous = None
    for number, seconds, text in entries:
        if previous is not None and previous[1] > seconds:
            raise ValueError(f"{path}, line {number}: the time goes back, from "
                             f"{previous[1]} s to {seconds} s")
        if CELL_START.match(text):
            cell = text.removeprefix(LOG_NOTE).replace(" starts", "", 1)
        if terminal_only and text.startswith(LOG_NOTE):
            continue
        if previous is not None:
            gaps.append(Silence(round(seconds - previous[1], 1), previous[1], number,
                                previous[2], text, cell))
        previous = (number, seconds, text)
    return sorted(gaps, key=lambda gap: (-gap.seconds, gap.line))


def longest_silence(path: str | os.PathLike, terminal_only: bool = False) -> Silence | None:
    """The longest gap between consecutive lines of the run log at PATH (None: under 2 lines)."""
    gaps = silences(path, terminal_only)
    return gaps[0] if gaps else None


def describe_silence(gap: Silence) -> str:
    """Two lines for a person: how long, when, in which cell, and the lines around it."""
    where = f"in {gap.cell}" if gap.cell else "before the first cell"
    return (f"{gap.seconds:7.1f} s  from {gap.at:.1f} s, line {gap.line}, {where}\n"
            f"           {gap.before[:100]!r} -> {gap.after[:100]!r}")


def keep_together(latex: str) -> str:
    """Keep each table with its caption, and each figure with its caption, on one page.

    A table's caption moves into the table as its unnumbered longtable caption (the number is
    the report's own) and its rows end in `\\\\*`, where longtable may not break; a figure and
    the caption under it share a minipage.
    """
    latex = CAPTION_AND_TABLE.sub(
        lambda found: f"{found.group(2)}\\caption*{{{found.group(1).strip()}}}\\tabularnewline\n",
        latex)
    latex = LONGTABLE.sub(lambda table: table.group(0).replace("\\\\\n", "\\\\*\n"), latex)
    return FIGURE_AND_CAPTION.sub(
        lambda found: (f"\\noindent\\begin{{minipage}}{{\\linewidth}}\n{found.group(1)}\n"
                       f"{found.group(2)}\n\\end{{minipage}}\n\n"), latex)


def export_pdf(notebook_path: str | os.PathLike, pdf_path: str | os.PathLike) -> Path:
    """Export an executed notebook to the report PDF with nbconvert.

    Cells tagged `hide-input` show their output only; the cell tagged TITLE_TAG comes first;
    progress and training-record lines are dropped; tables and figures stay with their
    captions (keep_together); the LaTeX template is PDF_TEMPLATE.
    """
    import jinja2
    import nbconvert
    import nbformat
    from traitlets.config import Config

    class ReportLayout(nbconvert.preprocessors.Preprocessor):
        """Put the title cell first; remove progress and record lines from printed output."""

        def preprocess(self, notebook: Any, resources: Any) -> tuple[Any, Any]:
            titles = [cell for cell in notebook.cells
                      if TITLE_TAG in cell.metadata.get("tags", [])]
            notebook.cells = titles + [cell for cell in notebook.cells if cell not in titles]
            return super().preprocess(notebook, resources)

        def preprocess_cell(self, cell: Any, resources: Any, index: int) -> tuple[Any, Any]:
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream":
                    lines = output.text.splitlines(keepends=True)
                    output.text = "".join(line for line in lines
                                          if not any(pattern.match(line) for pattern in (
                                              EPOCH_LINE, RECORD_LINE, TICKER_LINE)))
            if "outputs" in cell:  # an output left empty would still take its space
                cell.outputs = [output for output in cell.outputs
                                if output.get("output_type") != "stream" or output.text.strip()]
            return cell, resources

    message = pdf_tools_message()
    if message:
        raise RuntimeError(message)
    config = Config()
    config.TagRemovePreprocessor.enabled = True
    config.TagRemovePreprocessor.remove_input_tags = ("hide-input",)
    # papermill's copy of the parameters repeats the first cell; the title block names the profile.
    config.TagRemovePreprocessor.remove_cell_tags = ("injected-parameters",)
    # Two xelatex passes settle the PDF's bookmarks; nbconvert's default third changes nothing.
    exporter = nbconvert.PDFExporter(
        config=config, template_file="ca4_report.tex.j2", latex_count=2,
        extra_loaders=[jinja2.DictLoader({"ca4_report.tex.j2": PDF_TEMPLATE})])
    exporter.register_preprocessor(ReportLayout, enabled=True)
    exporter.register_filter("keep_together", keep_together)
    notebook = nbformat.read(Path(notebook_path), as_version=4)
    body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": "ca4"}})
    pdf_path = Path(pdf_path)
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    pdf_path.write_bytes(body)
    return pdf_path


def preflight(need_pdf: bool = True) -> None:
    """Fail fast, before any training: MNIST must be found and checked, the PDF tools present."""
    load_mnist()
    if need_pdf and missing_pdf_tools():
        raise SystemExit(pdf_tools_message())


def run(profile: str, notebook: Path, pdf: Path) -> None:
    """Execute and export, printing the time of each step and of the whole.

    The PDF tools are checked first; MNIST and the profile are checked by the notebook's
    first cells, seconds into the run.
    """
    started = time.perf_counter()
    message = pdf_tools_message()
    if message:
        raise SystemExit(message)
    print(f"executing ca4.ipynb, profile {profile!r} -> {notebook} "
          f"(log with times: {notebook.with_name(LOG_NAME)})")
    execute_notebook(PROJECT_DIR / "ca4.ipynb", notebook, profile)
    executed = time.perf_counter()
    print(f"executed in {format_duration(executed - started)}")
    export_pdf(notebook, pdf)
    print(f"wrote {pdf} in {format_duration(time.perf_counter() - executed)}")
    print(f"make run ({profile}) took {format_duration(time.perf_counter() - started)}: "
          f"{notebook}, {pdf}, {notebook.parent / 'metrics.json'}")


def print_silences(log: str, top: int = 5, over: float | None = None,
                   terminal_only: bool = False) -> int:
    """Print the TOP longest gaps of a run log; 1 when one is longer than OVER seconds, else 0."""
    try:
        gaps = silences(log, terminal_only)
        entries = read_run_log(log)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    span = entries[-1][1] if entries else 0.0
    if terminal_only:
        lines = sum(not text.startswith(LOG_NOTE) for _, _, text in entries)
        counted = f"{lines} lines the terminal showed"
    else:
        counted = f"{len(entries)} lines"
    print(f"{log}: {counted} over {span:.1f} s; the longest silences:")
    for gap in gaps[:top]:
        print(describe_silence(gap))
    if not gaps:
        print("  none (fewer than two lines)")
    if over is not None and gaps and gaps[0].seconds > over:
        print(f"the longest silence, {gaps[0].seconds:.1f} s, is over {over:g} s")
        return 1
    return 0


def main(arguments: Sequence[str] | None = None) -> int:
    """Command line: `run`, `preflight`, `execute` and `pdf` for the Makefile; `silences`."""
    parser = argparse.ArgumentParser(prog="python -m tools.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    everything = commands.add_parser("run", help="execute the notebook and export the PDF")
    check = commands.add_parser("preflight", help="check MNIST and the PDF tools before a run")
    check.add_argument("--no-pdf", action="store_true", help="do not require the PDF tools")
    execute = commands.add_parser("execute", help="execute the notebook headlessly")
    for command in (everything, execute):
        command.add_argument("--profile", default=os.environ.get("CA4_PROFILE", "full"))
    execute.add_argument("--source", default=str(PROJECT_DIR / "ca4.ipynb"))
    execute.add_argument("--target", default=str(build_dir() / "ca4.ipynb"))
    pdf = commands.add_parser("pdf", help="export the executed notebook to PDF")
    pdf.add_argument("--source", default=str(build_dir() / "ca4.ipynb"))
    pdf.add_argument("--target", default=str(build_dir() / "ca4.pdf"))
    quiet = commands.add_parser("silences", help="the longest gaps between a run log's lines")
    quiet.add_argument("log", nargs="?", default=str(build_dir() / LOG_NAME),
                       help=f"a run log (default {build_dir() / LOG_NAME})")
    quiet.add_argument("--top", type=int, default=5, help="how many gaps to show (default 5)")
    quiet.add_argument("--over", type=float, default=None, metavar="SECONDS",
                       help="exit with 1 when a gap is longer than SECONDS")
    quiet.add_argument("--terminal", action="store_true",
                       help="count only the lines the terminal showed, not where cells start "
                            "and end")
    options = parser.parse_args(arguments)
    if options.command == "silences":
        return print_silences(options.log, options.top, options.over, options.terminal)
    import papermill

    try:
        if options.command == "run":
            run(options.profile, build_dir() / "ca4.ipynb", build_dir() / "ca4.pdf")
        elif options.command == "preflight":
            preflight(need_pdf=not options.no_pdf)
            print("preflight: MNIST found and checked"
                  + ("" if options.no_pdf else "; PDF tools present"))
        elif options.command == "execute":
            started = time.perf_counter()
            preflight(need_pdf=False)
            print(f"executing ca4.ipynb, profile {options.profile!r} -> {options.target} "
                  f"(log with times: {Path(options.target).with_name(LOG_NAME)})")
            execute_notebook(options.source, options.target, options.profile)
            print(f"executed in {format_duration(time.perf_counter() - started)}")
        else:
            export_pdf(options.source, options.target)
            print(f"wrote {options.target}")
    except papermill.PapermillExecutionError as error:
        # The notebook stopped: its own message (a missing MNIST, a wrong CA4_PROFILE), not
        # papermill's traceback; the executed notebook keeps the whole traceback.
        print(f"error: {error.ename}: {error.evalue}", file=sys.stderr)
        return 2
    except MnistFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

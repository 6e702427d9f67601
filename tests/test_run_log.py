"""The run log of tools.build: every line stamped with the seconds since the start, and the
gaps between lines read back (constructed logs and a stand-in for papermill; no notebook runs)."""

from __future__ import annotations

import io
from pathlib import Path

import nbformat
import papermill
import pytest

from ca4lib import settings
from tools import build


class FakeClock:
    """A clock that moves only when told: `clock.now += 12.5`."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def write_log(path: Path, lines: list[tuple[float, str]]) -> Path:
    path.write_text("".join(f"[{seconds:7.1f}] {text}\n" for seconds, text in lines))
    return path


def test_each_line_carries_the_seconds_since_the_start(tmp_path):
    clock = FakeClock()
    with build.RunLog(tmp_path / "run.log", clock=clock) as log:
        log.write_lines("first")
        clock.now += 2.5
        log.write_lines("second\nthird")
        clock.now += 12345.0
        log.write_lines("late")
    assert (tmp_path / "run.log").read_text() == (
        "[    0.0] first\n[    2.5] second\n[    2.5] third\n[12347.5] late\n")
    assert build.read_run_log(tmp_path / "run.log") == [
        (1, 0.0, "first"), (2, 2.5, "second"), (3, 2.5, "third"), (4, 12347.5, "late")]


def test_tee_passes_everything_on_at_once_and_logs_a_line_when_it_ends(tmp_path):
    clock, terminal = FakeClock(), io.StringIO()
    log = build.RunLog(tmp_path / "run.log", clock=clock)
    tee = log.tee(terminal)
    tee.write("epoch 1 ")
    clock.now += 40.0
    tee.write("done\nepoch 2")  # the first line ends 40 s in; the second has not ended yet
    assert terminal.getvalue() == "epoch 1 done\nepoch 2"
    # Flushed line by line: a run in progress, or one that was killed, has its log.
    assert (tmp_path / "run.log").read_text() == "[   40.0] epoch 1 done\n"
    clock.now += 1.0
    tee.write(" done\r\nredrawn\rover\n")
    clock.now += 5.0
    tee.write("no end")
    log.note("cell 3 ends")  # a note ends the pending line first
    tee.write("after")
    log.close()  # and closing ends it too
    assert build.read_run_log(tmp_path / "run.log") == [
        (1, 40.0, "epoch 1 done"), (2, 41.0, "epoch 2 done"), (3, 41.0, "redrawn"),
        (4, 41.0, "over"), (5, 46.0, "no end"), (6, 46.0, "-- cell 3 ends"), (7, 46.0, "after")]


def test_tee_without_a_stream_writes_the_log_only(tmp_path):
    log = build.RunLog(tmp_path / "run.log", clock=FakeClock())
    tee = log.tee(None)
    assert tee.write("quiet\n") == len("quiet\n")
    tee.flush()
    log.close()
    assert (tmp_path / "run.log").read_text() == "[    0.0] quiet\n"


def test_silences_are_the_gaps_between_consecutive_lines_longest_first(tmp_path):
    path = write_log(tmp_path / "run.log", [
        (0.0, "-- run of ca4.ipynb"),
        (3.0, "-- cell 1 starts (Setup): import os"),
        (4.5, "-- cell 1 ends"),
        (4.5, "-- cell 2 starts (Task 1 > Training): history = train()"),
        (10.0, "  ae epoch 1/2"),
        (41.5, "  ae epoch 2/2"),
        (42.0, "-- cell 2 ends"),
        (42.0, "-- cell 3 starts (Task 2 > Likelihood): estimate()"),
        (60.0, "-- cell 3 ends"),
        (60.1, "-- run finished in 1 min"),
    ])
    gaps = build.silences(path)
    assert [gap.seconds for gap in gaps] == [31.5, 18.0, 5.5, 3.0, 1.5, 0.5, 0.1, 0.0, 0.0]
    longest = build.longest_silence(path)
    assert longest == gaps[0] == build.Silence(
        seconds=31.5, at=10.0, line=6, before="  ae epoch 1/2", after="  ae epoch 2/2",
        cell="cell 2 (Task 1 > Training): history = train()")
    assert gaps[1].cell == "cell 3 (Task 2 > Likelihood): estimate()" and gaps[1].line == 9
    assert gaps[3].cell == "cell 1 (Setup): import os" and gaps[3].line == 2
    # Equal gaps keep the log's order.
    assert [gap.line for gap in gaps if gap.seconds == 0.0] == [4, 8]


def test_terminal_only_skips_the_logs_own_notes(tmp_path):
    path = write_log(tmp_path / "run.log", [
        (0.0, "-- run of ca4.ipynb"),
        (2.0, "[0:00:02] Task 1"),
        (20.0, "-- cell 4 ends"),
        (20.0, "-- cell 5 starts (Task 2): x = 1"),
        (45.0, "[0:00:45] Task 2"),
        (46.0, "-- run finished"),
    ])
    assert [gap.seconds for gap in build.silences(path)] == [25.0, 18.0, 2.0, 1.0, 0.0]
    (gap,) = build.silences(path, terminal_only=True)
    assert (gap.seconds, gap.at, gap.line) == (43.0, 2.0, 5)
    assert gap.cell == "cell 5 (Task 2): x = 1"


def test_fewer_than_two_lines_have_no_silence(tmp_path):
    assert build.longest_silence(write_log(tmp_path / "empty.log", [])) is None
    assert build.longest_silence(write_log(tmp_path / "one.log", [(0.0, "only")])) is None


@pytest.mark.parametrize("text, message", [
    ("[    0.0] fine\nno stamp here\n", "line 2: not a run-log line"),
    ("[    5.0] later\n[    1.0] earlier\n", "line 2: the time goes back"),
])
def test_a_file_that_is_not_a_run_log_is_refused_with_its_line(tmp_path, text, message):
    path = tmp_path / "run.log"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        build.silences(path)


def test_silences_command_prints_the_longest_and_can_fail_over_a_limit(tmp_path, capsys):
    path = write_log(tmp_path / "run.log", [
        (0.0, "start"), (1.0, "a"), (33.0, "b"), (40.0, "c"), (41.0, "d")])
    assert build.main(["silences", str(path), "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"{path}: 5 lines over 41.0 s; the longest silences:"
    assert "   32.0 s  from 1.0 s, line 3, before the first cell" in out
    assert "'a' -> 'b'" in out and "    7.0 s  from 33.0 s" in out and "'c' -> 'd'" not in out
    assert build.main(["silences", str(path), "--over", "30"]) == 1
    assert "the longest silence, 32.0 s, is over 30 s" in capsys.readouterr().out
    assert build.main(["silences", str(path), "--over", "32"]) == 0
    capsys.readouterr()
    assert build.main(["silences", str(tmp_path / "missing.log")]) == 2
    assert "error:" in capsys.readouterr().err


def test_silences_command_reads_the_build_folders_log_by_default(capsys):
    write_log(settings.build_dir() / build.LOG_NAME, [(0.0, "start"), (12.0, "end")])
    assert build.main(["silences"]) == 0
    assert "12.0 s  from 0.0 s, line 2" in capsys.readouterr().out


def small_notebook(path: Path) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("# Task 1\n## Training"),
                      nbformat.v4.new_code_cell("print('one')"),
                      nbformat.v4.new_markdown_cell("# Task 2"),
                      nbformat.v4.new_code_cell("# a comment\nprint('two')")]
    nbformat.write(notebook, path)
    return path


def fake_papermill(fail_in_cell: int | None = None):
    """Stands in for papermill.execute_notebook: calls the hooks and 'prints' as a kernel would."""

    def execute(source, target, *, stdout_file, stderr_file, on_cell_start, on_cell_executed,
                **_):
        notebook = nbformat.read(source, as_version=4)
        for index, cell in enumerate(notebook.cells):
            on_cell_start(cell=cell, cell_index=index)
            if cell.cell_type == "code":
                if index == fail_in_cell:
                    raise RuntimeError("the kernel died")
                stdout_file.write(f"output of cell {index}\n")
                stderr_file.write("a warning")  # no newline: ended when the cell ends
                on_cell_executed(cell=cell, cell_index=index, execute_reply={})
        nbformat.write(notebook, target)

    return execute


def test_execute_notebook_writes_the_run_log_beside_the_target(tmp_path, monkeypatch):
    monkeypatch.setattr(papermill, "execute_notebook", fake_papermill())
    source, terminal = small_notebook(tmp_path / "source.ipynb"), io.StringIO()
    target = build.execute_notebook(source, tmp_path / "out" / "ca4.ipynb", "fast",
                                    stream=terminal)
    assert target == tmp_path / "out" / "ca4.ipynb" and target.exists()
    entries = build.read_run_log(tmp_path / "out" / "run.log")
    texts = [text for _, _, text in entries]
    assert texts[0].startswith("-- run of source.ipynb (profile 'fast') into ")
    assert texts[1] == "-- cell 1 starts (Task 1 > Training): print('one')"
    assert texts[2].endswith("] Task 1 > Training") and texts[2].startswith("[0:00:0")
    assert texts[3:9] == ["output of cell 1", "a warning", "-- cell 1 ends",
                          "-- cell 3 starts (Task 2): # a comment", texts[7], "output of cell 3"]
    assert texts[7].endswith("] Task 2")
    assert texts[9:11] == ["a warning", "-- cell 3 ends"]
    assert texts[11].startswith("-- run finished in ") and len(texts) == 12
    seconds = [entry[1] for entry in entries]
    assert seconds == sorted(seconds)
    # The terminal got what the notebook printed and the section lines, not the log's notes.
    assert "-- " not in terminal.getvalue()
    assert terminal.getvalue().count("output of cell") == 2
    assert terminal.getvalue().count("] Task") == 2


def test_a_run_that_stops_says_so_in_its_log(tmp_path, monkeypatch):
    monkeypatch.setattr(papermill, "execute_notebook", fake_papermill(fail_in_cell=3))
    source = small_notebook(tmp_path / "source.ipynb")
    log = tmp_path / "elsewhere" / "my.log"
    with pytest.raises(RuntimeError, match="the kernel died"):
        build.execute_notebook(source, tmp_path / "ca4.ipynb", "fast", stream=None, log=log)
    texts = [text for _, _, text in build.read_run_log(log)]
    assert texts[-3] == "-- cell 3 starts (Task 2): # a comment"
    assert texts[-2].endswith("] Task 2")
    assert texts[-1].startswith("-- run stopped after ")
    assert texts[-1].endswith(": RuntimeError: the kernel died")
    assert not (tmp_path / "run.log").exists()

"""Run progress (ca4lib.progress): durations in words, and the run's estimate of the time left
on constructed runs (epochs trained, skipped and served from a constructed cache index),
with the expected seconds worked out by hand."""

from __future__ import annotations

import pytest

from ca4lib import progress

# ---------------------------------------------------------------------------------------------
# RunProgress
# ---------------------------------------------------------------------------------------------


def test_run_progress_seconds_left(tmp_path):
    run = progress.RunProgress({"a": 4, "b": 6}, "full", tmp_path)
    assert run.seconds_left() == 0.0  # nothing trained yet: no estimate
    run.start_model("a", 4)
    run.add_trained_epoch("a", 2.0)
    run.add_trained_epoch("a", 4.0)  # 3 s per trained epoch
    assert run.seconds_left() == pytest.approx(8 * 3.0)
    run.finish_model("a", tmp_path / "a-0.npz")
    assert run.seconds_left() == pytest.approx(6 * 3.0)
    run.start_model("b", 6)
    run.add_skipped_epochs("b", 2)  # resumed after epoch 2: counted as done, not in the mean
    assert run.seconds_left() == pytest.approx(4 * 3.0)
    run.finish_model("b", tmp_path / "b-0.npz")
    assert run.seconds_left() == 0.0


def test_run_progress_leaves_out_the_models_the_cache_holds(tmp_path):
    (tmp_path / "vae-1.npz").touch()
    first = progress.RunProgress({"ae": 20, "vae": 20}, "full", tmp_path)
    first.finish_model("vae", tmp_path / "vae-1.npz")  # the index now points at vae-1.npz
    again = progress.RunProgress({"ae": 20, "vae": 20, "new": 5}, "full", tmp_path)
    assert again.expected_cached == {"vae"}
    again.start_model("ae", 20)
    again.add_trained_epoch("ae", 1.0)
    assert again.epochs_left() == 19 + 5  # not the 20 epochs of the cached VAE
    # Another profile's entries do not count; an entry whose file is gone does not either.
    assert progress.RunProgress({"vae": 2}, "fast", tmp_path).expected_cached == set()
    (tmp_path / "vae-1.npz").unlink()
    assert progress.RunProgress({"vae": 20}, "full", tmp_path).expected_cached == set()


def test_run_progress_counts_a_model_the_cache_was_expected_to_serve_once_it_trains(tmp_path):
    (tmp_path / "vae-1.npz").touch()
    progress.RunProgress({"vae": 20}, "full", tmp_path).finish_model("vae", tmp_path / "vae-1.npz")
    run = progress.RunProgress({"ae": 10, "vae": 20}, "full", tmp_path)
    assert run.epochs_left() == 10
    run.start_model("vae", 20)  # its code changed since: train_model trains it after all
    assert run.epochs_left() == 30


# ---------------------------------------------------------------------------------------------
# format_duration
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds, text", [
    (0, "0 s"), (-3.0, "0 s"), (44.6, "45 s"), (59.4, "59 s"), (59.6, "1 min 00 s"),
    (185, "3 min 05 s"), (3599.4, "59 min 59 s"), (3600, "1 h 00 min"), (3720, "1 h 02 min"),
    (36000 + 59 * 60, "10 h 59 min"),
])
def test_format_duration(seconds, text):
    assert progress.format_duration(seconds) == text


def test_short_computations_in_a_row_share_one_quiet_stretch(monkeypatch):
    """Three estimates of 9 s each, one after another (the fast profile's likelihood cell):
    none needs a line alone, but together they would be silent for 27 s; a line comes once 10 s
    have passed since the stretch began. After a pause, a short computation prints nothing."""
    clock = [1000.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(progress.Ticker, "quiet_since", None)
    monkeypatch.setattr(progress.Ticker, "last_tick", None)
    lines = []
    for index in range(3):
        ticker = progress.Ticker(f"estimate {index}", 9, say=lines.append)
        for done in range(1, 10):
            clock[0] += 1.0
            ticker.tick(done)
        clock[0] += 0.5  # what lies between two estimates: less than Ticker.PAUSE
    # Lines at 10 s and 20 s into the stretch: never 10 s without one.
    assert [line.split(":")[0] for line in lines] == ["  estimate 1", "  estimate 2"]
    clock[0] += 60.0  # a pause: the next computation starts a stretch of its own
    short = progress.Ticker("later", 5, say=lines.append)
    for done in range(1, 6):
        clock[0] += 1.0
        short.tick(done)
    assert len(lines) == 2


def test_a_long_computation_prints_every_interval_and_at_the_end(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(progress.Ticker, "quiet_since", None)
    monkeypatch.setattr(progress.Ticker, "last_tick", None)
    lines = []
    ticker = progress.Ticker("quadrature", 25, say=lines.append)
    for done in range(1, 26):
        clock[0] += 1.0
        ticker.tick(done)
    assert [line.split(",")[0] for line in lines] == [
        "  quadrature: 10/25 done", "  quadrature: 20/25 done", "  quadrature: 25/25 done"]

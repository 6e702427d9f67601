"""The lines train_model prints (ca4lib.training_log): epoch lines that progress.EPOCH_LINE
matches (and the PDF drops), records that it does not, the VAE's negative ELBO, and a line
within a long epoch, driven callback by callback on constructed histories."""

from __future__ import annotations

from ca4lib import progress, training_log


def test_epoch_line_matches_progress_lines_and_not_the_record(tmp_path):
    lines: list[str] = []
    log = training_log.TrainingLog("vae_kl0p1", 3, lines.append)
    for epoch in range(3):
        log.on_epoch_begin(epoch)
        log.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1), "val_loss": 2.0})
    run_lines: list[str] = []
    with_run = training_log.TrainingLog("autoencoder_latent10", 20, run_lines.append,
                                        progress.RunProgress({"autoencoder_latent10": 20},
                                                             "full", tmp_path))
    with_run.on_epoch_begin(0)
    with_run.on_epoch_end(0, {"loss": 0.25})
    assert len(lines) == 3 and len(run_lines) == 1
    assert "epoch 1/3" in lines[0] and "epoch 3/3" in lines[2]
    assert "loss 1.0000" in lines[0] and "val_loss 2.0000" in lines[0]
    # Trailing zeros stay, so that the column of losses lines up epoch after epoch.
    assert "loss 0.5000" in lines[1] and "loss 0.3333" in lines[2]
    assert "epoch 1/20" in run_lines[0] and "run: about" in run_lines[0]
    for line in lines + run_lines:
        assert progress.EPOCH_LINE.match(line), line
    records: list[str] = []
    history = {"loss": [0.3, 0.2], "val_loss": [0.31, 0.25]}
    record_log = training_log.TrainingLog("vae_kl1", 2, records.append)
    record_log.record("trained", history, 75.0)
    record_log.finished("from the cache", history, 75.0, tmp_path / "vae_kl1-0.npz")
    record_log.resumed(1)
    training_log.TrainingLog("autoencoder_latent10", 1, records.append).record(
        "trained", {"loss": [0.3], "val_loss": [0.31]}, 5.0)
    assert all("1 min 15 s" in line for line in records[:2]) and "5 s" in records[3]
    assert "from the cache" in records[1] and "resuming after epoch 1 of 2" in records[2]
    for line in records:
        assert not progress.EPOCH_LINE.match(line), line


def test_a_vae_record_gives_its_negative_elbo_not_its_weighted_loss():
    records: list[str] = []
    history = {"loss": [160.0], "val_loss": [152.5], "val_reconstruction_loss": [140.0],
               "val_kl_loss": [2.5]}  # weight 5: 140 + 5 x 2.5
    training_log.TrainingLog("vae_kl5", 1, records.append).record("trained", history, 3.0)
    assert records == ["vae_kl5 trained: 1 epoch in 3 s, val. negative ELBO 142.5"]


def test_a_long_epoch_prints_a_line_within_it_and_the_pdf_drops_it():
    lines: list[str] = []
    log = training_log.TrainingLog("vae_kl1", 20, lines.append)
    log.set_params({"steps": 469})
    log.on_epoch_begin(2)
    log.on_train_batch_end(99)  # 20 s have not passed: quiet
    assert lines == []
    log.QUIET_SECONDS = 0.0  # as if 20 s had passed at each batch
    log.on_train_batch_end(234)
    (line,) = lines
    assert line.startswith("  vae_kl1 epoch 3/20  batch 235/469  ")
    assert line.endswith("left in this epoch") and progress.EPOCH_LINE.match(line)

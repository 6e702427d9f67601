"""Atomic writes of strict JSON (ca4lib.storage): `write_json_atomic` read back with a parser
that refuses NaN and infinity, and constructed data with a NaN at a known key path."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ca4lib import storage

# ---------------------------------------------------------------------------------------------
# metrics.json
# ---------------------------------------------------------------------------------------------


def refuse_constant(name: str):
    raise AssertionError(f"not strict JSON: {name}")


def test_write_json_atomic_names_the_key_path_of_a_nan(tmp_path):
    path = tmp_path / "metrics.json"
    data = {"autoencoder": {"val_bce": 0.1},
            "vae_sweep": [{"kl_weight": 1.0, "val_loss": float("nan")}]}
    with pytest.raises(ValueError, match=r"metrics\['vae_sweep'\]\[0\]\['val_loss'\]"):
        storage.write_json_atomic(path, data)
    assert not path.exists()
    nested = {"runs": {"a": [1.0, np.float64("-inf")], "b": (2.0, float("inf"))}}
    with pytest.raises(ValueError) as error:
        storage.write_json_atomic(path, nested)
    assert "metrics['runs']['a'][1]" in str(error.value)
    assert "metrics['runs']['b'][1]" in str(error.value)
    assert os.listdir(tmp_path) == []  # no file, and no temporary file left behind


def test_write_json_atomic_writes_strict_json(tmp_path):
    path = tmp_path / "out" / "metrics.json"
    first = {"old": 1}
    data = {"vae_sweep": [{"kl_weight": 0.1, "val_kl_per_dimension": [1.5, 0.002]}],
            "generation": {"samples": 1000, "name": "VAE KL weight 1", "note": None, "ok": True}}
    storage.write_json_atomic(path, first)
    assert storage.write_json_atomic(path, data) == path
    text = path.read_text()
    assert json.loads(text, parse_constant=refuse_constant) == data
    assert sorted(os.listdir(path.parent)) == ["metrics.json"]

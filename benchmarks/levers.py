"""Measure candidate training-speed levers one at a time (one factor changed from a reference).

Run from the project root:

    .venv/bin/python benchmarks/levers.py [--images N] [--repeats R] [--only LEVER ...]

The reference is the straightforward port of bench_training.py: the assignment's VAE, batch 128,
compiled with Keras' defaults (steps_per_execution=1, jit_compile "auto", which is off on a
CPU-only machine), trained with `fit` on NumPy arrays, TensorFlow's default threads and oneDNN
setting. Each lever changes one of those settings (the batch-size lever uses the Task 1
autoencoder, whose batch size the assignment leaves free).

Every measurement runs in a fresh Python process (thread counts and TF_ENABLE_ONEDNN_OPTS only
take effect before TensorFlow starts, and a fresh process keeps the others comparable): it
trains a new model for two epochs and reports the second (steady-state) epoch's seconds. The
configurations run in rounds, every configuration once per round, so that a slow spell of a
shared machine hits all of them alike; the medians over the rounds are reported.

Writes build/levers.json (`settings.build_dir()`) and prints a table. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

# The settings and storage rooms import no TensorFlow, nor does bench_common: this driver process
# stays light. The workers import the coursework (through bench_training).
from bench_common import aligned_table, median

from ca4lib import settings, storage

RESULT_PREFIX = "LEVER-RESULT "

REFERENCE: dict[str, Any] = {
    "model": "vae", "batch_size": settings.BATCH_SIZE, "steps_per_execution": 1, "input": "numpy",
    "threads": "default", "onednn": "default", "jit_compile": "default", "precision": "float32",
}

# name -> (description, [(variant label, settings changed from REFERENCE)]); the first variant
# of each lever is what the others are compared with.
LEVERS: dict[str, tuple[str, list[tuple[str, dict[str, Any]]]]] = {
    "steps_per_execution": (
        "VAE: training steps per tf.function call (model.compile(steps_per_execution=...))",
        [("1 (default, project)", {}), ("4", {"steps_per_execution": 4}),
         ("16", {"steps_per_execution": 16}), ("64", {"steps_per_execution": 64})]),
    "input_pipeline": (
        "VAE: fit on NumPy arrays vs the project's tf.data pipeline (ca4.make_dataset)",
        [("NumPy (default)", {}), ("ca4.make_dataset", {"input": "dataset"})]),
    "threads": (
        "VAE: tf.config.threading intra_op=2, inter_op=1 vs TensorFlow's default",
        [("default", {}), ("intra 2 / inter 1", {"threads": "intra2_inter1"})]),
    "onednn": (
        "VAE: TF_ENABLE_ONEDNN_OPTS unset (oneDNN on, the default) vs TF_ENABLE_ONEDNN_OPTS=0",
        [("default (on)", {}), ("TF_ENABLE_ONEDNN_OPTS=0", {"onednn": "0"})]),
    "jit_compile": (
        "VAE: XLA, model.compile(jit_compile=True) vs the default ('auto': off on CPU)",
        [("default", {}), ("jit_compile=True", {"jit_compile": True})]),
    "precision": (
        "VAE: Keras mixed_bfloat16 policy (this CPU has AVX512-BF16) vs float32; changes the numerics",
        [("float32 (default)", {}), ("mixed_bfloat16", {"precision": "mixed_bfloat16"})]),
    "autoencoder_batch_size": (
        "Autoencoder (Task 1, latent 10): batch size 128 vs 256 (free in the assignment)",
        [("128", {"model": "autoencoder"}), ("256", {"model": "autoencoder", "batch_size": 256})]),
}


def config_key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# Worker: one configuration in this (fresh) process
# ---------------------------------------------------------------------------------------------


def worker(config: dict[str, Any], images: int) -> dict[str, Any]:
    """Train one fresh model for two epochs under `config`; return the timed second epoch."""
    # TensorFlow and Keras as the project imports them (quietly, KERAS_BACKEND set).
    from ca4lib.backend import keras, tf

    # Thread pools are fixed when TensorFlow's runtime starts: set them before any op runs.
    if config["threads"] == "intra2_inter1":
        tf.config.threading.set_intra_op_parallelism_threads(2)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
    import bench_training as bench

    import ca4_helpers as ca4

    train = bench.load_images(images)[0]
    ca4.set_seed(settings.DEFAULT_SEED)
    if config.get("precision", "float32") != "float32":
        keras.mixed_precision.set_global_policy(config["precision"])
    jit = True if config["jit_compile"] is True else "auto"
    model = bench.build_port(config["model"], steps_per_execution=config["steps_per_execution"],
                             jit_compile=jit)
    if config["input"] == "dataset":
        order = ca4.epoch_orders(len(train), settings.DEFAULT_SEED, range(1))
        data = ca4.make_dataset(train, train, config["batch_size"], order)
        seconds = bench.fit_steady_epoch(model, data, None)
    else:
        seconds = bench.fit_steady_epoch(model, train, config["batch_size"])
    return {
        "epoch_s": seconds,
        "jit_compile_used": bool(model.jit_compile),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "onednn_env": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "machine": bench.machine_info(),
    }


def run_worker(config: dict[str, Any], images: int) -> dict[str, Any]:
    """Run `config` in a fresh Python process; return its result, or {'error': ...}."""
    env = dict(os.environ)
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    if config["onednn"] != "default":
        env["TF_ENABLE_ONEDNN_OPTS"] = config["onednn"]
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", config_key(config),
               "--images", str(images)]
    completed = subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                               check=False)
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = (completed.stderr or completed.stdout).strip().splitlines()[-5:]
    return {"error": f"exit status {completed.returncode}: " + " | ".join(tail)}


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def measure(levers: Sequence[str], images: int, repeats: int) -> dict[str, Any]:
    """Run every distinct configuration once per round, rotating the order between rounds."""
    configs: dict[str, dict[str, Any]] = {}
    for name in levers:
        for _, changes in LEVERS[name][1]:
            config = {**REFERENCE, **changes}
            configs.setdefault(config_key(config), config)
    keys = list(configs)
    samples: dict[str, list[float]] = {key: [] for key in keys}
    details: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    started = time.perf_counter()
    for round_index in range(repeats):
        shift = round_index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            if key in errors:
                continue
            result = run_worker(configs[key], images)
            if "error" in result:
                errors[key] = result["error"]
                print(f"  round {round_index + 1}/{repeats}: {key} failed: {result['error']}")
                continue
            samples[key].append(result["epoch_s"])
            details[key] = result
            print(f"  round {round_index + 1}/{repeats} ({time.perf_counter() - started:4.0f} s): "
                  f"{short_label(configs[key])}: {result['epoch_s']:.2f} s")

    machine = next((d["machine"] for d in details.values()), None)
    report: dict[str, Any] = {
        "settings": {"images": images, "repeats": repeats, "epochs_per_run": 2, "timed_epoch": 2,
                     "reference": REFERENCE},
        "machine": machine,
        "levers": {},
    }
    for name in levers:
        description, variants = LEVERS[name]
        rows = []
        for label, changes in variants:
            key = config_key({**REFERENCE, **changes})
            config = configs[key]
            row: dict[str, Any] = {"variant": label, "config": config, "epoch_s_samples": samples[key]}
            if samples[key]:
                epoch_s = median(samples[key])
                row.update(median_epoch_s=epoch_s, img_per_s=images / epoch_s)
                observed = details[key]
                row["observed"] = {k: observed[k] for k in ("jit_compile_used", "intra_op_threads",
                                                            "inter_op_threads", "onednn_env")}
            if key in errors:
                row["error"] = errors[key]
            rows.append(row)
        first = rows[0].get("img_per_s")
        for row in rows:
            if first and "img_per_s" in row:
                row["speedup_vs_first"] = row["img_per_s"] / first
        report["levers"][name] = {"description": description, "variants": rows}
    return report


def short_label(config: dict[str, Any]) -> str:
    changed = {k: v for k, v in config.items() if REFERENCE.get(k) != v}
    return ", ".join(f"{k}={v}" for k, v in changed.items()) or "reference (VAE, defaults)"


def format_table(report: dict[str, Any]) -> str:
    rows = [("lever", "variant", "epoch s", "img/s", "vs first")]
    for name, lever in report["levers"].items():
        for row in lever["variants"]:
            if "img_per_s" in row:
                rows.append((name, row["variant"], f"{row['median_epoch_s']:.2f}",
                             f"{row['img_per_s']:.0f}", f"{row.get('speedup_vs_first', 0):.2f}x"))
            else:
                rows.append((name, row["variant"], "failed", "-", "-"))
            name = ""
    lines = aligned_table(rows, left=2)
    run_settings = report["settings"]
    lines.append(f"medians of {run_settings['repeats']} rounds; {run_settings['images']} images, "
                 f"second epoch timed, each run in a fresh process")
    return "\n".join(lines)


def main(arguments: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6400,
                        help="training images per epoch (default 6400 = 50 batches of 128)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (default 3); medians are reported")
    parser.add_argument("--only", nargs="+", choices=sorted(LEVERS), default=None,
                        help="measure only these levers")
    parser.add_argument("--output", type=Path, default=None,
                        help="result file (default: build/levers.json in settings.build_dir())")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    options = parser.parse_args(arguments)
    if options.images < 1 or options.repeats < 1:
        parser.error("--images and --repeats must be positive")
    if options.worker is not None:
        result = worker(json.loads(options.worker), options.images)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0
    levers = options.only or list(LEVERS)
    output = options.output or settings.build_dir() / "levers.json"
    print(f"levers: {', '.join(levers)}; {options.images} images, {options.repeats} rounds")
    started = time.perf_counter()
    report = measure(levers, options.images, options.repeats)
    storage.write_json_atomic(output, report)
    print(format_table(report))
    print(f"wrote {output} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

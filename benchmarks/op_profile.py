"""Where a training step's time goes: TensorFlow's profiler, op type by op type, per CPU ISA.

Run from the project root:

    .venv/bin/python benchmarks/op_profile.py [--steps N] [--repeats R] [--isas native,AVX2]

For each ISA (``native``: what oneDNN picks on this CPU; ``AVX2``: the same process started with
``ONEDNN_MAX_CPU_ISA=AVX2``, which caps oneDNN's kernels at AVX2 on an AVX-512 machine) a fresh
Python process

1. times a 2048 x 2048 float32 matmul in TensorFlow (median of 10): the machine's measured
   matmul rate, the practical ceiling for a step made of convolutions and matmuls;
2. for the Task 1 autoencoder (``ca4.build_autoencoder(10)``) and the assignment's VAE
   (``ca4.build_vae(2)``), each built and compiled as the project does it (bench_training's
   ``PROJECT_BUILDERS``), trains one untimed epoch of ``--steps`` batches of 128 MNIST images
   (tracing), then ``--repeats`` timed epochs (median step time), then one epoch under
   ``tf.profiler`` whose trace is summed by op type;
3. counts the step's floating-point work from the layers' shapes (forward multiply-adds x 2 x 3:
   forward, input gradient and weight gradient), so that step FLOP/s over the matmul rate is the
   fraction of the machine's measured rate that a training step reaches.

Op times are the durations of the kernels on TensorFlow's executor threads, summed over the
threads, so their shares describe the work; the step time is wall time. Writes
``build/op_profile.json`` and ``build/op_profile.png`` (``settings.build_dir()``) and prints the tables
that ``benchmarks/README.md`` quotes.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

# The settings and storage rooms import no TensorFlow: this driver process stays light. The
# worker imports the coursework (through bench_training).
from ca4lib import settings, storage

RESULT_PREFIX = "OP-PROFILE-RESULT "
# Op types that carry the arithmetic; the rest (element-wise, reductions, optimizer, copies) are
# memory-bound bookkeeping.
ARITHMETIC_TYPES = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "MatMul",
                    "_MklNativeConv2D", "_MklNativeFusedConv2D", "_MklNativeConv2DBackpropInput",
                    "_MklNativeConv2DBackpropFilter", "_MklNativeConv2DBackpropFilterWithBias",
                    "_MklMatMul", "_MklNativeFusedMatMul", "_FusedMatMul", "_FusedConv2D",
                    "Conv2DBackpropFilterWithBias", "BatchMatMulV2")


# ---------------------------------------------------------------------------------------------
# Worker: one ISA in this (fresh) process
# ---------------------------------------------------------------------------------------------


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    """Median GFLOP/s of a size x size float32 matmul in TensorFlow."""
    from ca4lib.backend import tf
    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    tf.matmul(a, b).numpy()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.matmul(a, b).numpy()
        seconds.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(seconds) / 1e9


def forward_multiply_adds(model: Any) -> int:
    """Multiply-adds of one image's forward pass through the Conv2D, Conv2DTranspose and Dense
    layers of `model`'s (nested) functional sub-models."""
    from ca4lib.backend import keras
    total = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Conv2DTranspose):
            _, height, width, channels = layer.input.shape
            total += height * width * int(channels) * layer.filters * int(
                layer.kernel_size[0] * layer.kernel_size[1])
        elif isinstance(layer, keras.layers.Conv2D):
            _, height, width, channels = layer.output.shape
            total += height * width * int(layer.input.shape[-1]) * layer.filters * int(
                layer.kernel_size[0] * layer.kernel_size[1])
        elif isinstance(layer, keras.layers.Dense):
            total += int(layer.input.shape[-1]) * layer.units
    return int(total)


def op_seconds(trace_dir: str) -> dict[str, float]:
    """Sum the kernel durations of a tf.profiler trace by op, 'op/name:Type' (the events so
    named on the executor threads)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    totals: dict[str, float] = collections.defaultdict(float)
    for path in Path(trace_dir).rglob("*.xplane.pb"):
        space = xplane_pb2.XSpace()
        space.ParseFromString(path.read_bytes())
        for plane in space.planes:
            for line in plane.lines:
                if not line.name.startswith("tf_Compute"):
                    continue
                for event in line.events:
                    name = plane.event_metadata[event.metadata_id].name
                    if ":" in name and "::" not in name:
                        totals[name] += event.duration_ps / 1e12
    return dict(totals)


def by_type(seconds_by_op: dict[str, float]) -> dict[str, float]:
    """Sum per-op seconds by op type (the part after the last ':')."""
    totals: dict[str, float] = collections.defaultdict(float)
    for name, seconds in seconds_by_op.items():
        totals[name.rsplit(":", 1)[1]] += seconds
    return dict(totals)


def profile_model(kind: str, images: Any, steps: int, repeats: int) -> dict[str, Any]:
    """Step time, step FLOPs and the op-type breakdown of one model kind ('autoencoder', 'vae')
    on `steps` batches of `images`."""
    import bench_training as bench

    import ca4_helpers as ca4
    from ca4lib.backend import tf

    ca4.set_seed(0)
    model = bench.PROJECT_BUILDERS[kind]()
    pairs = images if kind == "vae" else (images, images)
    data = tf.data.Dataset.from_tensor_slices(pairs).batch(settings.BATCH_SIZE).cache()
    # The project's tf.data options: with autotuning on, whole epochs fall into a slow mode
    # with one core idle (benchmarks/README.md), which would show here as bimodal steps.
    data = data.with_options(ca4.pipeline_options())
    model.fit(data, epochs=1, verbose=0)  # traces the step
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(data, epochs=1, verbose=0)
        seconds.append((time.perf_counter() - start) / steps)
    with tempfile.TemporaryDirectory() as trace_dir:
        tf.profiler.experimental.start(trace_dir)
        model.fit(data, epochs=1, verbose=0)
        tf.profiler.experimental.stop()
        per_op = {name: value / steps for name, value in op_seconds(trace_dir).items()}
    step_flops = 3 * 2 * forward_multiply_adds(model) * settings.BATCH_SIZE
    top_ops = sorted(per_op.items(), key=lambda item: -item[1])[:30]
    return {"step_seconds": statistics.median(seconds), "step_seconds_samples": seconds,
            "step_gflop": step_flops / 1e9,
            "step_gflops_per_s": step_flops / statistics.median(seconds) / 1e9,
            "op_seconds_per_step": by_type(per_op),
            "top_ops_seconds_per_step": [[name.replace("StatefulPartitionedCall/", ""), value]
                                         for name, value in top_ops]}


def worker(steps: int, repeats: int) -> dict[str, Any]:
    """Profile both models in this process (started with the ISA cap); return the results."""
    import bench_training as bench

    import ca4_helpers as ca4

    (x_train, _), _ = ca4.load_mnist()
    images = ca4.normalize_images(x_train[: steps * settings.BATCH_SIZE])
    result: dict[str, Any] = {"isa_cap": os.environ.get("ONEDNN_MAX_CPU_ISA", "native"),
                              "machine": bench.machine_info(), "matmul_gflops": matmul_gflops()}
    for kind in ("autoencoder", "vae"):
        result[kind] = profile_model(kind, images, steps, repeats)
    result["matmul_gflops_after"] = matmul_gflops()
    return result


# ---------------------------------------------------------------------------------------------
# Driver: one worker process per ISA, then tables and the figure
# ---------------------------------------------------------------------------------------------


def run_isa(isa: str, steps: int, repeats: int) -> dict[str, Any]:
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    environment.pop("ONEDNN_MAX_CPU_ISA", None)
    if isa != "native":
        environment["ONEDNN_MAX_CPU_ISA"] = isa
    completed = subprocess.run(
        [sys.executable, __file__, "--worker", "--steps", str(steps), "--repeats", str(repeats)],
        env=environment, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"worker for ISA {isa} failed:\n{completed.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def grouped(op_seconds: dict[str, float], top: int = 8) -> list[tuple[str, float]]:
    """The `top` op types by time, the rest summed as 'other'."""
    ranked = sorted(op_seconds.items(), key=lambda item: -item[1])
    rows = ranked[:top]
    rest = sum(value for _, value in ranked[top:])
    return rows + ([("other", rest)] if rest else [])


def format_tables(results: dict[str, Any]) -> str:
    lines = []
    for kind in ("autoencoder", "vae"):
        lines.append(f"\n{kind}: op types, ms per step (share of the summed op time)\n")
        header = "| op type | " + " | ".join(results["isas"]) + " |"
        lines += [header, "|---|" + "---|" * len(results["isas"])]
        names: list[str] = []
        for isa in results["isas"]:
            names += [name for name, _ in grouped(results[isa][kind]["op_seconds_per_step"])
                      if name not in names and name != "other"]
        for name in names + ["other"]:
            cells = []
            for isa in results["isas"]:
                ops = results[isa][kind]["op_seconds_per_step"]
                total = sum(ops.values())
                value = (sum(v for n, v in ops.items() if n not in names) if name == "other"
                         else ops.get(name, 0.0))
                cells.append(f"{1e3 * value:.1f} ({100 * value / total:.0f}%)")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["\nsummary\n", "| ISA | model | step ms | GFLOP per step | GFLOP/s | matmul GFLOP/s "
              "| fraction of matmul rate | arithmetic ops' share of op time |",
              "|---|---|---|---|---|---|---|---|"]
    for isa in results["isas"]:
        for kind in ("autoencoder", "vae"):
            row = results[isa][kind]
            ops = row["op_seconds_per_step"]
            arithmetic = sum(v for n, v in ops.items() if n in ARITHMETIC_TYPES) / sum(ops.values())
            lines.append(f"| {isa} | {kind} | {1e3 * row['step_seconds']:.1f} | "
                         f"{row['step_gflop']:.2f} | {row['step_gflops_per_s']:.1f} | "
                         f"{results[isa]['matmul_gflops']:.1f} | {row['fraction_of_matmul']:.2f} | "
                         f"{100 * arithmetic:.0f}% |")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(6.5, 3.2), constrained_layout=True)
    kinds = ("autoencoder", "vae")
    width = 0.8 / len(results["isas"])
    for index, isa in enumerate(results["isas"]):
        fractions = [results[isa][kind]["fraction_of_matmul"] for kind in kinds]
        bars = axis.bar([k + index * width for k in range(len(kinds))], fractions, width,
                        label=f"{isa} (matmul {results[isa]['matmul_gflops']:.0f} GFLOP/s)")
        axis.bar_label(bars, fmt="%.2f")
    axis.set_xticks([k + width * (len(results["isas"]) - 1) / 2 for k in range(len(kinds))],
                    ["Task 1 autoencoder", "VAE (latent 2)"])
    axis.set_ylabel("step GFLOP/s / matmul GFLOP/s")
    axis.set_ylim(0, 1)
    axis.set_title("Fraction of the measured matmul rate a training step reaches")
    axis.legend(title="oneDNN ISA", loc="upper right")
    figure.savefig(path, dpi=150)
    plt.close(figure)


def main(arguments: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="batches per timed epoch (40)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per model (3)")
    parser.add_argument("--isas", default="native,AVX2",
                        help="comma-separated: native and/or oneDNN caps such as AVX2")
    parser.add_argument("--output", type=Path, default=None, help="JSON path")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args(arguments)
    if options.worker:
        print(RESULT_PREFIX + json.dumps(worker(options.steps, options.repeats)), flush=True)
        return 0
    isas = [isa.strip() for isa in options.isas.split(",") if isa.strip()]
    results: dict[str, Any] = {"isas": isas, "machine": None,
                               "settings": {"steps": options.steps, "repeats": options.repeats,
                                            "batch_size": settings.BATCH_SIZE}}
    for isa in isas:
        print(f"profiling with oneDNN ISA {isa} ...", flush=True)
        results[isa] = run_isa(isa, options.steps, options.repeats)
        # The machine as the first worker saw it (this process imports no TensorFlow).
        machine = results[isa].pop("machine")
        results["machine"] = results["machine"] or machine
        for kind in ("autoencoder", "vae"):
            row = results[isa][kind]
            row["fraction_of_matmul"] = row["step_gflops_per_s"] / results[isa]["matmul_gflops"]
    output = options.output or settings.build_dir() / "op_profile.json"
    storage.write_json_atomic(output, results)
    plot(results, output.with_suffix(".png"))
    print(format_tables(results))
    print(f"\nwrote {output} and {output.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

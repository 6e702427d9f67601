"""Running trained models on many inputs, and the analysis cache (notebook: every section
after training).

`predict` and `decode_codes` run a model in large batches; once `cache_predictions()` is on they
and every `cached_analysis` keep their results in `build/cache/analyses/`, keyed by the code,
the models' variables and the inputs, so that a re-run of the notebook reads them back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ca4lib.backend import keras
from ca4lib.cache_key import (
    canonical,
    library_versions,
    model_signature,
    name_only,
    training_code,
    variables_digest,
)
from ca4lib.checks import check_codes, check_images, check_positive_int
from ca4lib.settings import PREDICT_BATCH_SIZE, build_dir
from ca4lib.storage import atomic_file


def run_in_batches(model: keras.Model, inputs: np.ndarray, batch_size: int) -> Any:
    """Call `model` on `inputs` batch by batch (inference mode) and join the outputs.

    Direct calls, not `model.predict`: predict traces a function for every new model (up to
    a second each, and a cached run of the notebook meets dozens of models), while a direct
    call of a large batch runs the same kernels. A model with several outputs (the VAE
    encoder's z_mean and z_log_var) gives a list of arrays.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    outputs = [model(inputs[start:start + batch_size], training=False)
               for start in range(0, len(inputs), batch_size)]
    if isinstance(outputs[0], (list, tuple)):
        return [np.concatenate([np.asarray(output[index]) for output in outputs])
                for index in range(len(outputs[0]))]
    return np.concatenate([np.asarray(output) for output in outputs])


@dataclasses.dataclass
class PredictionCache:
    """Whether predict and decode_codes keep their outputs (see cache_predictions)."""

    enabled: bool = False
    analyses_computing: int = 0  # cached_analysis calls now running their function


PREDICTION_CACHE = PredictionCache()

# Fewer inputs than this run through the model faster than their outputs are read back.
CACHED_PREDICTION_MIN = 1000


def cache_predictions(enabled: bool = True) -> None:
    """Keep the models' outputs in the analysis cache, or stop keeping them.

    Once on, predict and decode_codes on CACHED_PREDICTION_MIN or more inputs are a
    cached_analysis of `model_outputs`, and dead_unit_share one of `unit_activity`: the key is
    the model's variables, layers and code and the inputs' bytes, so a re-run of the notebook
    reads the outputs back instead of running the model (most of a cached re-run's time
    otherwise, and more on a CPU without AVX-512). A call made while a cached analysis
    computes is not kept on its own: the analysis is. Off by default, so that tests and
    scripts compute every prediction.
    """
    if not isinstance(enabled, bool):
        raise ValueError(f"enabled: expected True or False, got {enabled!r}")
    PREDICTION_CACHE.enabled = enabled


def model_outputs(model: keras.Model, inputs: np.ndarray, batch_size: int
                  ) -> dict[str, Any]:
    """run_in_batches' outputs by position (`output_0`, ...), and whether they form a list."""
    outputs = run_in_batches(model, inputs, batch_size)
    several = isinstance(outputs, list)
    return {"several": several,
            **{f"output_{i}": output for i, output in enumerate(outputs if several else [outputs])}}


def cached_when_on(function: Callable[..., Mapping[str, Any]], *arguments: Any
                   ) -> dict[str, Any]:
    """Return cached_analysis(function, *arguments) once cache_predictions() is on, else
    function(*arguments); inside a cached analysis that is computing, always the latter."""
    if PREDICTION_CACHE.enabled and not PREDICTION_CACHE.analyses_computing:
        return cached_analysis(function, *arguments)
    return dict(function(*arguments))


def outputs_of(model: keras.Model, inputs: np.ndarray, batch_size: int) -> Any:
    """Return run_in_batches(model, inputs, batch_size), from the cache where it is kept."""
    if len(inputs) < CACHED_PREDICTION_MIN:
        return run_in_batches(model, inputs, batch_size)
    stored = cached_when_on(model_outputs, model, inputs, batch_size)
    outputs = [stored[f"output_{i}"] for i in range(len(stored) - 1)]
    return outputs if stored["several"] else outputs[0]


def predict(model: keras.Model, images: np.ndarray,
            batch_size: int = PREDICT_BATCH_SIZE) -> Any:
    """Run `model` on normalised images in batches, silently (no progress bar).

    Kept in the cache once cache_predictions() is on."""
    return outputs_of(model, check_images(images), batch_size)


def decode_codes(decoder: keras.Model, codes: np.ndarray) -> np.ndarray:
    """Decode latent codes (N, D) into images (N, 28, 28, 1) in large batches.

    Kept in the cache once cache_predictions() is on."""
    codes = check_codes(codes, dimensions=decoder.input_shape[-1]).astype(np.float32)
    # A decoder's batches can be larger than an encoder's: 5,000 codes take twice the
    # throughput of 1,000 on a 2-core CPU (one call's overhead shared by more codes).
    return outputs_of(decoder, codes, 5 * PREDICT_BATCH_SIZE)


def cached_analysis(function: Callable[..., Mapping[str, Any]], *arguments: Any,
                    **keywords: Any) -> dict[str, Any]:
    """Return `function(*arguments, **keywords)`, a dict of arrays and numbers, computed once
    and kept in build/cache/analyses/ under what it reads: the function's code (as for
    trained models), each model argument's variables, layers and layer code, each array's
    bytes and every other argument's value. A cached re-run of the notebook then skips the
    slow ones.
    """
    def describe(value: Any) -> Any:
        if isinstance(value, keras.Model):
            # The layers' code too: a change to inference alone leaves the weights as they were.
            layer_code = training_code(*{type(layer) for layer
                                          in value._flatten_layers(include_self=True)})
            return ["model", variables_digest(value), model_signature(value), layer_code]
        return canonical(value, name_only)

    described = [training_code(function), [describe(value) for value in arguments],
                 {name: describe(value) for name, value in sorted(keywords.items())},
                 library_versions()]
    key = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
    path = build_dir() / "cache" / "analyses" / f"{function.__name__}-{key[:16]}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {name: archive[name].item() if archive[name].ndim == 0 else archive[name]
                        for name in archive.files}
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError):
            path.unlink(missing_ok=True)  # damaged: computed again below
    PREDICTION_CACHE.analyses_computing += 1
    try:
        result = dict(function(*arguments, **keywords))
    finally:
        PREDICTION_CACHE.analyses_computing -= 1
    stored = {name: np.asarray(value) for name, value in result.items()}
    unstorable = [name for name, value in stored.items() if value.dtype == object]
    if unstorable:
        raise TypeError(f"function: cached_analysis keeps numbers and arrays only; "
                        f"{function.__name__} returned {unstorable} of other types")
    with atomic_file(path, "wb") as stream:
        np.savez(stream, **stored)
    return result

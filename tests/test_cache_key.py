"""The trained-model cache key is the code that runs: every workflow that changes what trains a
model retrains it, in this process and in a fresh one; rewording what cannot change a model
(docstrings, comments, error messages, progress lines, plots) is served from the cache."""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import itertools
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from test_training import BATCH_SIZE, FitCalled, assert_same_weights, forbid_fit

import ca4_helpers as ca4
from ca4lib import cache_key, mnist, settings

EDIT_NUMBERS = itertools.count()
KEY_DATA = {"train": 128, "validation": 64}


@pytest.fixture(autouse=True)
def no_inherited_retrain(monkeypatch: pytest.MonkeyPatch):
    """The cache tests need the cache: ignore a CA4_RETRAIN=1 set by whoever runs the suite."""
    monkeypatch.delenv("CA4_RETRAIN", raising=False)


PROJECT_FILES = ("ca4_helpers.py", *(f"ca4lib/{path.name}"
                                     for path in sorted((settings.PROJECT_DIR / "ca4lib").glob("*.py"))))


def edited_source(file: str = "ca4_helpers.py", old: str | None = None, new: str | None = None,
                  appended: str = "") -> str:
    """Return a project file with `old` (found there exactly once) replaced by `new`, and
    `appended` added at the end."""
    source = (settings.PROJECT_DIR / file).read_text()
    if old is not None:
        assert source.count(old) == 1, f"update the edit of {file}: {old!r} is not there once"
        source = source.replace(old, new)
    return source + appended


def import_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def edited_copy(tmp_path: Path, file: str = "ca4_helpers.py", old: str | None = None,
                new: str | None = None, appended: str = ""):
    """Import a copy of the whole project code (ca4_helpers.py and every room of ca4lib) under
    fresh module names, with one file edited as `edited_source` says: new code objects, as
    after a restart with the edit, while this process keeps the original."""
    number = next(EDIT_NUMBERS)
    package, helpers = f"ca4lib_edited_{number}", f"ca4_edited_{number}"
    folder = tmp_path / f"edited_{number}"
    (folder / package).mkdir(parents=True)
    for name in PROJECT_FILES:
        text = edited_source(file, old, new, appended) if name == file else (
            settings.PROJECT_DIR / name).read_text()
        target = folder / (f"{helpers}.py" if name == "ca4_helpers.py"
                           else name.replace("ca4lib/", f"{package}/"))
        target.write_text(re.sub(r"\bca4lib\b", package, text))
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(helpers)
    finally:
        sys.path.remove(str(folder))
        for name in [name for name in sys.modules if name == helpers
                     or name.split(".")[0] == package]:
            sys.modules.pop(name)


def train_key_vae(module, data, cache_dir, log=None):
    """One epoch of a small VAE, with `module`'s train_model and build_vae."""
    return module.train_model(lambda: module.build_vae(2, kl_weight=1.0, seed=0),
                              data["train_images"][:KEY_DATA["train"]],
                              data["validation_images"][:KEY_DATA["validation"]],
                              name="vae_key", epochs=1, batch_size=BATCH_SIZE, seed=0,
                              cache_dir=cache_dir, log=log)


@pytest.fixture(scope="module")
def key_cache(mnist_small, tmp_path_factory):
    """A cache holding one small VAE trained by the unedited module."""
    result = train_key_vae(ca4, mnist_small, tmp_path_factory.mktemp("key_cache"))
    assert result.source == "trained"
    return result


def assert_retrains(module, data, cache_dir, monkeypatch) -> None:
    forbid_fit(monkeypatch)
    messages = []
    with pytest.raises(FitCalled):
        train_key_vae(module, data, cache_dir, log=messages.append)
    # Not a damaged entry: the key itself changed, so another file was looked for.
    assert not any("damaged" in message for message in messages)


def assert_served(module, data, key_cache, monkeypatch) -> None:
    forbid_fit(monkeypatch)
    result = train_key_vae(module, data, key_cache.cache_path.parent)
    assert result.source == "cache"
    assert result.cache_path == key_cache.cache_path
    assert result.history == key_cache.history
    assert_same_weights(result.model, key_cache.model)


# (the edited file, the text replaced, its replacement, whether the edit must retrain)
CODE_EDITS = {
    "unedited copy": (None, None, None, False),
    "kl_divergence doubled": (
        "ca4_helpers.py",
        "return ops.mean(ops.sum(kl_per_dimension(z_mean, z_log_var), axis=1))",
        "return 2.0 * ops.mean(ops.sum(kl_per_dimension(z_mean, z_log_var), axis=1))", True),
    "kl_per_dimension (reached through kl_divergence)": (
        "ca4_helpers.py",
        "return -0.5 * (1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))",
        "return -0.25 * (1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))", True),
    "reconstruction_loss halved": (
        "ca4_helpers.py",
        "return ops.mean(ops.sum(per_pixel, axis=(1, 2, 3)))",
        "return 0.5 * ops.mean(ops.sum(per_pixel, axis=(1, 2, 3)))", True),
    "Sampling with half the spread": (
        "ca4_helpers.py",
        "return z_mean + ops.exp(0.5 * z_log_var) * epsilon",
        "return z_mean + 0.5 * ops.exp(0.5 * z_log_var) * epsilon", True),
    "train_model: the shuffling seed": (
        "ca4_helpers.py",
        "orders = epoch_orders(len(train_images), seed, range(start, epochs))",
        "orders = epoch_orders(len(train_images), seed + 1, range(start, epochs))", True),
    "train_model: the schedule's end": (
        "ca4_helpers.py",
        "float(model.optimizer.learning_rate), steps, alpha=fraction)",
        "float(model.optimizer.learning_rate), steps, alpha=fraction / 2)", True),
    "make_dataset: no prefetch": (
        "ca4_helpers.py",
        "return dataset.prefetch(2).with_options(pipeline_options())",
        "return dataset.with_options(pipeline_options())", True),
    "plot_loss_curves title": (
        "ca4lib/figures.py",
        'title: str = "Loss per epoch"',
        'title: str = "Losses by epoch"', False),
    "markdown_table alignment": (
        "ca4lib/report.py",
        '"|" + "|".join("-" * width for width in widths) + "|"',
        '"|" + "|".join(":" + "-" * width for width in widths) + "|"', False),
    "TrainingLog epoch line": (
        "ca4lib/training_log.py",
        'f"{self.seconds[-1]:.1f} s  | {format_duration(left)} left")',
        'f"{self.seconds[-1]:.2f} s  | about {format_duration(left)} left")', False),
    "format_duration wording (progress lines)": (
        "ca4lib/progress.py",
        'return f"{seconds} s"',
        'return f"{seconds} seconds"', False),
    "train_model docstring": (
        "ca4_helpers.py",
        "The one training entry point of the project.",
        "The only training entry point of this project.", False),
    "train_model: a comment, and the lines below it move": (
        "ca4_helpers.py",
        "    set_seed(seed)\n",
        "    # Seed first, so that the builder's initial weights repeat.\n\n    set_seed(seed)\n",
        False),
    "train_model: an argument check's message": (
        "ca4_helpers.py",
        "expected letters, digits, '_' or '-' (a file name)",
        "expected a file name: letters, digits, '_' or '-'", False),
    "check_images: an argument check's message": (
        "ca4lib/checks.py",
        "expected pixel values in [0, 1], got values in",
        "expected normalised pixels in [0, 1]; the values span", False),
    # Rooms of ca4lib that training reaches: an edit there retrains.
    "checks: check_images returns float64": (
        "ca4lib/checks.py", "return images.astype(np.float32, copy=False)",
        "return images.astype(np.float64, copy=False)", True),
    "settings: the validation batch size": (
        "ca4lib/settings.py", "PREDICT_BATCH_SIZE = 1000", "PREDICT_BATCH_SIZE = 500", True),
    "checkpoints: EpochCheckpoint's history": (
        "ca4lib/checkpoints.py", "self.history.setdefault(metric, []).append(float(value))",
        "self.history.setdefault(metric, []).append(1.0 * float(value))", True),
    "storage: atomic_file without fsync": (
        "ca4lib/storage.py", "            os.fsync(stream.fileno())\n", "", True),
    # Rooms training does not reach: served from the cache.
    "inference: predict's batch size": (
        "ca4lib/inference.py", "batch_size: int = PREDICT_BATCH_SIZE) -> Any:",
        "batch_size: int = 2 * PREDICT_BATCH_SIZE) -> Any:", False),
    "vae_analyses: the activity threshold": (
        "ca4lib/vae_analyses.py", "ACTIVE_VARIANCE = 0.01", "ACTIVE_VARIANCE = 0.02", False),
    "likelihood: the agreement tolerance": (
        "ca4lib/likelihood.py", "AGREEMENT_NATS = 0.1", "AGREEMENT_NATS = 0.2", False),
    "figures: the print width": (
        "ca4lib/figures.py", "PRINT_WIDTH = 5.85", "PRINT_WIDTH = 6.0", False),
    "discussion_task2: a verdict's words": (
        "ca4lib/discussion_task2.py",
        "The KL weight does not trade reconstruction for KL at every step",
        "The KL weight does not trade reconstruction for KL at each step", False),
    "explorer: the zoom": (
        "ca4lib/explorer.py", "EXPLORER_ZOOM = 7", "EXPLORER_ZOOM = 8", False),
    "mnist: the advice": (
        "ca4lib/mnist.py", "Supply MNIST in one of these ways", "Supply MNIST in any of these ways",
        False),
    "kl_divergence docstring": (
        "ca4_helpers.py",
        "summed over dimensions, averaged over the batch.",
        "summed over dimensions, then the batch mean.", False),
}


@pytest.mark.parametrize("edit", list(CODE_EDITS))
def test_cache_key_follows_the_training_code(edit, key_cache, mnist_small, tmp_path,
                                             monkeypatch):
    target, old, new, retrains = CODE_EDITS[edit]
    with edited_copy(tmp_path, target, old, new) as edited:
        if retrains:
            assert_retrains(edited, mnist_small, key_cache.cache_path.parent, monkeypatch)
        else:
            assert_served(edited, mnist_small, key_cache, monkeypatch)
    assert key_cache.cache_path.is_file()  # the entry is left as it was


def test_module_constant_of_numpy_type(key_cache, mnist_small, tmp_path, monkeypatch):
    # kl_divergence scaled by a NumPy constant of the module: 1 changes nothing, 2 does.
    edit = ("ca4_helpers.py",
            "return ops.mean(ops.sum(kl_per_dimension(z_mean, z_log_var), axis=1))",
            "return KL_SCALE * ops.mean(ops.sum(kl_per_dimension(z_mean, z_log_var), axis=1))")
    with edited_copy(tmp_path, *edit, appended="\nKL_SCALE = np.float32(1.0)\n") as edited:
        cache_dir = tmp_path / "cache"
        assert train_key_vae(edited, mnist_small, cache_dir).source == "trained"
        with monkeypatch.context() as patch:
            forbid_fit(patch)
            assert train_key_vae(edited, mnist_small, cache_dir).source == "cache"
        monkeypatch.setattr(edited, "KL_SCALE", np.float32(2.0))
        assert_retrains(edited, mnist_small, cache_dir, monkeypatch)


# A class as the notebook defines it: in __main__, where inspect finds no source.
NOTEBOOK_SAMPLING = """
class NotebookSampling(layers.Layer):
    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        epsilon = keras.random.normal(ops.shape(z_mean), dtype=z_mean.dtype,
                                      seed=self.seed_generator)
        return z_mean + SPREAD * ops.exp(0.5 * z_log_var) * epsilon
"""


def notebook_class(spread: float):
    """Define NotebookSampling as a notebook cell does: fresh, in a namespace named __main__."""
    namespace = {"__name__": "__main__", "layers": keras.layers, "keras": keras,
                 "ops": keras.ops, "SPREAD": spread}
    exec(NOTEBOOK_SAMPLING, namespace)
    return namespace["NotebookSampling"]


def test_class_replaced_from_the_notebook(key_cache, mnist_small, tmp_path, monkeypatch):
    first = notebook_class(1.0)
    with pytest.raises((OSError, TypeError)):
        inspect.getsource(first)  # what made the text-based key fail
    cache_dir = tmp_path / "cache"
    monkeypatch.setattr(ca4, "Sampling", first)
    trained = train_key_vae(ca4, mnist_small, cache_dir)
    assert trained.source == "trained"
    assert isinstance(trained.model.sampling, first)
    # Same code (another class object at another address, as after re-running the cell).
    monkeypatch.setattr(ca4, "Sampling", notebook_class(1.0))
    with monkeypatch.context() as patch:
        forbid_fit(patch)
        assert train_key_vae(ca4, mnist_small, cache_dir).source == "cache"
    # Another value of a notebook global the class reads.
    monkeypatch.setattr(ca4, "Sampling", notebook_class(0.5))
    assert_retrains(ca4, mnist_small, cache_dir, monkeypatch)
    # The module's own class is another code again: the unedited cache entry.
    monkeypatch.undo()
    assert_served(ca4, mnist_small, key_cache, monkeypatch)


def test_edit_after_import_then_train_then_restart(key_cache, mnist_small, tmp_path):
    # The student imports the module, edits a loss in the editor and trains without a
    # restart: the code that runs is the unedited one, so the model is stored under the
    # unedited code's key. After a restart, the edited code must not be served that model.
    module_path = tmp_path / "student" / "ca4_student.py"
    module_path.parent.mkdir()
    module_path.write_text(edited_source())
    cache_dir = tmp_path / "cache"
    edited_text = edited_source(*list(CODE_EDITS["kl_divergence doubled"])[:3])
    first = run_in_new_process(module_path, cache_dir, edit_before_training=edited_text)
    assert first["source"] == "trained"
    assert first["cache_file"] == key_cache.cache_path.name  # the key of the code that ran
    second = run_in_new_process(module_path, cache_dir, forbid_fit=True)
    assert second["source"] == "fit called", second


def test_second_process_hits_the_cache(key_cache, tmp_path):
    module_path = tmp_path / "ca4_copy.py"
    module_path.write_text(edited_source())
    result = run_in_new_process(module_path, key_cache.cache_path.parent, forbid_fit=True)
    assert result == {"source": "cache", "cache_file": key_cache.cache_path.name}


NEW_PROCESS = """
import json, sys
from pathlib import Path
module_path, cache_dir, edit, forbid = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
sys.path.insert(0, str(module_path.parent))
module = __import__(module_path.stem)
import keras
if edit:
    module_path.write_text(Path(edit).read_text())  # edited on disk, after the import
class FitCalled(Exception):
    pass
if forbid == "1":
    def fit(self, *args, **kwargs):
        raise FitCalled()
    keras.Model.fit = fit
(x_train, _), (x_test, _) = module.load_mnist()
data = {{"train_images": module.normalize_images(x_train[:{train}]),
        "validation_images": module.normalize_images(x_test[:{validation}])}}
KEY_DATA, BATCH_SIZE = {key_data!r}, {batch}
{train_key_vae}
try:
    result = train_key_vae(module, data, cache_dir)
    print(json.dumps({{"source": result.source, "cache_file": result.cache_path.name}}))
except FitCalled:
    print(json.dumps({{"source": "fit called"}}))
"""


def run_in_new_process(module_path: Path, cache_dir: Path, *, edit_before_training: str = "",
                       forbid_fit: bool = False) -> dict:
    """Train the key VAE in a fresh Python process with the module at `module_path`."""
    edit_file = ""
    if edit_before_training:
        edit_file = str(module_path.with_suffix(".edited"))
        Path(edit_file).write_text(edit_before_training)
    # The same builder code as in this process (a lambda in train_key_vae), so the same key.
    script = NEW_PROCESS.format(train=KEY_DATA["train"], validation=KEY_DATA["validation"],
                                key_data=KEY_DATA, batch=BATCH_SIZE,
                                train_key_vae=inspect.getsource(train_key_vae))
    environment = {**os.environ, "CA4_MNIST": str(mnist.find_mnist())}
    environment.pop("CA4_RETRAIN", None)
    completed = subprocess.run(
        [sys.executable, "-c", script, str(module_path), str(cache_dir), edit_file,
         "1" if forbid_fit else "0"],
        capture_output=True, text=True, env=environment, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_autoreload_after_an_edit(mnist_small, tmp_path, monkeypatch):
    # %autoreload 2 patches the edited functions in place: same objects, new code.
    from IPython.extensions.autoreload import ModuleReloader

    path = tmp_path / "ca4_autoreloaded.py"
    path.write_text(edited_source())
    module = import_file(path, "ca4_autoreloaded")
    try:
        reloader = ModuleReloader()
        reloader.enabled = reloader.check_all = True
        reloader.check()  # records the file's time
        cache_dir = tmp_path / "cache"
        before = train_key_vae(module, mnist_small, cache_dir)
        assert before.source == "trained"
        kl_divergence = module.kl_divergence
        path.write_text(edited_source(*list(CODE_EDITS["kl_divergence doubled"])[:3]))
        modified = path.stat().st_mtime + 2
        os.utime(path, (modified, modified))
        reloader.check()
        assert module.kl_divergence is kl_divergence  # patched in place, not replaced
        assert "2.0" in repr(module.kl_divergence.__code__.co_consts)
        assert_retrains(module, mnist_small, cache_dir, monkeypatch)
    finally:
        sys.modules.pop("ca4_autoreloaded", None)


def loss_function(code: str):
    """A loss defined by `code` in a fresh namespace: a new function object each time."""
    namespace = {"keras": keras}
    exec(textwrap.dedent(code), namespace)
    return namespace["loss"]


def autoencoder_with_loss(loss) -> ca4.Autoencoder:
    model = ca4.build_autoencoder(2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    return model


def test_loss_given_as_a_function_is_keyed_by_its_code():
    bce = "def loss(y, p):\n    return keras.ops.mean(keras.ops.binary_crossentropy(y, p))\n"
    halved = bce.replace("return keras", "return 0.5 * keras")
    keys = []
    for code in (bce, bce, halved):
        ca4.set_seed(0)
        function = loss_function(code)
        model = autoencoder_with_loss(function)
        keys.append(ca4._training_key(model, lambda f=function: autoencoder_with_loss(f), {}))
    assert keys[0] == keys[1]  # two function objects, one code: no address in the key
    assert keys[0] != keys[2]


def test_dtype_policy_is_part_of_the_key():
    def key() -> str:
        ca4.set_seed(0)
        return ca4._training_key(ca4.build_autoencoder(2), ca4.build_autoencoder, {})

    float32 = key()
    assert key() == float32  # the second build's layers are numbered differently by Keras
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        bfloat16 = key()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert bfloat16 != float32


def test_only_automatic_layer_names_leave_the_signature():
    ca4.set_seed(0)
    text = json.dumps(cache_key.model_signature(ca4.build_autoencoder(2)))
    # Names the code gives stay; Keras' numbered ones (conv2d_3, dense_7, adam_2) are replaced.
    assert all(f'"{name}"' in text for name in ("code", "pixels", "input_scale", "images"))
    assert not any(name in text for name in ('"conv2d', '"dense', '"max_pooling2d', '"adam'))
    assert text.count('"<automatic>"') >= 9  # 4 encoder + 5 decoder layers, and the optimiser


# --- Project code reached through sub-modules -------------------------------------------------

CHAIN_PACKAGE = {
    "__init__.py": "",
    "room.py": (
        "import ca4_helpers as ca4\n\n"
        "SCALE = 1.0\n\n"
        "def build2():\n"
        "    return ca4.build_autoencoder(2, learning_rate=1e-3)\n"),
    "sub/__init__.py": "",
    "sub/deep.py": "k = 1.0\n",
}
SCALED_LAYER = """
class Scaled(keras.layers.Layer):
    def call(self, inputs):
        return inputs * chain.sub.deep.k
"""


@pytest.fixture
def chain(tmp_path):
    """A project package beside the notebook: chain.room.build2() and chain.sub.deep.k."""
    name = f"chain_{next(EDIT_NUMBERS)}"
    for path, text in CHAIN_PACKAGE.items():
        (tmp_path / name / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name / path).write_text(text)
    sys.path.insert(0, str(tmp_path))
    try:
        package = importlib.import_module(name)
        importlib.import_module(f"{name}.room")
        importlib.import_module(f"{name}.sub.deep")
        yield package
    finally:
        sys.path.remove(str(tmp_path))
        for module in [module for module in sys.modules if module.split(".")[0] == name]:
            sys.modules.pop(module)


def key_of(build) -> str:
    ca4.set_seed(0)
    return ca4._training_key(build(), build, {})


def test_a_builder_reached_through_a_sub_module_from_a_notebook_lambda(chain):
    namespace = {"__name__": "__main__", "chain": chain}
    exec("build = lambda: chain.room.build2()", namespace)
    before = key_of(namespace["build"])
    assert key_of(namespace["build"]) == before
    edited = "def build2():\n    return ca4.build_autoencoder(2, learning_rate=1e-3 * SCALE)\n"
    scope = dict(vars(chain.room))
    exec(edited, scope)
    chain.room.build2.__code__ = scope["build2"].__code__  # an edit, as %autoreload applies it
    assert key_of(namespace["build"]) != before  # the code that runs is another


def test_a_constant_three_modules_down_is_in_the_key(chain, monkeypatch):
    namespace = {"__name__": "__main__", "chain": chain, "keras": keras}
    exec(SCALED_LAYER, namespace)

    def build():
        inputs = keras.Input((28, 28, 1))
        model = keras.Model(inputs, namespace["Scaled"]()(inputs))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
        return model

    before = key_of(build)
    assert key_of(build) == before
    # Neither the layers, their weights nor the optimiser change: only the code's walk sees k.
    monkeypatch.setattr(chain.sub.deep, "k", 2.0)
    assert key_of(build) != before

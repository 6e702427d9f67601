"""The trained-model cache key: a hash of the compiled code that runs, not the text on disk.

`ca4_helpers.train_model` keys every model with `training_key`, and `inference.cached_analysis`
keys every slow analysis with the same description of code (`training_code`). README,
*The trained-model cache*, says what the key covers and what it leaves out.
"""

from __future__ import annotations
import __future__

import dataclasses
import dis
import functools
import hashlib
import inspect
import json
import operator
import os
import platform
import re
import site
import sys
import sysconfig
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ca4lib.backend import keras, tf
from ca4lib.settings import CACHE_FORMAT_VERSION


def library_versions() -> dict[str, str]:
    """Return the versions of Python and the libraries that change numerical results."""
    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__}


def array_fingerprint(array: np.ndarray) -> str:
    """Return a short hash of an array's shape, dtype and bytes (for cache keys)."""
    # SHA-256, not BLAKE2: CPUs with SHA extensions hash the 188 MB training set in half
    # the time, and a cached re-run hashes it once per model.
    digest = hashlib.sha256(f"{array.shape}{array.dtype}".encode())
    digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()[:32]


# --- The cache key: the compiled code that runs, not the text on disk -----------------------
#
# A trained model is identified by the code that built and trained it, read from the code
# objects the process runs (a file edited after import, a function replaced from the notebook
# or by %autoreload all count as what they run), and by its settings, data and initial state.
# What cannot change a trained model is left out, so that rewording it retrains nothing:
# docstrings, comments and line numbers (not in the compared bytecode), the text of raised
# exceptions, the progress and record wording, and the key's own machinery.
_NOT_IN_TRAINING_KEY = frozenset({
    "TrainingLog", "RunProgress", "format_duration", "TrainingResult", "TrainingDivergedError",
    "_training_key",  # and with it everything only the key's machinery reaches
})

# Where Python and pip install modules: their code is identified by the library versions.
_LIBRARY_PATHS = tuple(sorted({
    str(Path(path).resolve()) for path in (
        *(sysconfig.get_paths()[name] for name in ("stdlib", "platstdlib", "purelib", "platlib")),
        *site.getsitepackages(), site.getusersitepackages())}))

_JUMP_OPCODES = frozenset(dis.hasjrel) | frozenset(dis.hasjabs)

# `from __future__ import annotations` and the like mark every code object of a file, whatever
# it computes.
_FUTURE_FLAGS = functools.reduce(operator.or_, (getattr(__future__, feature).compiler_flag
                                                for feature in __future__.all_feature_names))

# Instructions whose argument is a name the code looks up: globals, attributes, imports.
_NAME_OPCODES = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_ATTR", "LOAD_METHOD",
                           "IMPORT_NAME", "IMPORT_FROM"})

# Entries every class dictionary has that say nothing about what the class computes.
_CLASS_BOOKKEEPING = frozenset({"__doc__", "__module__", "__qualname__", "__dict__",
                                "__weakref__", "__annotations__", "__firstlineno__",
                                "__static_attributes__", "__dataclass_fields__",
                                "__dataclass_params__", "__match_args__"})


def _is_library_module(module_name: str | None) -> bool:
    """True for a module installed with Python or by pip; False for the project's and __main__."""
    if module_name in (None, "__main__"):
        return False
    module = sys.modules.get(module_name)
    if module is None or module_name in sys.builtin_module_names:
        return module is not None
    paths = [getattr(module, "__file__", None)] if getattr(module, "__file__", None) else list(
        getattr(module, "__path__", []))  # a namespace package has folders, no file
    if not paths:
        return True  # a frozen module
    resolved = [str(Path(path).resolve()) for path in paths]
    return all(any(path.startswith(root + os.sep) for root in _LIBRARY_PATHS)
               for path in resolved)


def _code_tokens(code: types.CodeType, follow: Callable[[Any], Any]
                 ) -> tuple[list[Any], set[str]]:
    """Return a process-independent description of a code object and the names it looks up.

    The instructions are compared by name and argument, constants by value (nested code
    objects recursively), jumps by the instruction they reach. Left out: docstrings and other
    constants no instruction loads, line numbers, the file name, and every straight block of
    instructions that ends in `raise X(...)`: building an error message cannot change a
    result, so rewording one (or an argument check's) keeps the key.
    """
    instructions = list(dis.get_instructions(code))
    blocks: list[list[dis.Instruction]] = [[]]
    for instruction in instructions:
        if instruction.is_jump_target and blocks[-1]:
            blocks.append([])
        blocks[-1].append(instruction)
        if instruction.opcode in _JUMP_OPCODES or instruction.opname in (
                "RETURN_VALUE", "RAISE_VARARGS", "RERAISE"):
            blocks.append([])
    kept = [instruction for block in blocks if block
            if not (block[-1].opname == "RAISE_VARARGS" and block[-1].arg)
            for instruction in block]
    position = {instruction.offset: index for index, instruction in enumerate(kept)}
    names: set[str] = set()
    tokens: list[Any] = [code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount,
                         code.co_flags & ~_FUTURE_FLAGS, list(code.co_varnames[:code.co_argcount
                                                              + code.co_kwonlyargcount])]
    for instruction in kept:
        if instruction.opname == "LOAD_CONST":
            value = instruction.argval
            if isinstance(value, types.CodeType):
                nested, nested_names = _code_tokens(value, follow)
                names |= nested_names
                tokens.append(["code", nested])
            else:
                tokens.append(["const", canonical(value, follow)])
        elif instruction.opcode in _JUMP_OPCODES:
            tokens.append([instruction.opname, position.get(instruction.argval, "raise")])
        else:
            if instruction.opname in _NAME_OPCODES:
                names.add(instruction.argval)
            tokens.append([instruction.opname, instruction.argrepr])
    for entry in dis.Bytecode(code).exception_entries:
        tokens.append(["except", *(min((i for o, i in position.items() if o >= offset),
                                       default=len(kept))
                                   for offset in (entry.start, entry.end, entry.target)),
                       entry.depth, entry.lasti])
    return tokens, names


def canonical(value: Any, follow: Callable[[Any], Any], depth: int = 0) -> Any:
    """Describe a value for the key in JSON terms, with nothing that differs between processes.

    Numbers and strings stand for themselves, arrays for a hash of their bytes, containers for
    their items; functions and classes are handed to `follow`, which returns how the key names
    them. Any other object is described by its type only (never its repr, which may hold a
    memory address).
    """
    if depth > 20:
        raise ValueError("value: nested too deeply to describe for the cache key")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return ["float", repr(value)]  # keeps -0.0, nan and inf apart and JSON-safe
    if isinstance(value, bytes):
        return ["bytes", hashlib.sha256(value).hexdigest()]
    if isinstance(value, np.ndarray):
        return ["array", str(value.dtype), list(value.shape), array_fingerprint(value)]
    if isinstance(value, np.generic):
        return ["numpy", str(value.dtype), repr(value.item())]
    if isinstance(value, (list, tuple)):
        return [type(value).__name__, [canonical(item, follow, depth + 1) for item in value]]
    if isinstance(value, (set, frozenset)):
        items = [canonical(item, follow, depth + 1) for item in value]
        return ["set", sorted(items, key=lambda item: json.dumps(item, sort_keys=True))]
    if isinstance(value, Mapping):
        items = [[canonical(k, follow, depth + 1), canonical(v, follow, depth + 1)]
                 for k, v in value.items()]
        return ["dict", sorted(items, key=lambda item: json.dumps(item, sort_keys=True))]
    if isinstance(value, types.CodeType):
        return ["code", _code_tokens(value, follow)[0]]
    if (inspect.isfunction(value) or inspect.isclass(value) or inspect.ismethod(value)
            or inspect.ismodule(value) or isinstance(value, functools.partial)
            or inspect.isbuiltin(value)):
        return follow(value)
    if dataclasses.is_dataclass(value):
        return [type(value).__qualname__,
                canonical({field.name: getattr(value, field.name)
                            for field in dataclasses.fields(value)}, follow, depth + 1)]
    return ["object", f"{type(value).__module__}.{type(value).__qualname__}"]


def training_code(*roots: Any) -> list[list[Any]]:
    """Describe the compiled code of every function and class that `roots` reach.

    Followed transitively: the names each function's code looks up, in the function's own
    globals (this module's, the notebook's or another module's), its closure and its
    defaults; a class's methods, properties and bases; the attributes a function reads from
    a project module (`ca4.build_vae` in the notebook). Library code (Keras, NumPy, the
    standard library) is named, not described: the library versions stand for it. Returns
    one [qualified name, description] entry per object, sorted, so that a fresh process that
    runs the same code gets the same list.
    """
    entries: dict[Any, list[Any]] = {}
    pending: list[Any] = []

    def follow(item: Any) -> Any:
        if isinstance(item, functools.partial):
            return ["partial", follow(item.func), canonical(item.args, follow),
                    canonical(item.keywords, follow)]
        if inspect.ismethod(item):
            return ["method", follow(item.__func__)]
        if inspect.ismodule(item):
            return ["module", item.__name__ if _is_library_module(item.__name__) else "project"]
        module = getattr(item, "__module__", None)
        name = getattr(item, "__qualname__", getattr(item, "__name__", type(item).__name__))
        if inspect.isbuiltin(item) or _is_library_module(module):
            entries.setdefault(f"{module}.{name}", [f"{module}.{name}", "library"])
            return ["library", f"{module}.{name}"]
        if not (inspect.isfunction(item) or inspect.isclass(item)):
            # A callable object: its class's code, and its state as values.
            return ["instance", follow(type(item)), canonical(vars(item), follow)]
        if id(item) not in entries:
            entries[id(item)] = [name, None]
            pending.append(item)
        return ["code", name]

    for root in roots:
        follow(root)
    while pending:
        item = pending.pop()
        entries[id(item)][1] = _code_entry(item, follow)
    return sorted(entries.values(), key=lambda entry: json.dumps(entry, sort_keys=True))


def name_only(item: Any) -> list[str]:
    """Name a callable found in a layer or optimiser config (its code is in the key already)."""
    return ["callable", getattr(item, "__qualname__", type(item).__qualname__)]


def _code_entry(item: Any, follow: Callable[[Any], Any]) -> Any:
    """Describe one project function or class for training_code."""
    if inspect.isclass(item):
        members = []
        for name, member in sorted(vars(item).items()):
            if name in _CLASS_BOOKKEEPING:
                continue
            if isinstance(member, property):
                member = [follow(part) if part is not None else None
                          for part in (member.fget, member.fset, member.fdel)]
            elif isinstance(member, (staticmethod, classmethod)):
                member = [type(member).__name__, follow(member.__func__)]
            else:
                member = canonical(member, follow)
            members.append([name, member])
        return ["class", [follow(base) for base in item.__bases__], members]
    tokens, names = _code_tokens(item.__code__, follow)
    namespaces = dict(item.__globals__)
    closure = dict(zip(item.__code__.co_freevars,
                       (cell.cell_contents for cell in item.__closure__ or ())))
    looked_up = {}
    for name in sorted(names - _NOT_IN_TRAINING_KEY):
        if name in namespaces:
            looked_up[name] = canonical(namespaces[name], follow)
    # Attributes read from project modules, into their sub-modules: `ca4.build_vae` (from the
    # notebook), `room.build2` and `helpers.room.build2`, `pkg.sub.deep.k`. A project module
    # reached by a name the code looks up gives each attribute that bears such a name, and a
    # sub-module among them is searched the same way.
    wanted = sorted(names - _NOT_IN_TRAINING_KEY)
    pending = [("", namespaces[owner] if owner in looked_up else closure[owner])
               for owner in [*looked_up, *closure]]
    searched: set[int] = set()
    while pending:
        prefix, module = pending.pop(0)
        if (not inspect.ismodule(module) or _is_library_module(module.__name__)
                or id(module) in searched):
            continue
        searched.add(id(module))
        for name in wanted:
            if hasattr(module, name):
                value = getattr(module, name)
                looked_up[f"<module>{prefix}.{name}"] = canonical(value, follow)
                pending.append((f"{prefix}.{name}", value))
    return ["function", tokens, looked_up,
            {name: canonical(value, follow) for name, value in closure.items()},
            canonical(item.__defaults__, follow), canonical(item.__kwdefaults__, follow)]


def model_signature(model: keras.Model) -> list[Any]:
    """Describe a model's layers, optimiser and loss; only the names Keras numbers go.

    An automatic name (`conv2d_7`, `adam_1`) depends on how many layers or optimisers the
    process built before, so it is replaced; names given in the code, and every other config
    entry (the dtype policy among them), stay.
    """
    description: list[Any] = [type(model).__qualname__, getattr(model, "kl_weight", None)]
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.Model):
            continue
        description.append([type(layer).__qualname__,
                            canonical(_without_automatic_name(layer), name_only),
                            [list(v.shape) for v in layer.weights]])
    optimizer = getattr(model, "optimizer", None)  # none before compile()
    description.append(None if optimizer is None else canonical(
        _without_automatic_name(optimizer), name_only))
    description.append(canonical(getattr(model, "loss", None), name_only))
    return description


def _without_automatic_name(item: Any) -> dict[str, Any]:
    """Return a layer's or optimiser's config with a name Keras generated replaced."""
    config = dict(item.get_config())
    automatic = re.escape(keras.src.utils.naming.to_snake_case(type(item).__name__))
    if re.fullmatch(rf"{automatic}(_\d+)?", str(config.get("name", ""))):
        config["name"] = "<automatic>"
    return config


def variables_digest(model: keras.Model) -> str:
    """Return a hash of a model's variables: initial weights and random-generator states."""
    digest = hashlib.blake2b(digest_size=16)
    for variable in model.variables:
        digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
    return digest.hexdigest()


def training_key(model: keras.Model, code: Sequence[Callable[..., Any]],
                 settings: Mapping[str, Any]) -> str:
    """Return a hash of everything that changes a trained model (README: the cache).

    `code` lists the functions that build and train it (train_model and the builder); the
    model's loss, when it is a function, and the classes of its layers are added.
    """
    loss = getattr(model, "loss", None)
    roots = [*code, *(callable(loss) * [loss]),
             *{type(layer) for layer in model._flatten_layers(include_self=True)}]
    described = {"format": CACHE_FORMAT_VERSION, "code": training_code(*roots),
                 "architecture": model_signature(model),
                 "initial_variables": variables_digest(model),
                 "settings": canonical(dict(settings), name_only),
                 "versions": library_versions()}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()

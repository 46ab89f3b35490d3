"""Weights for compiled backends: load, check against the graph, or initialise.

Weights are a flat ``dict`` from state_dict key (``layer1.0.conv1.weight``: the IR name
and the op table's weight name) to a NumPy array. They come from

* a file: ``.safetensors``, or a PyTorch checkpoint read with ``torch.load(...,
  weights_only=True)`` (never unpickling code) — a torchvision state_dict works for the
  ResNet examples, since the IR names are torchvision's. A training checkpoint's weights
  are read from its ``state_dict``, ``model``, ``ema``, ``model_ema`` or ``state_dict_ema``
  entry (:data:`WRAPPERS`), and :func:`check` drops the ``module.`` prefix that
  DistributedDataParallel puts on every key, each with a note on stderr;
* an in-process module built by ``Network.to_torch()``;
* a seed: PyTorch's default initialisation rules, drawn from NumPy (no torch needed).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import SpecError
from .ir import Graph
from .ops import Weight

if TYPE_CHECKING:
    import numpy as np

Weights = dict[str, "np.ndarray"]


class WeightsError(SpecError):
    """Weights that do not fit the network: missing, unexpected or mis-shaped keys."""

    code = "E0601"


class WeightsPath(os.PathLike):
    """A weights file to read with options: ``strict`` makes NaN or infinite values an
    error (:class:`WeightsError`) instead of a warning. Accepted wherever a path is."""

    def __init__(self, path: str | os.PathLike[str], *, strict: bool = False) -> None:
        self.path = os.fspath(path)
        self.strict = strict

    def __fspath__(self) -> str:
        return self.path

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"WeightsPath({self.path!r}, strict={self.strict})"


# Warnings already printed, so that loading one file several times in a run (tuning, the
# build, --check) says each thing once.
_WARNED: set[tuple[Any, str]] = set()


def _warn(message: str, once: Any = None) -> None:
    """One line on stderr: ``resdsl: warning: ...`` (or ``note``), once per file version."""
    if once is not None:
        if (once, message) in _WARNED:
            return
        _WARNED.add((once, message))
    print(f"resdsl: {message}", file=sys.stderr)


def _identity(path: str) -> tuple[str, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.realpath(path), st.st_mtime_ns, st.st_size)


def expected(graph: Graph) -> dict[str, Weight]:
    """Every weight the graph's ops own, by state_dict key, in graph order."""
    return {node.key(w.name): w for node in graph.nodes() for w in graph.weights_of(node.name)}


def check(
    graph: Graph,
    weights: Mapping[str, Any],
    source: str = "the weights",
    *,
    strict: bool = False,
    once: Any = None,
) -> Weights:
    """Validate keys, dtypes and shapes (strictly, like ``load_state_dict(strict=True)``).

    A ``module.`` prefix on every key (a DistributedDataParallel state_dict) is removed,
    with a note on stderr, when that matches more of the network's keys. The first missing
    or unexpected key is the error; hints name the others.

    NaN or infinite values are a warning on stderr, or with ``strict`` a WeightsError.
    """
    import numpy as np

    for key in weights:
        if not isinstance(key, str):
            raise WeightsError(_key_message(source, key))
    want = expected(graph)
    weights = _without_ddp_prefix(want, weights, source, once)
    missing = [k for k, w in want.items() if k not in weights and w.required]
    unexpected = [k for k in weights if k not in want]
    if missing:
        w = want[missing[0]]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise WeightsError(
            f"{source} lack `{missing[0]}` of shape {_shape(w.shape)}{more}",
            hints=_near(missing[0], weights)
            + _named("also missing", missing[1:])
            + _named("unexpected", unexpected),
        )
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise WeightsError(
            f"{source} have `{unexpected[0]}`, which the network does not{more}",
            hints=_near(unexpected[0], want) + _named("also unexpected", unexpected[1:]),
        )
    out: Weights = {}
    for key, w in want.items():
        if key not in weights:
            continue
        array = _as_array(source, key, weights[key])
        if array.dtype.kind not in "biuf" or array.dtype.fields is not None:
            raise WeightsError(f"`{key}` in {source} is {_dtype_kind(array.dtype)}; "
                               "weights must be real numbers")  # fmt: skip
        if tuple(array.shape) != tuple(w.shape):
            raise WeightsError(
                f"`{key}` has shape {_shape(array.shape)} in {source}, "
                f"the network needs {_shape(w.shape)}"
            )
        out[key] = array.astype(w.dtype, copy=False)
        if out[key].dtype.kind == "f":
            count = out[key].size - int(np.count_nonzero(np.isfinite(out[key])))
            if count:
                message = (
                    f"`{key}` in {source} holds {count} NaN or infinite value(s) "
                    f"(of {out[key].size})"
                )
                if strict:
                    raise WeightsError(f"{message}; strict mode (--strict) refuses them")
                _warn(f"warning: {message}", once)
    return out


def _as_array(source: str, key: str, value: Any) -> np.ndarray:
    """A weight as NumPy: a torch tensor through the checks files get (bfloat16 widened;
    sparse, quantised, meta, float8 and complex refused), anything else ``np.asarray``."""
    import numpy as np

    if type(value).__module__.startswith("torch"):
        import torch

        if isinstance(value, torch.Tensor):
            return _tensor_to_numpy(source, key, value, torch)
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as e:
        raise WeightsError(f"`{key}` in {source} is not an array of numbers: {_text(e)}") from None


def _key_message(source: str, key: Any) -> str:
    return (
        f"{source}: the key {key!r} ({type(key).__name__}) is not a string; a state_dict's "
        "keys are names such as `conv1.weight`"
    )


def _dtype_kind(dtype: Any) -> str:
    if getattr(dtype, "fields", None) is not None:
        return f"a structured dtype ({dtype})"
    kinds = {"c": "complex", "U": "text", "S": "bytes", "O": "Python objects", "V": "raw bytes"}
    kind = kinds.get(getattr(dtype, "kind", ""), "")
    return f"{kind} ({dtype})" if kind else str(dtype)


def _shape(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


_DDP = "module."  # DistributedDataParallel's (and DataParallel's) prefix on every key


def _without_ddp_prefix(
    want: Mapping[str, Weight], weights: Mapping[str, Any], source: str, once: Any
) -> Mapping[str, Any]:
    """``weights`` without the ``module.`` prefix that a wrapped model's state_dict has on
    every key, when stripping it matches more of the network's keys (with a note)."""
    if not weights or not all(k.startswith(_DDP) for k in weights):
        return weights
    stripped = {k.removeprefix(_DDP): v for k, v in weights.items()}
    if sum(k in want for k in stripped) <= sum(k in want for k in weights):
        return weights  # the network's own names start with `module.`
    _warn(f"note: {source}: removed the `{_DDP}` prefix (DistributedDataParallel) from "
          "every key", once)  # fmt: skip
    return stripped


def _named(label: str, keys: list[str], limit: int = 8) -> list[str]:
    """A hint naming ``keys`` (the first ``limit`` of them)."""
    if not keys:
        return []
    names = ", ".join(f"`{k}`" for k in keys[:limit])
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return [f"{label}: {names}{more}"]


def _near(key: str, keys) -> list[str]:
    import difflib

    close = difflib.get_close_matches(key, list(keys), n=1, cutoff=0.7)
    return [f"closest key: `{close[0]}`"] if close else []


def initialise(graph: Graph, seed: int = 0) -> Weights:
    """Deterministic weights following PyTorch's default layer initialisation."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out: Weights = {}
    for key, w in expected(graph).items():
        if w.init == "uniform":
            bound = w.value if w.value is not None else 1.0 / math.sqrt(max(w.fan_in, 1))
            out[key] = rng.uniform(-bound, bound, w.shape).astype(w.dtype)
        elif w.init == "normal":
            out[key] = rng.normal(0.0, w.std, w.shape).astype(w.dtype)
        elif w.init == "constant":
            out[key] = np.full(w.shape, w.value, dtype=w.dtype)
        else:
            fill = np.ones if w.init == "ones" else np.zeros
            out[key] = fill(w.shape, dtype=w.dtype)
    return out


def from_module(module: Any) -> Weights:
    """The state_dict of an ``nn.Module`` (e.g. from ``Network.to_torch()``) as NumPy."""
    import torch

    return {k: _tensor_to_numpy("the module", k, v, torch) for k, v in module.state_dict().items()}


def load_file(path: str) -> Weights:
    """Read ``.safetensors`` or a PyTorch checkpoint (``weights_only=True``).

    A checkpoint that is not itself a dict of tensors is unwrapped: its weights are the
    first of the entries in :data:`WRAPPERS` that holds them (nested ones too), and a note
    on stderr names the entry used.

    bfloat16 tensors are converted to float32 (with a note on stderr); float8, quantised,
    sparse, meta and complex tensors and keys that are not strings are a WeightsError.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"no such weights file: {path}")
    if os.path.getsize(path) == 0:
        raise WeightsError(f"cannot read {path}: the file is empty")
    if path.endswith(".safetensors"):
        state, converted = _load_safetensors(path)
    else:
        state, converted = _load_torch(path)
    if converted:
        converted = sorted(converted)
        more = f" (and {len(converted) - 1} more)" if len(converted) > 1 else ""
        _warn(f"note: {path}: converted bfloat16 `{converted[0]}`{more} to float32",
              _identity(path))  # fmt: skip
    return state


def _load_safetensors(path: str) -> tuple[Weights, list[str]]:
    from safetensors import safe_open

    state: Weights = {}
    converted: list[str] = []
    try:
        with safe_open(path, framework="numpy") as f:
            for key in f.keys():  # noqa: SIM118 (a safe_open handle is not a dict)
                kind = f.get_slice(key).get_dtype()
                if kind == "BF16":
                    state[key] = _bf16_from_safetensors(path, key)
                    converted.append(key)
                    continue
                if kind.startswith(("F8", "F6", "F4", "E8")):
                    raise WeightsError(_narrow_float(path, key, kind))
                if kind.startswith("C"):
                    raise WeightsError(f"{path}: `{key}` is complex ({kind}); weights must "
                                       "be real numbers")  # fmt: skip
                state[key] = f.get_tensor(key)
    except WeightsError:
        raise
    except Exception as e:  # the library raises several kinds for a corrupt file
        raise WeightsError(f"cannot read {path} as safetensors: {_text(e)}") from None
    return state, converted


def _bf16_from_safetensors(path: str, key: str) -> np.ndarray:
    """A BF16 tensor as float32: NumPy has no bfloat16; its bits are a float32's top half."""
    import numpy as np

    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))  # safe_open has validated it
        info = header[key]
        begin, end = info["data_offsets"]
        f.seek(8 + size + begin)
        raw = np.frombuffer(f.read(end - begin), dtype="<u2")
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])


def _narrow_float(path: str, key: str, dtype: str) -> str:
    return (
        f"{path}: `{key}` is {dtype}, a float format resdsl cannot read; "
        "convert the checkpoint to float32, float16 or bfloat16"
    )


def _load_torch(path: str) -> tuple[Weights, list[str]]:
    try:
        import torch
    except ImportError:
        raise WeightsError(
            f"{path} is not .safetensors; reading PyTorch checkpoints needs torch installed"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for anything but tensors and containers
        raise WeightsError(f"cannot read {path} as a PyTorch state_dict: {_text(e)}") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state_dict (a dict of tensors)")
    entries = _unwrap(state, torch)
    if entries:
        for key in entries:
            state = state[key]
        entry = "` entry's `".join(entries)
        _warn(f"note: {path}: read the weights from the checkpoint's `{entry}` entry",
              _identity(path))  # fmt: skip
    out: Weights = {}
    converted: list[str] = []
    for key, value in state.items():
        if not isinstance(key, str):
            raise WeightsError(_key_message(path, key))
        if not isinstance(value, torch.Tensor):
            raise WeightsError(
                f"{path} does not hold a state_dict (a dict of tensors): "
                f"`{key}` is a {type(value).__name__}",
                hints=[f"a checkpoint's weights are read from its {_WRAPPER_LIST} entry"],
            )
        out[key] = _tensor_to_numpy(path, key, value, torch)
        if value.dtype == torch.bfloat16:
            converted.append(key)
    return out, converted


# Entries of a training checkpoint that hold the model's state_dict, in order of preference:
# the plain weights (PyTorch's and Lightning's `state_dict`, torchvision's and DeiT's `model`)
# before the exponential moving averages (timm's `state_dict_ema`, `model_ema`, `ema`).
WRAPPERS = ("state_dict", "model", "ema", "model_ema", "state_dict_ema")
_WRAPPER_LIST = ", ".join(f"`{w}`" for w in WRAPPERS[:-1]) + f" or `{WRAPPERS[-1]}`"


def _unwrap(state: dict, torch: Any, depth: int = 0) -> list[str]:
    """The chain of entries (``["state_dict"]``, possibly nested) leading from a checkpoint to
    its tensors; empty when ``state`` is a state_dict itself or holds no such entry."""
    if depth > 2 or all(isinstance(v, torch.Tensor) for v in state.values()):
        return []
    for key in WRAPPERS:
        inner = state.get(key)
        if not isinstance(inner, dict) or not inner:
            continue
        if all(isinstance(v, torch.Tensor) for v in inner.values()):
            return [key]
        if rest := _unwrap(inner, torch, depth + 1):
            return [key, *rest]
    return []


def _tensor_to_numpy(path: str, key: str, value: Any, torch: Any) -> np.ndarray:
    dtype = str(value.dtype).removeprefix("torch.")
    if value.is_meta:
        raise WeightsError(f"{path}: `{key}` is a meta tensor, which holds no data")
    if value.layout != torch.strided:
        raise WeightsError(f"{path}: `{key}` is a sparse tensor ({value.layout}); "
                           "save it dense (tensor.to_dense())")  # fmt: skip
    if value.is_quantized:
        raise WeightsError(f"{path}: `{key}` is a quantised tensor ({dtype}); "
                           "save it dequantised (tensor.dequantize())")  # fmt: skip
    if value.is_complex():
        raise WeightsError(f"{path}: `{key}` is complex ({dtype}); weights must be real numbers")
    if dtype.startswith(("float8", "float4")):
        raise WeightsError(_narrow_float(path, key, dtype))
    value = value.detach()
    if value.dtype == torch.bfloat16:
        value = value.float()
    try:
        return value.cpu().numpy()
    except (TypeError, RuntimeError) as e:  # a dtype NumPy has no equivalent of
        raise WeightsError(f"{path}: `{key}` has dtype {dtype}, which resdsl cannot read "
                           f"({_text(e)})") from None  # fmt: skip


def _text(error: BaseException) -> str:
    """An exception's message; its type when the message is empty (``EOFError()``)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def resolve(
    graph: Graph, weights: Any = None, seed: int = 0, *, strict: bool = False
) -> tuple[Weights, str]:
    """Weights from a file path, an ``nn.Module``, a dict, or (None) the seed.

    Returns the checked weights and a description for the artifact's metadata. ``strict``
    (or a :class:`WeightsPath` with ``strict=True``) refuses NaN or infinite values.
    """
    strict = strict or bool(getattr(weights, "strict", False))
    if weights is None:
        return initialise(graph, seed), f"initialised with seed {seed}"
    if isinstance(weights, str | os.PathLike):
        path = os.fspath(weights)
        state = load_file(path)
        name = os.path.basename(path)
        return check(graph, state, name, strict=strict, once=_identity(path)), f"file {path}"
    if hasattr(weights, "state_dict"):
        state = from_module(weights)
        return check(graph, state, "the module", strict=strict), "an in-process module"
    if isinstance(weights, Mapping):
        return check(graph, weights, strict=strict), "a state_dict"
    raise TypeError(f"weights must be a path, an nn.Module or a dict, not {type(weights)}")

"""Weights for compiled backends: load, check against the graph, or initialise.

Weights are a flat ``dict`` from state_dict key (``layer1.0.conv1.weight``: the IR name
and the op table's weight name) to a NumPy array. They come from

* a file: ``.safetensors``, or a PyTorch checkpoint read with ``torch.load(...,
  weights_only=True)`` (never unpickling code) — a torchvision state_dict works for the
  ResNet examples, since the IR names are torchvision's;
* an in-process module built by ``Network.to_torch()``;
* a seed: PyTorch's default initialisation rules, drawn from NumPy (no torch needed).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import SpecError
from .ir import Graph
from .ops import Weight, weight_key

if TYPE_CHECKING:
    import numpy as np

Weights = dict[str, "np.ndarray"]


class WeightsError(SpecError):
    """Weights that do not fit the network: missing, unexpected or mis-shaped keys."""

    code = "E0601"


def expected(graph: Graph) -> dict[str, Weight]:
    """Every weight the graph's ops own, by state_dict key, in graph order."""
    return {
        weight_key(node.name, w.name): w
        for node in graph.nodes()
        for w in graph.weights_of(node.name)
    }


def check(graph: Graph, weights: Mapping[str, Any], source: str = "the weights") -> Weights:
    """Validate keys and shapes (strictly, like ``load_state_dict(strict=True)``)."""
    import numpy as np

    want = expected(graph)
    missing = [k for k, w in want.items() if k not in weights and w.required]
    if missing:
        w = want[missing[0]]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise WeightsError(
            f"{source} lack `{missing[0]}` of shape {_shape(w.shape)}{more}",
            hints=_near(missing[0], weights),
        )
    unexpected = [k for k in weights if k not in want]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise WeightsError(
            f"{source} have `{unexpected[0]}`, which the network does not{more}",
            hints=_near(unexpected[0], want),
        )
    out: Weights = {}
    for key, w in want.items():
        if key not in weights:
            continue
        array = np.asarray(weights[key])
        if tuple(array.shape) != tuple(w.shape):
            raise WeightsError(
                f"`{key}` has shape {_shape(array.shape)} in {source}, "
                f"the network needs {_shape(w.shape)}"
            )
        out[key] = array.astype(w.dtype, copy=False)
    return out


def _shape(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


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
            bound = 1.0 / math.sqrt(max(w.fan_in, 1))
            out[key] = rng.uniform(-bound, bound, w.shape).astype(w.dtype)
        elif w.init == "normal":
            out[key] = rng.normal(0.0, w.std, w.shape).astype(w.dtype)
        else:
            fill = np.ones if w.init == "ones" else np.zeros
            out[key] = fill(w.shape, dtype=w.dtype)
    return out


def from_module(module: Any) -> Weights:
    """The state_dict of an ``nn.Module`` (e.g. from ``Network.to_torch()``) as NumPy."""
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def load_file(path: str) -> Weights:
    """Read ``.safetensors`` or a PyTorch checkpoint (``weights_only=True``)."""
    if not os.path.isfile(path):
        raise WeightsError(f"no such weights file: {path}")
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file as load_safetensors

        try:
            return dict(load_safetensors(path))
        except Exception as e:  # the library raises several kinds for a corrupt file
            raise WeightsError(f"cannot read {path} as safetensors: {e}") from None
    try:
        import torch
    except ImportError:
        raise WeightsError(
            f"{path} is not .safetensors; reading PyTorch checkpoints needs torch installed"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for anything but tensors and containers
        raise WeightsError(f"cannot read {path} as a PyTorch state_dict: {e}") from None
    for wrapper in ("state_dict", "model"):  # common checkpoint layouts
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(hasattr(v, "numpy") for v in state.values()):
        raise WeightsError(f"{path} does not hold a state_dict (a dict of tensors)")
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def resolve(graph: Graph, weights: Any = None, seed: int = 0) -> tuple[Weights, str]:
    """Weights from a file path, an ``nn.Module``, a dict, or (None) the seed.

    Returns the checked weights and a description for the artifact's metadata.
    """
    if weights is None:
        return initialise(graph, seed), f"initialised with seed {seed}"
    if isinstance(weights, str | os.PathLike):
        path = os.fspath(weights)
        return check(graph, load_file(path), os.path.basename(path)), f"file {path}"
    if hasattr(weights, "state_dict"):
        return check(graph, from_module(weights), "the module"), "an in-process module"
    if isinstance(weights, Mapping):
        return check(graph, weights), "a state_dict"
    raise TypeError(f"weights must be a path, an nn.Module or a dict, not {type(weights)}")

"""``compile --check`` for llvm/cuda: the artifact against the PyTorch backend."""

from __future__ import annotations

from ...network import Network
from ...weights import Weights
from ..check import Comparison, compare, random_inputs, reference

__all__ = ["Comparison", "cross_check"]


def cross_check(net: Network, out_dir: str, weights: Weights, seed: int = 0) -> list[Comparison]:
    """Compare the artifact in ``out_dir`` with the PyTorch backend (eval mode, same weights)."""
    from ... import runtime

    model = runtime.load(out_dir)
    inputs = random_inputs([i["shape"] for i in model.inputs], seed)
    actual = model(*inputs)
    actual = actual if isinstance(actual, tuple) else (actual,)
    names = [o["name"] for o in model.outputs]
    return compare(names, reference(net, weights, inputs), actual, model.meta["dtype"])

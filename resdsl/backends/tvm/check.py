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
    names = [o["name"] for o in model.outputs]
    results = []
    for batch in check_batches(model.batch_range):
        shapes = [runtime.concrete_shape(i, batch or 0) for i in model.inputs]
        inputs = random_inputs(shapes, seed)
        actual = model(*inputs)
        actual = actual if isinstance(actual, tuple) else (actual,)
        labels = names if batch is None else [f"{name} (batch {batch})" for name in names]
        results += compare(labels, reference(net, weights, inputs), actual, model.meta["dtype"])
    return results


def check_batches(batch_range: tuple[int, int] | None) -> list[int | None]:
    """The batches a check runs: the fixed one (None), or a dynamic artifact's low end and
    3, a batch run as two pieces (2 + 1), where the range holds it."""
    if batch_range is None:
        return [None]
    low, high = batch_range
    return sorted({low, min(high, max(low, 3))})

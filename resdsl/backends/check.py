"""``compile --check`` for every target: run the PyTorch backend on the same weights and
input as a compiled model, and compare each output within a tolerance scaled to it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..network import Network
from ..weights import Weights, expected


@dataclass(frozen=True)
class Comparison:
    """One output: the largest absolute difference from the PyTorch backend."""

    output: str
    max_abs_diff: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def tolerance(reference: np.ndarray, dtype: str = "float32") -> float:
    """Absolute tolerance scaled to the output: fp32 1e-5 + 1e-4 rel, fp16 1e-3 + 1e-2 rel."""
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    return 1e-5 + 1e-4 * scale if dtype == "float32" else 1e-3 + 1e-2 * scale


def random_inputs(shapes: Sequence[Sequence[int]], seed: int) -> list[np.ndarray]:
    """Seeded standard-normal float32 inputs of the given full (batched) shapes."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(s)).astype(np.float32) for s in shapes]


def randomise_state(module, seed: int = 0):
    """``module`` in eval mode with every floating tensor of its state replaced, for a
    parity check that no zero head or 1e-6 layer scale can pass by accident: weights
    N(0, 1/fan_in) (``in_proj_weight`` too), biases and batch-norm means N(0, 0.1), batch-norm
    variances U(0.5, 1.5), norm scales 1 + N(0, 0.1), anything else (layer scales, tokens,
    position embeddings) N(0, 0.5)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            leaf = name.rpartition(".")[2]
            if leaf == "running_var":
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif leaf in ("running_mean", "bias"):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
            elif leaf.endswith("weight") and t.dim() > 1:
                t.copy_(torch.randn(t.shape, generator=gen) / t[0].numel() ** 0.5)
            elif leaf == "weight":  # a norm's scale
                t.copy_(1 + torch.randn(t.shape, generator=gen) * 0.1)
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.5)
    return module.eval()


def reference(net: Network, weights: Weights, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The PyTorch backend's outputs (eval mode) with ``weights`` loaded.

    The load is strict: a key of the module that is not in the network's weights, or the
    other way round, is an error naming the keys (a bug), never a silently random layer.
    Optional buffers (``num_batches_tracked``) that ``weights`` lack keep the module's own.
    """
    import torch

    module = net.to_torch(seed=None).eval()
    state = {k: torch.from_numpy(np.array(v)) for k, v in weights.items()}
    own = module.state_dict()
    for key, weight in expected(net.graph).items():
        if not weight.required and key not in state and key in own:
            state[key] = own[key]
    module.load_state_dict(state, strict=True)
    with torch.no_grad():
        out = module(*(torch.from_numpy(x) for x in inputs))
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def compare(
    names: Sequence[str], expected: Sequence[np.ndarray], actual: Sequence[np.ndarray],
    dtype: str = "float32",
) -> list[Comparison]:  # fmt: skip
    out = []
    for name, want, got in zip(names, expected, actual, strict=True):
        diff = float(np.abs(got.astype(np.float32) - want).max()) if want.size else 0.0
        out.append(Comparison(name, diff, tolerance(want, dtype)))
    return out

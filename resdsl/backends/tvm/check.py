"""``compile --check``: run the PyTorch backend and the artifact on one input, compare."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...network import Network
from ...weights import Weights


@dataclass(frozen=True)
class Comparison:
    output: str
    max_abs_diff: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def tolerance(reference: np.ndarray, dtype: str) -> float:
    """Absolute tolerance scaled to the output: fp32 1e-5 + 1e-4 rel, fp16 1e-2 rel."""
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    return 1e-5 + 1e-4 * scale if dtype == "float32" else 1e-3 + 1e-2 * scale


def cross_check(net: Network, out_dir: str, weights: Weights, seed: int = 0) -> list[Comparison]:
    """Compare the artifact in ``out_dir`` with the PyTorch backend (eval mode, same weights)."""
    import torch

    from ... import runtime

    model = runtime.load(out_dir)
    module = net.to_torch(seed=seed).eval()
    state = {k: torch.from_numpy(np.array(v)) for k, v in weights.items()}
    module.load_state_dict(state, strict=False)  # optional buffers may be absent
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal(i["shape"]).astype(np.float32) for i in model.inputs]
    with torch.no_grad():
        expected = module(*(torch.from_numpy(x) for x in inputs))
    expected = expected if isinstance(expected, tuple) else (expected,)
    actual = model(*inputs)
    actual = actual if isinstance(actual, tuple) else (actual,)
    dtype = model.meta["dtype"]
    out = []
    for spec, want, got in zip(model.outputs, expected, actual, strict=True):
        want = want.numpy()
        diff = float(np.abs(got.astype(np.float32) - want).max()) if want.size else 0.0
        out.append(Comparison(spec["name"], diff, tolerance(want, dtype)))
    return out

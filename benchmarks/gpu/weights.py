"""Seeded weights and inputs: both machines derive the same bits, so weights never travel."""

from __future__ import annotations

import hashlib
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .settings import ROOT, SPECS, TORCHVISION


def seeded_weights(model: str, seed: int, spec: Path | None = None):
    """torchvision's ``model`` with weights drawn from ``seed``; returns (module, state).

    A model torchvision does not have is built from ``spec`` by resdsl's PyTorch backend
    and filled by the same rules.

    The values come from NumPy's PCG64 (``default_rng([seed, crc32(key)])``, one stream
    per state_dict key) through ``Generator.random`` and exact float64 arithmetic, so both
    machines derive the same bits whatever their torch version or CPU (torch's own
    initialisers take vectorised, CPU-dependent paths). Every floating tensor is drawn,
    none is left at its initial value (:func:`_scaled` has the rule for each kind; a kind
    without a rule is an error). The scales follow torchvision's initialisation where it
    keeps the activations O(1) without batch statistics: convolutions uniform with the std
    of kaiming_normal(fan_out) (grouped and depthwise ones: fan_in, as fan_out over all
    channels would shrink every depthwise output by sqrt(channels)), linear layers
    uniform(+-1/sqrt(fan_in)), attention's input projection xavier_uniform. Norms are drawn
    away from the identity so that the compiler's folding is exercised: batch norms'
    weight and running_var in [0.5, 1.5), bias and running_mean in [-0.1, 0.1); layer
    norms' weight in [0.5, 1.5) and bias in [-0.1, 0.1). Each residual branch ends small
    (cf. torchvision's zero_init_residual): the last batch norm's weight in a ResNet block
    or an EfficientNet MBConv with a skip in [0.2, 0.5), ConvNeXt's layer scales (1e-6 at
    initialisation) in [0.1, 0.3); so the logits stay O(1) (fp32's 1e-3 abs tolerance
    means something) and the activations far from fp16's range. ViT's class token and
    position embedding: uniform(+-0.1); all remaining biases uniform(+-0.1) or, for linear
    layers, uniform(+-1/sqrt(fan_in)).
    """
    import torch
    import torchvision

    if model in TORCHVISION:
        module = getattr(torchvision.models, model)()
    else:
        import resdsl

        module = resdsl.load(spec or SPECS[model]).to_torch(seed=0)
    branch_ends, owner = _branch_ends(module), _owners(module)
    state: dict[str, np.ndarray] = {}
    for key, tensor in module.state_dict().items():
        shape, leaf = tuple(tensor.shape), key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            state[key] = np.zeros(shape, np.int64)
            continue
        u = np.random.default_rng([seed, zlib.crc32(key.encode())]).random(shape)
        state[key] = _scaled(key, owner[key], u, shape, branch_ends).astype(np.float32)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return module.eval(), state


def _branch_ends(module) -> set:
    """The last batch norm of each residual branch: bn2 of a BasicBlock, bn3 of a Bottleneck
    (the direct children, not the projection's), the projecting batch norm of an
    EfficientNet/MobileNet block with a skip (``use_res_connect``).

    Drawn small (cf. torchvision's zero_init_residual), or the activations double with
    every block (no batch statistics hold them back) and resnet50's logits reach ~1e3.
    """
    import torch

    ends = set()
    for m in module.modules():
        if hasattr(m, "downsample"):
            norms = [c for _, c in m.named_children() if isinstance(c, torch.nn.BatchNorm2d)]
        elif getattr(m, "use_res_connect", False) and hasattr(m, "block"):
            norms = [c for c in m.block.modules() if isinstance(c, torch.nn.BatchNorm2d)]
        else:
            continue
        if norms:
            ends.add(norms[-1])
    return ends


def _owners(module) -> dict[str, Any]:
    """state_dict key -> the module that holds that parameter or buffer."""
    owner: dict[str, Any] = {}
    for prefix, m in module.named_modules():
        for name, _ in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]:
            owner[f"{prefix}.{name}" if prefix else name] = m
    return owner


def _scaled(key: str, m, u: np.ndarray, shape: tuple, branch_ends: set) -> np.ndarray:
    """Uniform draws ``u`` in [0, 1) scaled by the rule for ``key``'s module."""
    import torch

    leaf = key.rsplit(".", 1)[-1]
    if isinstance(m, torch.nn.BatchNorm2d) and leaf == "weight" and m in branch_ends:
        return 0.2 + 0.3 * u
    if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
        return 0.5 + u if leaf in ("weight", "running_var") else 0.2 * u - 0.1
    if isinstance(m, torch.nn.Conv2d) and leaf == "weight":
        if m.groups > 1:  # depthwise/grouped: fan_in (shape[1] is in_channels / groups)
            return (2.0 * u - 1.0) * math.sqrt(6.0 / math.prod(shape[1:]))
        fan_out = shape[0] * math.prod(shape[2:])
        return (2.0 * u - 1.0) * math.sqrt(6.0 / fan_out)
    if isinstance(m, torch.nn.Linear):  # out_proj of attention too (a Linear subclass)
        return (2.0 * u - 1.0) / math.sqrt(m.in_features)
    if isinstance(m, torch.nn.MultiheadAttention) and leaf == "in_proj_weight":
        return (2.0 * u - 1.0) * math.sqrt(6.0 / (shape[0] + shape[1]))  # xavier_uniform
    if leaf == "layer_scale":  # ConvNeXt's, at the end of each residual branch
        return 0.1 + 0.2 * u
    if leaf in ("bias", "in_proj_bias", "class_token", "pos_embedding"):
        return 0.2 * u - 0.1
    raise TypeError(f"no rule for {key} ({type(m).__name__})")


def source_sha256(files: list[str] | None = None) -> str:
    """resdsl's code and grammar: artifacts compiled by other code are rebuilt.

    ``files`` (paths relative to the checkout): hash those only -- what a compile used
    (:func:`compiled_sources`), so that an edit elsewhere in resdsl (an importer, the CLI)
    does not make every artifact stale; a file in the list that is gone hashes as gone.
    Without it: every .py and .res under resdsl/ and the grammars."""
    h = hashlib.sha256()
    if files is None:
        paths = [*(ROOT / "resdsl").rglob("*.py"), *(ROOT / "resdsl").rglob("*.res"),
                 *(ROOT / "grammars").glob("*.lark")]  # fmt: skip
        files = [f.relative_to(ROOT).as_posix() for f in paths]
    for rel in sorted(files):
        h.update(rel.encode())
        f = ROOT / rel
        h.update(f.read_bytes() if f.is_file() else b"\0missing")
    return h.hexdigest()


def compiled_sources() -> list[str]:
    """The files a compile in this process used: resdsl's modules imported so far, every
    spec of its standard library, the grammars (relative to the checkout, sorted)."""
    import sys

    base = (ROOT / "resdsl").resolve()
    files = set()
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if (name == "resdsl" or name.startswith("resdsl.")) and path:
            p = Path(path).resolve()
            if p.is_relative_to(base) and p.suffix == ".py":
                files.add(p.relative_to(ROOT.resolve()).as_posix())
    files |= {f.relative_to(ROOT).as_posix() for f in (ROOT / "resdsl").rglob("*.res")}
    files |= {f.relative_to(ROOT).as_posix() for f in (ROOT / "grammars").glob("*.lark")}
    return sorted(files)


def state_sha256(state: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(np.ascontiguousarray(state[key]).tobytes())
    return h.hexdigest()


def seeded_input(batch: int, seed: int, shape: tuple[int, ...] = (3, 224, 224)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)


def folded_weights(spec: Path, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The weights after resdsl's inference passes: what the lowering turns into constants."""
    import resdsl
    from resdsl.passes import run_inference_passes
    from resdsl.weights import resolve

    net = resdsl.load(spec)
    weights, _ = resolve(net.graph, state)
    _, folded = run_inference_passes(net.graph, weights)
    return folded

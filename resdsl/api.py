"""``load`` and ``loads``: text -> parse -> elaborate -> checked :class:`Network`; the zoo's
``list_models`` and ``create_model``."""

from __future__ import annotations

import os
from typing import Any

from .elaborate import Limits, elaborate
from .loader import ZOO, load_program, resolve_spec, zoo_models
from .network import Network


def load(
    path: str | os.PathLike[str],
    network: str | None = None,
    *,
    limits: Limits | None = None,
    **params: Any,
) -> Network:
    """Load, elaborate and validate the spec file at ``path``, or the zoo model
    ``zoo:NAME`` (``resdsl.load("zoo:convnext_tiny")``).

    ``params`` set the network's parameters (``num_classes=10``). ``network`` picks one
    network when the file defines several. Raises :class:`resdsl.SpecError`.
    """
    text, shown, picked = resolve_spec(os.fspath(path))
    return loads(text, network or picked, path=shown, limits=limits, **params)


def loads(
    text: str,
    network: str | None = None,
    *,
    path: str = "<string>",
    limits: Limits | None = None,
    **params: Any,
) -> Network:
    """Like :func:`load`, from spec text. Imports resolve relative to ``path``."""
    program = load_program(text, path)
    graph = elaborate(program, network, params, limits)
    return Network(graph, params, path, program.digest)


def list_models(pattern: str = "*") -> list[str]:
    """The zoo's models whose names match the shell-style ``pattern`` (``"resnet*"``),
    sorted: the names of torchvision's builders."""
    import fnmatch

    return [name for name in zoo_models() if fnmatch.fnmatchcase(name, pattern)]


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    weights: str | os.PathLike[str] | None = None,
    seed: int | None = 0,
    **params: Any,
):
    """The zoo model ``name`` as a plain ``torch.nn.Module`` whose state_dict keys are
    torchvision's.

    ``weights``: None keeps PyTorch's default initialisation (seeded by ``seed``); a path
    loads a ``.safetensors`` or PyTorch checkpoint (read with ``weights_only=True``);
    ``"torchvision"`` loads torchvision's published weights from the local torch hub cache
    (never downloading: a missing file is a :class:`~resdsl.errors.SpecError` that names
    it). Either is loaded strictly. ``params`` set other network parameters.
    """
    if num_classes is not None:
        params["num_classes"] = num_classes
    net = load(ZOO + name, **params)
    module = net.to_torch(seed=seed)
    if weights is not None:
        from .weights import check, load_file

        path = _torchvision_file(name) if weights == "torchvision" else os.fspath(weights)
        state = check(net.graph, load_file(path), path)
        import torch

        module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return module


def _torchvision_file(name: str) -> str:
    """Where torchvision's default weights for ``name`` are cached, checked to exist."""
    from .errors import SpecError

    try:
        import torch
        from torchvision.models import get_model_weights
    except ImportError:
        raise SpecError(
            'weights="torchvision" needs torchvision, to know which file holds them'
        ) from None
    url = get_model_weights(name).DEFAULT.url
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    if not os.path.isfile(path):
        raise SpecError(
            f"torchvision's weights for `{name}` are not in the local cache: {path}",
            hints=[f"download {url} to that path (resdsl never downloads)"],
        )
    return path

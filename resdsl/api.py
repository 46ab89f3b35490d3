"""``load`` and ``loads``: text -> parse -> elaborate -> checked :class:`Network`."""

from __future__ import annotations

import os
from typing import Any

from .elaborate import Limits, elaborate
from .loader import load_program, read_spec
from .network import Network


def load(
    path: str | os.PathLike[str],
    network: str | None = None,
    *,
    limits: Limits | None = None,
    **params: Any,
) -> Network:
    """Load, elaborate and validate the spec file at ``path``.

    ``params`` set the network's parameters (``num_classes=10``). ``network`` picks one
    network when the file defines several. Raises :class:`resdsl.SpecError`.
    """
    path = os.fspath(path)
    return loads(read_spec(path), network, path=path, limits=limits, **params)


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

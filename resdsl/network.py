"""The public ``Network``: an elaborated, shape-checked graph with its counts."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .ir import Graph
from .ops import OPS, Shape

if TYPE_CHECKING:  # torch is imported only by the backend that needs it
    import torch

    from .elaborate.macros import Projection


@dataclass(frozen=True)
class Layer:
    """One row of the per-layer table (``resdsl info``)."""

    name: str
    op: str
    shape: Shape
    params: int
    macs: int
    training: bool = False  # only a training-only output reads it (its MACs are not counted)


class Network:
    """A checked network. Build one with :func:`resdsl.load` or :func:`resdsl.loads`."""

    def __init__(self, graph: Graph, params: dict[str, Any], source: str, digest: str = "") -> None:
        self.graph = graph
        self.params = params  # the network parameters it was elaborated with
        self.source = source  # path of the main spec file
        self.spec_hash = digest  # sha256 over the spec file and its imports

    @property
    def name(self) -> str:
        return self.graph.name

    @cached_property
    def layers(self) -> list[Layer]:
        g, layers, training = self.graph, [], self.graph.training_only()
        for n in g.nodes():
            op, inputs, out = OPS[n.op], g.input_shapes(n.name), g.info(n.name).shape
            params, macs = op.params(n.attrs, inputs), op.count_macs(n.attrs, inputs, out)
            layers.append(Layer(n.name, n.op, out, params, macs, n.name in training))
        return layers

    @property
    def num_params(self) -> int:
        """Exact number of trainable parameters."""
        return sum(layer.params for layer in self.layers)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one sample's inference (conv2d and linear; see
        docs/language.md); a training-only output's branch is not counted."""
        return sum(layer.macs for layer in self.layers if not layer.training)

    @property
    def projections(self) -> tuple[Projection, ...]:
        """The projections that ``shortcut`` inserted, in order: ``(name, span, source,
        target)``, ``name`` the scope of its nodes (``layer2.0.downsample``)."""
        return getattr(self.graph, "projections", ())

    @property
    def input_shapes(self) -> dict[str, Shape]:
        return {name: self.graph.info(name).shape for name in self.graph.inputs}

    @property
    def output_shapes(self) -> dict[str, Shape]:
        return {name: self.graph.info(node).shape for name, node in self.graph.outputs}

    @property
    def training_output_shapes(self) -> dict[str, Shape]:
        """Outputs produced only in training mode (``training(aux)``), by name."""
        return {name: self.graph.info(node).shape for name, node in self.graph.training_outputs}

    def to_torch(self, seed: int | None = 0) -> torch.nn.Module:
        """A ``torch.nn.Module`` whose submodule names are the IR names."""
        from .backends.torch import to_module

        return to_module(self.graph, seed=seed)

    def to_torch_source(self) -> str:
        """Self-contained Python source (needs only torch) that builds the same module."""
        from .backends.torch import generate

        return generate(self.graph)

    def __repr__(self) -> str:
        return (
            f"<Network {self.name}: {len(self.graph)} ops, {self.num_params:,} params, "
            f"{self.macs / 1e9:.2f} GMACs>"
        )

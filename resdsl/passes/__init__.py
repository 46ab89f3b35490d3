"""Analyses and rewrites over the graph IR; each a plain function of a :class:`~resdsl.ir.Graph`."""

from .decompose import decompose, derive_weights
from .inference import (
    INFERENCE_NOOPS,
    drop_identities,
    eliminate_dead,
    fold_batchnorm,
    run_inference_passes,
)
from .shapes import infer_shapes

__all__ = [
    "INFERENCE_NOOPS",
    "decompose",
    "derive_weights",
    "drop_identities",
    "eliminate_dead",
    "fold_batchnorm",
    "infer_shapes",
    "run_inference_passes",
]

"""Analyses and rewrites over the graph IR; each a plain function of a :class:`~resdsl.ir.Graph`."""

from .shapes import infer_shapes

__all__ = ["infer_shapes"]

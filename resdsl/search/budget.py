"""Budgets read from a command line (``resdsl sample --max-macs 2G``, the search scripts)."""

from __future__ import annotations

import argparse
import re

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def count(text: str) -> int:
    """A budget from the command line: ``25000000``, ``25_000_000``, ``2.5e7``, ``25M``, ``4G``."""
    m = re.fullmatch(r"\s*([0-9][0-9_]*(?:\.[0-9]+)?(?:[eE][0-9]+)?)\s*([KMGT]?)\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(
            f"expected a count such as 25000000, 2.5e7 or 25M: {text!r}"
        )
    value = float(m.group(1).replace("_", "")) * _SUFFIX[m.group(2)]
    if value < 0 or value != int(value):
        raise argparse.ArgumentTypeError(f"expected a whole number: {text!r}")
    return int(value)

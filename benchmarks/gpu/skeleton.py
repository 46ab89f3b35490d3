"""Skeletons: a ``model.so`` with its weight constants cut out, and back in.

A skeleton is model.so with the weight constants cut out (xz-compressed), plus a list of
holes: (offset, length, state_dict key, transform). Filling each hole with
``constant_bytes(folded[key], transform, dtype)`` gives model.so back, byte for byte. So
only the code and metadata travel; the weights are re-derived from the seed.
"""

from __future__ import annotations

import lzma
from typing import Any

import numpy as np

from .settings import HOLE_MIN_BYTES


def constant_bytes(array: np.ndarray, transform: str, dtype: str) -> bytes:
    """A constant as the lowering writes it (``lower.Context.weight``/``const``)."""
    if transform == "T":
        array = array.T
    elif transform == "OHWI":  # a conv weight in an NHWC build
        array = array.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(array.astype(dtype)).tobytes()


def punch(so: bytes, folded: dict[str, np.ndarray], dtype: str) -> list[dict[str, Any]]:
    holes: list[dict[str, Any]] = []
    taken: list[tuple[int, int]] = []
    cursor = 0
    for key, array in folded.items():
        transforms = {2: ("plain", "T"), 4: ("plain", "OHWI")}.get(array.ndim, ("plain",))
        for transform in transforms:
            blob = constant_bytes(array, transform, dtype)
            if len(blob) < HOLE_MIN_BYTES:
                break
            at = so.find(blob, cursor)  # constants are usually stored in order
            if at < 0:
                at = so.find(blob)
            if at < 0 or any(at < e and s < at + len(blob) for s, e in taken):
                continue
            holes.append({"offset": at, "length": len(blob), "key": key, "transform": transform})
            taken.append((at, at + len(blob)))
            cursor = at + len(blob)
            break
    return sorted(holes, key=lambda h: h["offset"])


def skeleton_of(so: bytes, holes: list[dict[str, Any]]) -> bytes:
    parts, pos = [], 0
    for h in holes:
        parts.append(so[pos : h["offset"]])
        pos = h["offset"] + h["length"]
    parts.append(so[pos:])
    return lzma.compress(b"".join(parts), preset=6)


def fill(skeleton: bytes, holes: list[dict[str, Any]], folded, dtype: str) -> bytes:
    data, out, read = lzma.decompress(skeleton), bytearray(), 0
    for h in holes:
        take = h["offset"] - len(out)
        out += data[read : read + take]
        read += take
        blob = constant_bytes(folded[h["key"]], h["transform"], dtype)
        if len(blob) != h["length"]:
            raise ValueError(f"hole {h['key']}: {len(blob)} bytes, expected {h['length']}")
        out += blob
    out += data[read:]
    return bytes(out)

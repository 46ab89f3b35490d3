"""Constant tensors of an imported model written as op calls, without their elements where
they have a structure.

A constant is a tensor the model computes from no input and no weight: a non-persistent
buffer, or what ``forward`` builds with ``torch.arange`` and ``sin``. A spec holds one as a
``buffer(..., persistent=false)`` with its elements; beyond ``LIMIT`` elements it is written
as a few small buffers and the ops that rebuild it exactly (and from ``_SMALL`` elements, in
parts broadcast back where those hold a quarter of its elements or fewer):

- an index of relative offsets (``relative_position_index(window)``) or of absolute ones
  (LeViT's, ``absolute_offset_index(resolution, stride)``), written by name;
- BEiT's index (that index with a first row and column for the class token) where a table
  is read through it: the table read through each part, concatenated (``bordered_take``);
- a table read through the index of relative offsets (Swin V2's log-spaced coordinates of
  every (query, key) pair of a window): the table of distinct offsets, then ``take``;
- a shifted-window mask (0 within a region, one other number across regions): each
  position's region, and ``v * min(|r_i - r_j|, 1)``;
- a tensor that is constant along some axes, maybe in parts along another (XCiT's and
  EVA's sine position encodings, one half varying along the rows, the other along the
  columns): each part without those axes, broadcast back by adding zeros, concatenated.

Every form is checked against the value it stands for before it is used.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .graph import Call

LIMIT = 4096  # the elements of one constant written out
_SMALL = 256  # a constant this small is written whole, whatever its structure
_MAX_PARTS = 16


class ConstantError(Exception):
    """A constant with no form small enough to write: the message says what it is."""


def constant_calls(cid: str, value: Any, label: str | None, scope: str, source: str) -> list[Call]:
    """Calls computing the constant tensor ``value`` (a torch tensor, one sample's value);
    the last one has the id ``cid``. ``label`` is the buffer's module path, if it is one."""
    import torch

    if value.dtype == torch.bool:
        value = value.float()
    a = value.detach().cpu().numpy()
    b = _Builder(cid, label, scope, source)
    if a.dtype == np.int64:
        b.index(a)
    elif np.issubdtype(a.dtype, np.floating):
        b.floating(a.astype(np.float32))
    else:
        raise ConstantError(f"a {a.dtype} constant")
    return b.calls


class _Builder:
    def __init__(self, cid: str, label: str | None, scope: str, source: str) -> None:
        self.cid, self.label, self.scope, self.source = cid, label, scope, source
        self.calls: list[Call] = []
        self.count = 0

    def call(self, op: str, attrs: dict, inputs: list[str], final: bool = False) -> str:
        cid = self.cid if final else f"{self.cid}/{self.count}"
        self.count += 1
        label = self.label if final and op == "buffer" else None
        self.calls.append(Call(cid, op, attrs, inputs, label, self.scope, self.source))
        return cid

    def buffer(self, a: np.ndarray, final: bool = False) -> str:
        shape = tuple(int(n) for n in a.shape)
        attrs: dict[str, Any] = {"shape": shape, "stored": shape, "persistent": False}
        flat = a.flatten()
        if a.dtype == np.int64:
            attrs.update(values=tuple(int(v) for v in flat), dtype="int64")
        elif flat.size and bool((flat == flat[0]).all()):
            v = float(flat[0])
            attrs.update({"init": "zeros"} if v == 0 else {"init": "constant", "value": v})
        else:
            # float32's shortest decimals: read back, each is the same float32
            attrs["values"] = tuple(float(str(v)) for v in flat)
        return self.call("buffer", attrs, [], final)

    def finish(self, source: str, shape: tuple[int, ...], want: tuple[int, ...]) -> None:
        """``source`` (of ``shape``) reshaped to ``want``, as the constant's own id."""
        if tuple(shape) != tuple(want) or source != self.cid:
            self.call("reshape", {"shape": tuple(want)}, [source], final=True)

    # --- int64: indices -----------------------------------------------------------------------

    def index(self, a: np.ndarray) -> None:
        from .writer import index_text

        flat = tuple(int(v) for v in a.flatten())
        if a.size <= LIMIT or index_text(flat) is not None:
            self.buffer(a, final=True)
            return
        raise ConstantError(
            f"an index of {a.size:,} elements (only relative_position_index(window), maybe "
            "with a class token's row and column read by `take`, and "
            "absolute_offset_index(resolution, stride) are written without their elements)"
        )

    # --- floats ---------------------------------------------------------------------------------

    def floating(self, a: np.ndarray) -> None:
        flat = a.reshape(-1)
        if a.size <= _SMALL or (flat.size and bool((flat == flat[0]).all())):
            self.buffer(a, final=True)
            return
        if a.size <= LIMIT:  # written whole, unless parts a quarter its size rebuild it
            if not self.broadcast(a, limit=a.size // 4):
                self.buffer(a, final=True)
            return
        for form in (self.gathered, self.mask, self.broadcast):
            if form(a):
                return
        raise ConstantError(f"a constant of {a.size:,} elements")

    def gathered(self, a: np.ndarray) -> bool:
        """``a`` (n * n, ...) or (n, n, ...), one value per relative offset of an n-cell
        window: ``take(table, relative_position_index(window))``."""
        from ..elaborate.functions import _relative_position_index

        for lead in (1, 2):
            if a.ndim < lead:
                continue
            pairs = math.prod(a.shape[:lead])
            n = math.isqrt(pairs)
            if n * n != pairs or n < 2:
                continue
            rows = a.reshape(pairs, -1)
            for h in (h for h in range(1, n + 1) if n % h == 0):
                w = n // h
                index = np.array(_relative_position_index(h, w), dtype=np.int64)
                size = (2 * h - 1) * (2 * w - 1)
                table = np.zeros((size, rows.shape[1]), dtype=np.float32)
                table[index] = rows
                if table.size > LIMIT or not np.array_equal(table[index], rows):
                    continue
                rest = a.shape[lead:]
                t = self.buffer(table.reshape(size, *rest))
                i = self.buffer(index)
                taken = self.call("take", {"axis": 0}, [t, i])
                self.finish(taken, (pairs, *rest), a.shape)
                return True
        return False

    def mask(self, a: np.ndarray) -> bool:
        """A shifted-window mask (..., n, n): 0 between two positions of one region, ``v``
        between two of different regions; written as each position's region ``r`` and
        ``v * min(|r_i - r_j|, 1)``."""
        if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
            return False
        values = np.unique(a)
        if len(values) != 2 or 0 not in values:
            return False
        v = float(values[values != 0][0])
        n = a.shape[-1]
        flat = a.reshape(-1, n, n)
        same = flat == 0
        regions = np.argmax(same, axis=-1).astype(np.float32)  # the first position alike
        rebuilt = np.where(regions[:, :, None] == regions[:, None, :], 0, v).astype(np.float32)
        if not np.array_equal(rebuilt, flat) or regions.size > LIMIT:
            return False
        lead = a.shape[:-2]
        rank = len(lead) + 2
        r = self.regions(regions, flat == 0, (*lead, n, 1))
        rt = self.call("permute", {"axes": (*range(rank - 2), rank - 1, rank - 2)}, [r])
        d = self.call("sub", {}, [r, rt])
        d = self.call("abs", {}, [d])
        d = self.call("clamp", {"max": 1.0}, [d])
        self.call("scale_shift", {"scale": v}, [d], final=True)
        return True

    def regions(self, regions: np.ndarray, same: np.ndarray, shape: tuple) -> str:
        """The buffer of each position's region, ``regions`` (windows, n), where ``same``
        (windows, n, n) says which positions of a window share one; as a sum of a row's
        and a column's number where the windows tile a grid and the regions its rows and
        columns (Swin's: a few bands of rows and of columns), else by its elements."""
        labels = _grid_regions(same)
        if labels is None:
            return self.buffer(regions.reshape(shape))
        rows, cols, _ = labels
        u = self.buffer(rows)
        v = self.buffer(cols)
        total = self.call("add", {}, [u, v])
        return self.call("reshape", {"shape": tuple(int(k) for k in shape)}, [total])

    def broadcast(self, a: np.ndarray, limit: int = LIMIT) -> bool:
        """``a`` (or ``a`` with an axis of h * h elements seen as (h, h)) in parts along one
        axis, each constant along some others: each part without them, broadcast back; if
        the parts have at most ``limit`` elements."""
        best = None
        for view in _views(a.shape):
            b = a.reshape(view)
            for axis in range(b.ndim):
                parts = _parts(b, axis)
                cost = sum(p[2].size for p in parts)
                if len(parts) <= _MAX_PARTS and (best is None or cost < best[0]):
                    best = (cost, view, axis, parts)
        if best is None or best[0] > limit:
            return False
        _, view, axis, parts = best
        ids, written = [], {}  # a part with the elements of one written before reads it
        for start, stop, reduced in parts:
            full = list(view)
            full[axis] = stop - start
            key = reduced.tobytes()
            if key in written and written[key][1] != reduced.shape:
                part = self.call("reshape", {"shape": tuple(reduced.shape)}, [written[key][0]])
            elif key in written:
                part = written[key][0]
            else:
                part = self.buffer(reduced)
                written[key] = (part, reduced.shape)
            if tuple(reduced.shape) != tuple(full):
                zeros = self.buffer(np.zeros(full, dtype=np.float32))
                part = self.call("add", {}, [part, zeros])
            ids.append(part)
        whole = ids[0] if len(ids) == 1 else self.call("concat", {"axis": axis}, ids)
        self.finish(whole, view, a.shape)
        return True


def _bordered_window(flat: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray] | None:
    """BEiT's index, (n + 1) x (n + 1): a corner, a first row and column (the class token's),
    and relative_position_index(window) of an n-cell window inside."""
    from .writer import window_index

    m = math.isqrt(flat.size)
    if m * m != flat.size or m < 3:
        return None
    a = flat.reshape(m, m)
    inner = a[1:, 1:]
    if window_index(tuple(int(v) for v in inner.flatten())) is None:
        return None
    if 2 * m > LIMIT:
        return None
    return int(a[0, 0]), a[0, 1:].copy(), a[1:, 0].copy(), inner.copy()


def _views(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """``shape``, and ``shape`` with one axis of h * h elements (h > 1) split in two."""
    out = [tuple(shape)]
    for k, n in enumerate(shape):
        h = math.isqrt(n)
        if h > 1 and h * h == n:
            out.append((*shape[:k], h, h, *shape[k + 1 :]))
    return out


def _parts(b: np.ndarray, axis: int) -> list[tuple[int, int, np.ndarray]]:
    """Runs along ``axis`` of the slices constant along the same other axes: (start, stop,
    the run with those axes reduced to 1)."""
    signatures = []
    for i in range(b.shape[axis]):
        s = np.take(b, [i], axis=axis)
        signatures.append(tuple(k for k in range(b.ndim) if k != axis and _constant_along(s, k)))
    parts, start = [], 0
    for i in range(1, b.shape[axis] + 1):
        if i == b.shape[axis] or signatures[i] != signatures[start]:
            run = np.take(b, range(start, i), axis=axis)
            index = tuple(
                slice(0, 1) if k in signatures[start] else slice(None) for k in range(b.ndim)
            )
            parts.append((start, i, run[index]))
            start = i
    return parts


def _constant_along(a: np.ndarray, axis: int) -> bool:
    return bool((a == np.take(a, [0], axis=axis)).all())


def bordered_take(index: Any) -> tuple[np.ndarray, np.ndarray, int] | None:
    """BEiT's index, flat: (the first row, the first column without its corner, n) when
    its inside is relative_position_index of an n-cell window."""
    flat = index.detach().cpu().numpy().reshape(-1)
    if flat.dtype != np.int64:
        return None
    parts = _bordered_window(flat)
    if parts is None:
        return None
    corner, row, column, inner = parts
    return np.concatenate([[corner], row]), column, inner.shape[0]


def _grid_regions(same: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple] | None:
    """Labels ``rows (gh, 1, h, 1) + cols (1, gw, 1, w)`` whose equality within each window
    is ``same`` (windows, n, n): the windows a gh x gw grid, each h x w positions."""
    count, n = same.shape[:2]
    best = None
    for gh in range(1, count + 1):
        if count % gh:
            continue
        gw = count // gh
        for h in range(1, n + 1):
            if n % h:
                continue
            w = n // h
            if best is not None and gh * h + gw * w >= best[0]:
                continue
            s = same.reshape(gh, gw, h, w, h, w)
            # a position's row band: the first row of its window's first column alike
            rows = np.argmax(s[:, 0, :, 0, :, 0], axis=-1)  # (gh, h)
            cols = np.argmax(s[0, :, 0, :, 0, :], axis=-1)  # (gw, w)
            labels = rows[:, None, :, None] + h * cols[None, :, None, :]
            flat = labels.reshape(count, n)
            if np.array_equal(flat[:, :, None] == flat[:, None, :], same):
                best = (gh * h + gw * w, (
                    rows.reshape(gh, 1, h, 1).astype(np.float32),
                    (h * cols).reshape(1, gw, 1, w).astype(np.float32),
                    (gh, gw, h, w),
                ))  # fmt: skip
    return None if best is None or best[0] >= count * n else best[1]

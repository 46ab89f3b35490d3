"""``split(x, sizes, axis)``: one ``slice`` per piece, as ``torch.split``."""

from __future__ import annotations

import pytest

import resdsl

torch = pytest.importorskip("torch")


def test_pieces_are_slices_named_by_the_label():
    net = resdsl.loads(
        "network t() (x: (10, 4, 3)) {\n"
        "    a, b, c = s: split(x, (2, 3, 5))\n"
        "    return a, b, c\n"
        "}\n"
    )
    slices = [(n.name, n.attrs["start"], n.attrs["end"]) for n in net.graph.nodes()
              if n.op == "slice"]  # fmt: skip
    assert slices == [("s.0", 0, 2), ("s.1", 2, 5), ("s.2", 5, 10)]
    assert net.output_shapes == {"a": (2, 4, 3), "b": (3, 4, 3), "c": (5, 4, 3)}


def test_matches_torch_split():
    net = resdsl.loads(
        "network t() (x: (4, 7, 3)) {\n"
        "    p = split(x, 3, axis=1)\n"
        "    q = split(x, (1, 2), axis=-1)\n"
        "    return p[0], p[1], p[2], q[0], q[1], concat(p, axis=1)\n"
        "}\n"
    )
    x = torch.randn(2, 4, 7, 3)
    got = net.to_torch()(x)
    want = (*torch.split(x, 3, 2), *torch.split(x, (1, 2), -1), x)
    assert len(got) == len(want) == 6
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)


@pytest.mark.parametrize(
    ("call", "message", "column"),
    [
        ("split(x, (2, 3))", "`split` sizes (2, 3) add up to 5, not to the 10 of axis 0", 9),
        ("split(x, 0)", "`split` sizes must be a positive int or a tuple of them", 9),
        ("split(x, 2, axis=3)", "`split` axis 3 is not an axis of (10, 4)", 9),
    ],
)
def test_errors_are_located(call, message, column):
    text = f"network t() (x: (10, 4)) {{\n    y = {call}\n    return y[0]\n}}\n"
    with pytest.raises(resdsl.SpecError) as e:
        resdsl.loads(text)
    assert message in e.value.message
    assert (e.value.span.line, e.value.span.column) == (2, column)

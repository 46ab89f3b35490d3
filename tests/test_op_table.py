"""The op table against every backend: coverage, and parity of every op with PyTorch.

* Coverage: each backend emits every op itself or gets it from the decomposition, and a
  composite that owns weights is native in the PyTorch backend (its modules lay out the
  state_dict).
* Parity, per op (tests/op_cases.py): the PyTorch backend equals PyTorch's functional form
  written independently in the case; ONNX (via ONNX Runtime) and TVM (llvm) equal the
  PyTorch backend. Every floating tensor is randomised first (batch-norm statistics, layer
  scales and all), so a zero or unit default cannot hide a mistake.
* Native emitters of composites equal the decomposition in the same backend.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import resdsl  # noqa: E402
from resdsl.backends import onnx as onnx_backend  # noqa: E402
from resdsl.backends import torch as torch_backend  # noqa: E402
from resdsl.ops import OPS  # noqa: E402
from resdsl.passes import decompose  # noqa: E402
from resdsl.weights import check, from_module  # noqa: E402

from .op_cases import CASES, spec  # noqa: E402

BATCH = 2


def _tvm_emitters() -> dict:
    from resdsl.backends.tvm import lower

    return lower.EMITTERS


BACKENDS = {
    "torch": lambda: torch_backend.EMITTERS,
    "onnx": lambda: onnx_backend.EMITTERS,
    "tvm": _tvm_emitters,
}


def _reachable(op: str, native) -> set[str]:
    """The ops a backend emits for ``op``, or raises if one of them has no emitter."""
    if op in native:
        return {op}
    definition = OPS[op]
    if not definition.composite:
        raise AssertionError(f"primitive `{op}` has no emitter")
    out = set()
    for used in _decomposition_ops(op):
        out |= _reachable(used, native)
    return out


def _decomposition_ops(op: str) -> set[str]:
    """The ops ``op``'s decomposition uses, on its parity case's shapes."""
    net = resdsl.loads(spec(op))
    nodes = [n for n in net.graph.nodes() if n.op == op]
    return {
        step.op
        for n in nodes
        for step in OPS[op].expand(n.attrs, net.graph.input_shapes(n.name)).steps
    }


# --- coverage ----------------------------------------------------------------------------------


def test_every_op_has_a_parity_case():
    assert set(CASES) == set(OPS) - {"input"}
    for op in CASES:
        assert op in {n.op for n in resdsl.loads(spec(op)).graph.nodes()}, op


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_every_backend_emits_every_op(backend):
    native = BACKENDS[backend]()
    assert set(native) <= set(OPS), "emitters for ops the table does not have"
    for op in set(OPS) - {"input"}:
        _reachable(op, native)


def test_composites_that_own_weights_are_native_in_torch():
    """PyTorch's state_dict comes from module attributes: expanding a composite with weights
    into modules would rename them, so the PyTorch backend must emit it as one module."""
    for name, op in OPS.items():
        if op.composite and name in CASES:
            net = resdsl.loads(spec(name))
            node = next(n for n in net.graph.nodes() if n.op == name)
            if net.graph.weights_of(node.name):
                assert name in torch_backend.EMITTERS, name


def test_relu6_and_silu_cost_one_node():
    net = resdsl.loads("network t() (x: (3, 4)) { return x -> relu6 -> silu }")
    assert [n.op for n in net.graph.nodes()] == ["input", "relu6", "silu"]


# --- parity ------------------------------------------------------------------------------------


def perturb(module, seed: int = 0):
    """Every floating tensor of ``module`` random: variances positive, all else N(0, 0.5)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.5)
    return module.eval()


class Built:
    """A case's network, its randomised PyTorch module, weights and seeded inputs."""

    def __init__(self, op: str) -> None:
        self.net = resdsl.loads(spec(op))
        self.module = perturb(self.net.to_torch())
        self.weights = check(self.net.graph, from_module(self.module))
        rng = np.random.default_rng(1)
        self.inputs = [
            rng.standard_normal((BATCH, *self.net.graph.info(n).shape)).astype(np.float32)
            for n in self.net.graph.inputs
        ]

    def torch_outputs(self) -> list[np.ndarray]:
        with torch.no_grad():
            out = self.module(*map(torch.from_numpy, self.inputs))
        return [t.detach().numpy() for t in (out if isinstance(out, tuple) else (out,))]


@pytest.fixture(scope="module")
def built():
    cache: dict[str, Built] = {}

    def get(op: str) -> Built:
        if op not in cache:
            cache[op] = Built(op)
        return cache[op]

    return get


def assert_close(actual, expected, what: str) -> None:
    assert len(actual) == len(expected), what
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        a, e = np.asarray(a), np.asarray(e)
        assert a.shape == e.shape, f"{what} output {i}: {a.shape} != {e.shape}"
        scale = max(1.0, float(np.abs(e).max()))
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5 * scale, err_msg=f"{what} {i}")


@pytest.mark.parametrize("op", sorted(CASES))
def test_torch_matches_functional_reference(built, op):
    b = built(op)
    state = {k: v.clone() for k, v in b.module.state_dict().items()}
    with torch.no_grad():
        expected = CASES[op].ref(*map(torch.from_numpy, b.inputs), state)
    assert_close(b.torch_outputs(), [t.numpy() for t in expected], f"{op} (torch)")


@pytest.mark.parametrize("op", sorted(CASES))
def test_onnx_matches_torch(built, op):
    ort = pytest.importorskip("onnxruntime")
    b = built(op)
    model = onnx_backend.to_onnx(b.net.graph, b.weights)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    actual = session.run(None, dict(zip(b.net.graph.inputs, b.inputs, strict=True)))
    assert_close(actual, b.torch_outputs(), f"{op} (onnx)")


def _run_tvm(b: Built, graph=None) -> list[np.ndarray]:
    tvm = pytest.importorskip("tvm")
    from resdsl.backends.tvm import lower
    from resdsl.backends.tvm.schedules import llvm_pipeline

    mod = lower.to_relax(graph or b.net.graph, b.weights, batch=BATCH)
    target = tvm.target.Target("llvm")
    vm = tvm.relax.VirtualMachine(tvm.compile(mod, target, relax_pipeline=llvm_pipeline(target)),
                                  tvm.cpu())  # fmt: skip
    out = vm["main"](*(tvm.runtime.tensor(x) for x in b.inputs))
    return [o.numpy() for o in (out if len(b.net.graph.outputs) > 1 else [out])]


@pytest.mark.parametrize("op", sorted(CASES))
def test_tvm_matches_torch(built, op):
    b = built(op)
    assert_close(_run_tvm(b), b.torch_outputs(), f"{op} (tvm)")


# --- native emitters of composites against their decomposition ---------------------------------


def _native_composites(backend: str) -> list[str]:
    return sorted(op for op in BACKENDS[backend]() if OPS[op].composite)


@pytest.mark.parametrize("op", _native_composites("torch"))
def test_torch_native_matches_decomposition(built, op):
    b = built(op)
    if any(b.net.graph.weights_of(n.name) for n in b.net.graph.nodes() if n.op == op):
        pytest.skip("owns weights: PyTorch has only the native form (ONNX/TVM decompose it)")
    graph = decompose(b.net.graph, set(torch_backend.EMITTERS) - {op})
    module = torch_backend.to_module(graph).eval()
    with torch.no_grad():
        out = module(*map(torch.from_numpy, b.inputs))
    out = [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]
    assert_close(out, b.torch_outputs(), f"{op} (torch, decomposed)")


@pytest.mark.parametrize("op", _native_composites("onnx"))
def test_onnx_native_matches_decomposition(built, op):
    ort = pytest.importorskip("onnxruntime")
    b = built(op)
    outputs = []
    for native in (set(onnx_backend.EMITTERS), set(onnx_backend.EMITTERS) - {op}):
        model = onnx_backend.to_onnx(decompose(b.net.graph, native), b.weights)
        assert (op in {n.op_type.lower() for n in model.graph.node}) == (op in native)
        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])  # fmt: skip
        outputs.append(session.run(None, dict(zip(b.net.graph.inputs, b.inputs, strict=True))))
    assert_close(outputs[0], outputs[1], f"{op} (onnx native vs decomposed)")


@pytest.mark.parametrize("op", _native_composites("tvm"))
def test_tvm_native_matches_decomposition(built, op):
    b = built(op)
    emitters = _tvm_emitters()
    decomposed = decompose(b.net.graph, set(emitters) - {op})
    assert op not in {n.op for n in decomposed.nodes()}
    assert_close(_run_tvm(b), _run_tvm(b, decomposed), f"{op} (tvm native vs decomposed)")


# --- docs ----------------------------------------------------------------------------------------


def op_reference() -> str:
    """The op reference table of docs/language.md, from the table."""

    def arity(op) -> str:
        if op.inputs is None:
            return f"{op.min_inputs} or more"
        return str(op.inputs)

    rows = [
        "| op | tensor inputs | signature | kind | description |",
        "|---|---|---|---|---|",
    ]
    for name in sorted(OPS):
        op = OPS[name]
        kind = "composite" if op.composite else "primitive"
        rows.append(f"| `{name}` | {arity(op)} | `{op.signature()}` | {kind} | {op.doc} |")
    return "\n".join(rows) + "\n"


def test_language_doc_lists_every_op():
    from .conftest import ROOT

    text = (ROOT / "docs" / "language.md").read_text()
    assert op_reference() in text, "regenerate it with tests.test_op_table.op_reference()"


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_parameter_initial_values(backend):
    """Each ``init`` of ``parameter``, as resdsl's seeded NumPy weights and as the PyTorch
    module's own initialisation: constants exactly, random ones within their bounds."""
    from resdsl.weights import initialise

    net = resdsl.loads(
        "network t() (x: (8,)) {\n"
        '    return x * a: parameter((64, 8), stored=(64, 8), init="constant", value=0.25),\n'
        '        x * b: parameter((64, 8), stored=(64, 8), init="uniform", value=0.1),\n'
        '        x * c: parameter((64, 8), stored=(64, 8), init="kaiming"),\n'
        '        x * d: parameter((64, 8), stored=(64, 8), init="normal", std=0.5),\n'
        '        x * e: parameter((8,), init="ones")\n'
        "}\n"
    )
    if backend == "numpy":
        w = initialise(net.graph, seed=3)
    else:
        w = {k: v.detach().numpy() for k, v in net.to_torch(seed=3).state_dict().items()}
    assert (w["a"] == 0.25).all() and (w["e"] == 1).all() and w["e"].shape == (1, 8)
    assert 0.09 < np.abs(w["b"]).max() <= 0.1
    assert 0.3 < np.abs(w["c"]).max() <= 8**-0.5  # fan-in 8
    assert 0.4 < w["d"].std() < 0.6

"""Determinism: the same spec, parameters and seed give byte-identical generated Python and
identical weights, in one process and across processes with different hash seeds; a
compiled TVM artifact is byte-identical when built twice on one machine (docs/security.md
says what can differ between machines).
"""

import hashlib
import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings

import resdsl
from resdsl.backends.torch_structured import generate
from resdsl.weights import initialise

from .conftest import EXAMPLES
from .specgen import specs

torch = pytest.importorskip("torch")

SPEC = EXAMPLES / "densenet121.res"  # template labels, dense loops, blocks as values
SMALL = EXAMPLES / "se_resnet.res"  # CIFAR-sized: quick to initialise


def run_both(code: str, *args: str) -> list[str]:
    """Run ``code`` in two fresh interpreters at once, with PYTHONHASHSEED 1 and 2; return
    their outputs. ``{seed}`` in ``args`` becomes the hash seed."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, *(a.format(seed=seed) for a in args)],
            env={**os.environ, "PYTHONHASHSEED": seed}, stdout=subprocess.PIPE, text=True,
        )
        for seed in ("1", "2")
    ]  # fmt: skip
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    return outputs


COMPILE = "import sys; from resdsl.cli import main; sys.exit(main(sys.argv[1:]))"


def test_generated_python_is_byte_identical_across_processes(tmp_path):
    out = str(tmp_path / "model{seed}.py")
    run_both(COMPILE, "compile", str(SPEC), "--target", "torch", "--set", "num_classes=10",
             "-o", out)  # fmt: skip
    outputs = [(tmp_path / f"model{seed}.py").read_bytes() for seed in ("1", "2")]
    assert outputs[0] == outputs[1]
    # and it is what the API generates in this process
    net = resdsl.load(SPEC, num_classes=10)
    assert outputs[0].decode() == generate(net.graph, source_path=str(SPEC))


WEIGHTS = """
import hashlib, json, sys
import resdsl
from resdsl.weights import initialise

net = resdsl.load(sys.argv[1], num_classes=7)

def digest(arrays):
    h = hashlib.sha256()
    for key, value in arrays:
        h.update(key.encode())
        h.update(value.tobytes())
    return h.hexdigest()

state = net.to_torch(seed=3).state_dict()
print(json.dumps({
    "torch": digest((k, v.numpy()) for k, v in state.items()),
    "numpy": digest(initialise(net.graph, seed=3).items()),
}))
"""


def test_weights_are_identical_across_processes():
    first, second = (json.loads(out) for out in run_both(WEIGHTS, str(SMALL)))
    assert first == second


def state(module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_seeded_weights_in_one_process():
    net = resdsl.load(SMALL, num_classes=7)
    a, b, c = (state(net.to_torch(seed=s)) for s in (3, 3, 4))
    assert same(a, b) and not same(a, c)
    x, y, z = (initialise(net.graph, seed=s) for s in (3, 3, 4))
    assert all((x[k] == y[k]).all() for k in x)
    assert any((x[k] != z[k]).any() for k in x)


def test_seed_none_draws_from_the_global_generator_without_moving_it():
    # `to_torch(seed=None)` starts from torch's global RNG state (deterministic when the
    # caller seeds it); with or without a seed the caller's stream does not move
    net = resdsl.load(SMALL, num_classes=7)
    torch.manual_seed(0)
    expected = torch.rand(1)
    weights = []
    for seed in (None, None, 5):
        torch.manual_seed(0)
        weights.append(state(net.to_torch(seed=seed)))
        assert torch.equal(torch.rand(1), expected)
    assert same(weights[0], weights[1]) and not same(weights[0], weights[2])


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(specs())
def test_generated_specs_are_deterministic(text):
    a, b = resdsl.loads(text), resdsl.loads(text)
    assert a.to_torch_source() == b.to_torch_source()
    assert a.spec_hash == b.spec_hash == hashlib.sha256(text.encode()).hexdigest()
    assert same(state(a.to_torch(seed=1)), state(b.to_torch(seed=1)))


TINY = """network tiny() (x: (3, 8, 8)) {
    y = x -> c: conv2d(4, 3, padding=1) -> bn: batchnorm2d -> relu
    return y -> global_avgpool -> fc: linear(5)
}
"""


def test_tvm_artifact_is_byte_identical_when_built_twice(tmp_path):
    pytest.importorskip("tvm")
    from resdsl.backends.tvm import BuildOptions, compile_network

    net = resdsl.loads(TINY, path="tiny.res")
    for out in ("a", "b"):
        compile_network(net, str(tmp_path / out), BuildOptions("llvm"), seed=0)
    for name in ("model.so", "model.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()

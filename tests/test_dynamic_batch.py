"""One artifact for every batch size: ``compile --batch LOW..HIGH`` (Relax symbolic shapes).

The llvm artifact is checked against the PyTorch backend at batches 1, 3 (a batch that is
not one of the sizes it holds a network for: 2 + 1) and 64 (eight calls of the largest);
its ``model.json``, the errors for batches outside the range, the CLI, a CUDA build (which
compiles without a GPU) and the C++ example of ``examples/deploy`` run with TVM's runtime
alone.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import textwrap

import numpy as np
import pytest

pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

import tvm  # noqa: E402

import resdsl  # noqa: E402
from resdsl import runtime  # noqa: E402
from resdsl.backends.tvm import BuildOptions, compile_network, lower  # noqa: E402
from resdsl.cli import main  # noqa: E402
from resdsl.passes import run_inference_passes  # noqa: E402
from resdsl.weights import from_module  # noqa: E402

from .conftest import EXAMPLES, ROOT  # noqa: E402
from .test_tvm import CONNECT, CUDA_KERNEL, as_tuple, inputs_for, randomised, reference  # noqa: E402

BUILD_MODULE = importlib.import_module("resdsl.backends.tvm.build")

# two inputs (they must agree on the batch), one output; cheap to build
TWO = """
network two() (x: (2, 3, 3), y: (2, 3, 3)) {
    return x + (y -> c: conv2d(2, 1)) -> relu
}
"""


@pytest.fixture(scope="module")
def connect(tmp_path_factory):
    """CONNECT (convolutions, dense block, several outputs) for batches 1..64, llvm."""
    net = resdsl.loads(textwrap.dedent(CONNECT))
    module = randomised(net)
    out = tmp_path_factory.mktemp("connect-dynamic")
    meta = compile_network(net, str(out), BuildOptions("llvm", batch_range=(1, 64)), weights=module)
    return net, module, out, meta


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """TWO for batches 2..5, one sample at a time (micro-batch 1: the network at size 1)."""
    net = resdsl.loads(textwrap.dedent(TWO))
    out = tmp_path_factory.mktemp("two-dynamic")
    options = BuildOptions("llvm", batch_range=(2, 5), micro_batch=1)
    compile_network(net, str(out), options, weights=randomised(net))
    return net, out


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_parity_with_torch_at_any_batch(connect, batch):
    net, module, out, _ = connect
    model = runtime.load(out)
    xs = inputs_for(net, batch, seed=batch)
    actual, expected = as_tuple(model(*xs)), reference(module, xs)
    assert len(actual) == len(expected) == 4
    for (name, _), got, want in zip(net.graph.outputs, actual, expected, strict=True):
        assert got.shape == want.shape == (batch, *net.graph.info(_).shape), name
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)


def test_model_json_records_the_range(connect):
    _, _, out, meta = connect
    on_disk = json.loads((out / "model.json").read_text())
    assert on_disk == json.loads(json.dumps(meta))
    assert on_disk["dynamic_batch"] is True
    assert on_disk["batch_range"] == [1, 64]
    assert "batch" not in on_disk
    assert on_disk["micro_batch"] == 8  # DYNAMIC_MICRO_LIMIT: the samples are small
    assert on_disk["inputs"] == [{"name": "x", "shape": ["batch", 4, 6, 6], "dtype": "float32"}]
    assert [o["shape"][0] for o in on_disk["outputs"]] == ["batch"] * 4
    assert runtime.load(out).batch_range == (1, 64)


def test_batches_outside_the_range_are_refused(connect, two):
    _, _, out, _ = connect
    model = runtime.load(out)
    for batch in (0, 65):
        with pytest.raises(runtime.ArtifactError) as e:
            model(np.zeros((batch, 4, 6, 6), np.float32))
        assert str(e.value) == (
            f"input 'x' has a batch of {batch}; this artifact takes batches from 1 to 64 "
            "(compile with --batch LOW..HIGH to change it)"
        )
    with pytest.raises(
        runtime.ArtifactError, match=r"must have shape \(N, 4, 6, 6\), got \(2, 4, 6\)"
    ):
        model(np.zeros((2, 4, 6), np.float32))
    _, out = two
    model = runtime.load(out)
    x = np.zeros((3, 2, 3, 3), np.float32)
    with pytest.raises(runtime.ArtifactError, match="one batch size, got 3 and 4"):
        model(x, np.zeros((4, 2, 3, 3), np.float32))
    with pytest.raises(
        runtime.ArtifactError, match="a batch of 1; this artifact takes batches from 2 to 5"
    ):
        model(x[:1], x[:1])


def test_one_network_size_runs_every_batch(two):
    """Micro-batch 1: every batch of the range is run one sample at a time."""
    net, out = two
    model = runtime.load(out)
    assert model.meta["micro_batch"] == 1
    module = randomised(net)
    for batch in (2, 5):
        xs = inputs_for(net, batch, seed=batch)
        np.testing.assert_allclose(model(*xs), reference(module, xs)[0], rtol=1e-4, atol=1e-5)


def test_module_holds_a_network_per_size():
    net = resdsl.loads(textwrap.dedent(CONNECT))
    graph, weights = run_inference_passes(net.graph, from_module(randomised(net)))
    mod = lower.to_relax(graph, weights, batch=(1, 64), micro_batch=4)
    assert sorted(gv.name_hint for gv in mod.functions) == [
        "forward1",
        "forward2",
        "forward4",
        "main",
    ]
    assert [int(d) for d in mod["forward4"].params[0].ty.shape] == [4, 4, 6, 6]
    batch = mod["main"].params[0].ty.shape[0]
    assert isinstance(batch, tvm.tirx.Var)
    # the weights are shared: one constant per distinct array, whatever the sizes
    single = lower.to_relax(graph, weights, batch=4)
    constants = {name: _constants(mod[name]) for name in ("forward1", "forward2", "forward4")}
    assert constants["forward1"] == constants["forward2"] == constants["forward4"]
    assert len(constants["forward4"]) == len(_constants(single["main"])) > 10


def _constants(func) -> set[int]:
    """The constant objects ``func`` uses (their addresses)."""
    found: set[int] = set()
    tvm.relax.analysis.post_order_visit(
        func.body,
        lambda e: found.add(e.__chandle__()) if isinstance(e, tvm.ir.expr.GenericConst) else None,
    )
    return found


def test_dynamic_sizes():
    assert lower.dynamic_sizes(1) == [1]
    assert lower.dynamic_sizes(8) == [8, 4, 2, 1]
    assert lower.dynamic_sizes(6) == [6, 4, 2, 1]


@pytest.mark.parametrize(
    ("example", "target", "low_high", "micro", "expected"),
    [
        ("resnet50", "llvm", (1, 64), None, 2),  # 3.06 MiB a sample: 2 fit in 7 MiB
        ("preact_resnet18", "llvm", (1, 64), None, 8),  # 16 would fit: DYNAMIC_MICRO_LIMIT
        ("preact_resnet18", "llvm", (1, 5), None, 4),  # a power of two up to the high end
        ("resnet50", "llvm", (1, 64), 3, 3),  # given
        ("resnet50", "cuda", (1, 64), None, 64),  # the GPU takes up to the whole batch
        ("resnet50", "cuda", (1, 48), None, 32),
    ],
)
def test_micro_batch_of_a_range(example, target, low_high, micro, expected):
    net = resdsl.load(EXAMPLES / f"{example}.res")
    options = BuildOptions(target, batch_range=low_high, micro_batch=micro)
    assert BUILD_MODULE.micro_batch_size(net.graph, options) == expected


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--target", "onnx", "--batch", "1..8"],
         "--batch LOW..HIGH applies to --target llvm or cuda"),
        (["--batch", "0..8"], "--batch LOW..HIGH needs 1 <= LOW <= HIGH <= 65536, got 0..8"),
        (["--batch", "9..8"], "--batch LOW..HIGH needs 1 <= LOW <= HIGH <= 65536, got 9..8"),
        (["--batch", "1..x"],
         "expected a batch size N or a range LOW..HIGH such as 1..64, got '1..x'"),
        (["--batch", "1..8", "--micro-batch", "9"],
         "--micro-batch must be between 1 and the largest batch (8), got 9"),
    ],
)  # fmt: skip
def test_cli_refuses_bad_ranges(tmp_path, capsys, flags, message):
    spec = str(EXAMPLES / "cifar_resnet20.res")
    args = ["compile", spec, "-o", str(tmp_path / "out"), *flags]
    if "--target" not in flags:
        args += ["--target", "llvm"]
    try:
        status = main(args)
    except SystemExit as e:  # argparse's own refusal of the value
        status = e.code
    assert status == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_compiles_checks_and_runs_a_range(tmp_path, capsys):
    spec = tmp_path / "two.res"
    spec.write_text(textwrap.dedent(TWO))
    out = tmp_path / "art"
    args = ["compile", str(spec), "--target", "llvm", "--batch", "2..5", "--micro-batch", "2"]
    assert main([*args, "-o", str(out), "--check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "check output (batch 2)",  # the low end
        "check output (batch 3)",  # 2 + 1
    ]
    assert all(line.endswith(" ok") for line in lines)
    assert main(["run", str(out), "--batch", "4"]) == 0
    assert capsys.readouterr().out.startswith("output: shape (4, 2, 3, 3) float32")
    assert main(["run", str(out)]) == 0  # the low end
    assert capsys.readouterr().out.startswith("output: shape (2, 2, 3, 3) float32")
    assert main(["run", str(out), "--batch", "6"]) == 2
    assert "--batch must be within the artifact's range 2..5, got 6" in capsys.readouterr().err
    np.save(tmp_path / "x.npy", np.ones((6, 2, 3, 3), np.float32))
    assert (
        main(
            [
                "run",
                str(out),
                "--input",
                str(tmp_path / "x.npy"),
                "--input",
                str(tmp_path / "x.npy"),
            ]
        )
        == 1
    )
    assert "a batch of 6; this artifact takes batches from 2 to 5" in capsys.readouterr().err
    fixed = tmp_path / "fixed"
    assert main(["compile", str(spec), "--target", "llvm", "-o", str(fixed)]) == 0
    assert main(["run", str(fixed), "--batch", "2"]) == 2
    assert "--batch applies to an artifact compiled for a batch range" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"batch_range": None}, "'dynamic_batch' is true exactly when there is a 'batch_range'"),
        ({"batch_range": [0, 4]}, "'batch_range' must be [LOW, HIGH] with 1 <= LOW <= HIGH"),
        ({"batch_range": [4, 2]}, "'batch_range' must be [LOW, HIGH] with 1 <= LOW <= HIGH"),
        ({"batch_range": [1, True]}, "'batch_range' must be [LOW, HIGH] with 1 <= LOW <= HIGH"),
        ({"dynamic_batch": False}, "'dynamic_batch' is true exactly when there is a 'batch_range'"),
        ({"inputs": [{"name": "x", "shape": [1, 4, 6, 6], "dtype": "float32"}]},
         "inputs[0]: 'shape' must start with 'batch' in a dynamic-batch artifact"),
        ({"outputs": [{"name": "y", "shape": ["batch", 2**31], "dtype": "float32"}]},
         "outputs[0]: 'shape' sizes must be integers from 1 to"),
    ],
)  # fmt: skip
def test_model_json_of_a_range_is_validated(connect, change, problem):
    meta = json.loads((connect[2] / "model.json").read_text())
    for key, value in change.items():
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    assert problem in runtime.validate_meta(meta)


def test_cuda_build_of_a_range_compiles_without_a_gpu(tmp_path):
    net = resdsl.loads(textwrap.dedent(TWO))
    options = BuildOptions("cuda", batch_range=(1, 8))
    meta = compile_network(net, str(tmp_path), options, weights=randomised(net))
    assert (meta["device"], meta["batch_range"], meta["micro_batch"]) == ("cuda", [1, 8], 8)
    library = (tmp_path / "model.so").read_bytes()
    assert CUDA_KERNEL in library
    assert b"cuda_graph" not in library  # no graph capture for a batch range (build.py)
    assert runtime.validate_meta(json.loads((tmp_path / "model.json").read_text())) is None


# --- the C++ example: TVM's runtime alone ---------------------------------------------------


@pytest.fixture(scope="module")
def run_model(tmp_path_factory):
    """examples/deploy built with CMake against the TVM and tvm_ffi wheels."""
    if not (shutil.which("cmake") and shutil.which("c++")):
        pytest.skip("needs cmake and a C++ compiler")
    import tvm_ffi

    build = tmp_path_factory.mktemp("deploy")
    roots = [f"-DTVM_ROOT={os.path.dirname(tvm.__file__)}",
             f"-DTVM_FFI_ROOT={os.path.dirname(tvm_ffi.__file__)}"]  # fmt: skip
    subprocess.run(["cmake", "-S", str(ROOT / "examples" / "deploy"), "-B", str(build), *roots],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True)
    return build / "run_model"


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_cpp_example_matches_the_python_runtime(run_model, connect, tmp_path, batch):
    net, _, out, _ = connect
    x = inputs_for(net, batch, seed=7)[0]
    x.tofile(tmp_path / "x.bin")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([run_model, out, str(batch), tmp_path / "x.bin", tmp_path / "y.bin"],
                          capture_output=True, text=True, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = np.fromfile(tmp_path / "y.bin", np.float32)
    want = as_tuple(runtime.load(out)(x))[0]
    np.testing.assert_array_equal(got.reshape(want.shape), want)


def test_cpp_example_refuses_a_batch_outside_the_range(run_model, connect):
    done = subprocess.run([run_model, connect[2], "65"], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr == "run_model: this artifact takes batches from 1 to 64\n"

"""The model zoo, model by model: one table row per zoo model, every backend's parity.

For each model (``resdsl models``; a shell pattern narrows them) the row holds:

* params and MACs (``resdsl info``), and the spec's lines (its family file's, shared);
* ``load``: torchvision's state_dict loads into ``resdsl.create_model(name)`` strictly;
* ``torch``: on a randomised state (every floating tensor replaced, as tests/test_zoo.py
  does), the relative max difference between torchvision's model and resdsl's PyTorch
  module, batch 2, eval mode;
* ``onnx``: the ONNX export of resdsl (the same weights) run by ONNX Runtime against
  torchvision's output;
* ``tvm``: TVM llvm compile time (untuned) and the artifact's relative difference;
* ``cuda``: with ``--cuda`` and a GPU, the CUDA artifact's relative difference.

A check passes at a relative max difference <= 1e-5 (PyTorch) or <= 1e-4 (ONNX Runtime,
TVM, CUDA: other kernels, other summation orders). The script exits 1 if any check fails.

    python benchmarks/zoo.py                       # every model, PyTorch and ONNX
    python benchmarks/zoo.py 'resnet*' --tvm       # and TVM llvm
    python benchmarks/zoo.py --tvm --one-per-family
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

TORCH_TOL, OTHER_TOL = 1e-5, 1e-4


def rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def row(name: str, args: argparse.Namespace) -> tuple[list[str], bool]:
    import torch
    import torchvision

    import resdsl
    from resdsl.backends.check import randomise_state
    from resdsl.loader import zoo_models, zoo_text

    net = resdsl.load(f"zoo:{name}")
    family = zoo_models()[name]
    lines = len(zoo_text(family).splitlines())
    reference = randomise_state(torchvision.models.get_model(name, weights=None))
    model = resdsl.create_model(name).eval()
    cells = [name, f"{net.num_params:,}", f"{net.macs / 1e9:.2f} G", f"{lines} ({family})"]
    ok = True
    try:
        model.load_state_dict(reference.state_dict(), strict=True)
        cells.append("ok")
    except RuntimeError:
        return [*cells, "FAIL", "", "", ""], False
    (inp,) = net.graph.inputs
    x = torch.randn(args.batch, *net.graph.info(inp).shape,
                    generator=torch.Generator().manual_seed(1))  # fmt: skip
    with torch.no_grad():
        want = reference(x).numpy()
        got = model(x).numpy()
    r = rel(got, want)
    ok &= r <= TORCH_TOL
    cells.append(f"{r:.1e}" + ("" if r <= TORCH_TOL else " FAIL"))
    from resdsl.weights import from_module

    weights = from_module(model)
    with tempfile.TemporaryDirectory() as tmp:
        cells.append(_onnx(net, weights, x.numpy(), want, tmp))
        ok &= "FAIL" not in cells[-1]
        for target in ("llvm", "cuda"):
            if (target == "llvm" and args.tvm) or (target == "cuda" and args.cuda):
                cells.append(_tvm(net, weights, x.numpy(), want, tmp, target, args.batch))
                ok &= "FAIL" not in cells[-1]
            else:
                cells.append("-")
    return cells, ok


def _onnx(net, weights, x: np.ndarray, want: np.ndarray, tmp: str) -> str:
    import onnxruntime

    from resdsl.backends import onnx as backend

    model = backend.to_onnx(net.graph, weights)
    path = os.path.join(tmp, "model.onnx")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {net.graph.inputs[0]: x})
    r = rel(got, want)
    return f"{r:.1e}" + ("" if r <= OTHER_TOL else " FAIL")


def _tvm(net, weights, x, want, tmp: str, target: str, batch: int) -> str:
    from resdsl import runtime
    from resdsl.backends.tvm import BuildOptions, compile_network

    out = os.path.join(tmp, target)
    start = time.perf_counter()
    compile_network(net, out, BuildOptions(target, batch=batch), weights=weights)
    seconds = time.perf_counter() - start
    try:
        got = runtime.load(out)(x)
    except Exception as e:  # CUDA without a GPU: compiled, not run
        if target != "cuda":
            raise
        return f"{seconds:.0f} s, not run ({str(e).splitlines()[0][:40]})"
    r = rel(np.asarray(got), want)
    return f"{seconds:.0f} s, {r:.1e}" + ("" if r <= OTHER_TOL else " FAIL")


def main(argv: list[str] | None = None) -> int:
    import resdsl
    from resdsl.loader import zoo_models

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pattern", nargs="?", default="*", help="models, e.g. 'resnet*'")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tvm", action="store_true", help="also compile for llvm with TVM")
    parser.add_argument("--cuda", action="store_true", help="also compile (and run) for CUDA")
    parser.add_argument("--one-per-family", action="store_true",
                        help="only the first model of each family file")  # fmt: skip
    args = parser.parse_args(argv)
    names = resdsl.list_models(args.pattern)
    if args.one_per_family:
        files, firsts = zoo_models(), {}
        for name in names:
            firsts.setdefault(files[name], name)
        names = sorted(firsts.values())
    header = ["model", "params", "MACs", "spec lines", "load", "torch", "onnx", "tvm llvm",
              "cuda"]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    failed = []
    for name in names:
        cells, ok = row(name, args)
        print("| " + " | ".join(cells) + " |", flush=True)
        if not ok:
            failed.append(name)
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""TVM backend: compile a network to a deployable CPU (llvm) or CUDA artifact.

    compile_network(net, "out/", BuildOptions(target="cuda", arch="sm_90"), weights="w.pt")

writes ``out/model.so`` and ``out/model.json``; :mod:`resdsl.runtime` runs them.
Importing this package imports TVM (the compiler); nothing else in resdsl does.
"""

from __future__ import annotations

from typing import Any

from ...network import Network
from ...runtime import use_physical_cores
from ...weights import resolve
from .build import BuildOptions, TargetError, build, cuda_source, metadata, write_artifact
from .lower import EMITTERS, to_relax

# Before TVM's thread pool starts (importing starts nothing): builds run kernels to fold
# constants, and tuning must time candidates on the threads the artifacts will run on.
use_physical_cores()

__all__ = [
    "EMITTERS",
    "BuildOptions",
    "TargetError",
    "compile_network",
    "cuda_source",
    "to_relax",
]


def compile_network(
    net: Network,
    out_dir: str,
    options: BuildOptions | None = None,
    *,
    weights: Any = None,
    seed: int = 0,
    database: Any = None,
) -> dict[str, Any]:
    """Build ``net`` and write the artifact to ``out_dir``; returns its metadata.

    ``weights``: a ``.safetensors``/PyTorch state_dict path, an ``nn.Module`` or a dict
    keyed by the IR names; ``None`` initialises them from ``seed``.
    """
    options = options or BuildOptions()
    options.tvm_target()  # reject a bad target before any work
    checked, source = resolve(net.graph, weights, seed)
    executable = build(net, checked, options, database)
    meta = metadata(net, options, source)
    write_artifact(executable, meta, out_dir)
    return meta

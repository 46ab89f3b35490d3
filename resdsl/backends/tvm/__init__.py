"""TVM backend: compile a network to a deployable CPU (llvm) or CUDA artifact.

    compile_network(net, "out/", BuildOptions(target="cuda", arch="sm_90"), weights="w.pt")

writes ``out/model.so`` and ``out/model.json``; :mod:`resdsl.runtime` runs them.
Importing this package imports TVM (the compiler); nothing else in resdsl does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tvm_ffi

from ..._signals import Terminated, interrupt_for, noting_signals
from ...network import Network
from ...runtime import use_physical_cores
from ...weights import resolve
from .build import (
    BuildOptions,
    TargetError,
    build,
    check_room,
    cuda_source,
    metadata,
    write_artifact,
)
from .lower import EMITTERS, to_relax

# Before TVM's thread pool starts (importing starts nothing): builds run kernels to fold
# constants, and tuning must time candidates on the threads the artifacts will run on.
use_physical_cores()

# An interrupt raised in a Python callback that TVM's C++ calls crosses the FFI as an error
# of the exception's kind; unregistered kinds come back as an empty RuntimeError. Registered,
# Ctrl-C and SIGTERM come back as themselves (compile_network also catches what TVM wraps).
tvm_ffi.register_error("KeyboardInterrupt", KeyboardInterrupt)
tvm_ffi.register_error("Terminated", Terminated)

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

    Ctrl-C and SIGTERM during the build raise ``KeyboardInterrupt`` and
    :class:`~resdsl._signals.Terminated`, also where TVM's C++ wrapped them in an error of
    its own; nothing is written then.
    """
    options = options or BuildOptions()
    options.tvm_target()  # reject a bad target before any work
    with noting_signals() as noted:
        try:
            checked, source = resolve(net.graph, weights, seed)
            executable = build(net, checked, options, database)
            meta = metadata(net, options, source)
            if noted:  # TVM swallowed the interrupt: honour it before writing anything
                raise interrupt_for(noted[0])
            elements = sum(np.asarray(a).size for a in checked.values())
            check_room(out_dir, elements * np.dtype(options.dtype).itemsize)
            write_artifact(executable, meta, out_dir)
        except Exception as e:
            if noted:  # Ctrl-C or SIGTERM inside TVM, which came back as its own error
                raise interrupt_for(noted[0]) from e
            raise
    return meta

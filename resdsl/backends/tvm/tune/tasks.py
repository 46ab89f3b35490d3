"""MetaSchedule tasks: the fused kernels of a network, as the build sees them."""

from __future__ import annotations

from typing import Any

import tvm
from tvm.s_tir import meta_schedule as ms

from ..schedules import fuse_passes


def tuning_target(target: tvm.target.Target) -> tvm.target.Target:
    """The build target plus the core count that MetaSchedule's CPU rules require."""
    if target.kind.name != "llvm" or "num-cores" in target.attrs:
        return target
    return tvm.target.Target({**target.export(), "num-cores": ms.utils.cpu_count(logical=False)})


def extract_tasks(
    mod: tvm.IRModule, target: tvm.target.Target, options: Any = None
) -> list[ms.ExtractedTask]:
    """One task per distinct fused kernel of ``mod``, weighted by how often it is called.

    Winograd's kernels (:mod:`.winograd`) are left out: they keep resdsl's rules. Tuning
    ResNet-50 at batch 8, MetaSchedule candidates for the input transform crashed the
    process (a segfault inside the kernel, twice, 16 and 26 minutes in); until that is
    understood they are not measured.
    """
    from ..winograd import is_winograd

    with target, tvm.transform.PassContext(opt_level=3):
        fused = tvm.transform.Sequential(fuse_passes(target, options))(mod)
    tasks = ms.relax_integration.extract_tasks(fused, target)
    return [task for task in tasks if not is_winograd(task.dispatched[0]["main"])]


def _relax_module(net: Any, options: Any, weights: Any, seed: int) -> tvm.IRModule:
    """The module the build compiles (kernels depend on shapes only, not on weight values)."""
    from ....passes import run_inference_passes
    from ....weights import resolve
    from ..build import micro_batch_size
    from ..lower import to_relax

    checked, _ = resolve(net.graph, weights, seed)
    graph, checked = run_inference_passes(net.graph, checked)
    micro = micro_batch_size(net.graph, options)
    return to_relax(graph, checked, batch=options.batch, dtype=options.dtype, micro_batch=micro)

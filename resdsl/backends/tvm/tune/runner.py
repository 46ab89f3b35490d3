"""Candidates timed in this process (:class:`InProcessRunner`)."""

from __future__ import annotations

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.runner import (
    EvaluatorConfig,
    PyRunner,
    PyRunnerFuture,
    RunnerInput,
    RunnerResult,
)

from .... import _compat
from .builder import _Artifacts

# Each candidate runs `number` times (more until `min_repeat_ms` have passed) after a warm-up;
# MetaSchedule's LocalRunner waits 100 ms, half of that keeps tuning moving on a slow machine.
EVALUATOR = EvaluatorConfig(number=3, repeat=1, min_repeat_ms=50, enable_cpu_cache_flush=False)


@derived_object
class _Measured(PyRunnerFuture):
    """A measurement that is already complete (the in-process runner is synchronous)."""

    def __init__(self, seconds: list[float] | None, error: str | None) -> None:
        super().__init__()
        self.seconds, self.error = seconds, error

    def done(self) -> bool:
        return True

    def result(self) -> RunnerResult:
        return RunnerResult(self.seconds, self.error)


@derived_object
class InProcessRunner(PyRunner):
    """Times each built candidate with ``time_evaluator`` on random inputs, in this process."""

    def __init__(self, artifacts: _Artifacts, evaluator: EvaluatorConfig = EVALUATOR) -> None:
        super().__init__()
        self.artifacts = artifacts
        self.evaluator = evaluator

    def run(self, runner_inputs: list[RunnerInput]) -> list[_Measured]:
        fill = tvm.get_global_func("tvm.contrib.random.random_fill_for_measure")
        helpers = _compat.runner_helpers()
        futures = []
        for item in runner_inputs:
            try:
                module = self.artifacts.take(str(item.artifact_path))
                device = tvm.runtime.device(str(item.device_type), 0)
                args_info = [arg.as_json() for arg in item.args_info]
                args = helpers.alloc_argument_common(fill, device, args_info, 1)
                seconds = helpers.run_evaluator_common(module, device, self.evaluator, args)
                futures.append(_Measured(seconds, None))
            except Exception as e:  # e.g. a kernel that fails at run time
                futures.append(_Measured(None, f"{type(e).__name__}: {e}"))
        return futures

"""Bounds on elaboration (:class:`Limits`) and the checks that enforce them where a quantity
grows: steps of work, loop length, integer and tensor sizes, op attribute integers.

docs/security.md explains each bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import LimitError, Span, ValueRangeError
from ..ops import OPS, fmt_shape


@dataclass(frozen=True)
class Limits:
    """Bounds that keep a hostile or mistaken spec from exhausting time or memory.

    The defaults admit real networks by a wide margin (ResNet-152: 515 ops, 5,403 steps,
    tensors of 802,816 elements) and stop a hostile spec within about a second and well
    under 200 MB. docs/security.md explains each bound.
    """

    max_nodes: int = 20_000  # ops in the graph
    max_loop: int = 100_000  # passes of one loop; elements of a tuple or string
    max_call_depth: int = 64  # nesting of block calls
    max_int: int = 2**62  # magnitude of a computed integer
    max_tensor_elements: int = 2**28  # elements of one tensor (per sample) or weight
    max_steps: int = 500_000  # expressions and statements run, loop passes, elements built
    max_name_length: int = 1_000  # characters of a hierarchical node name


MAX_ERRORS = 20  # stop collecting after this many distinct errors
ERROR_STEPS = 1_000  # what a recovered error costs against Limits.max_steps
# A block call (a frame, its name, binding each parameter and input) and a new op (its
# shape rule, its node in the graph) are each many times the work of an expression: they
# are charged so, so that max_steps bounds time whatever a spec spends its steps on (a
# tree of 2**40 calls of an empty block stops within a second).
CALL_STEPS = 20
NODE_STEPS = 10
MAX_ATTR_INT = 2**31 - 1  # integer op attributes: what 32-bit kernel arguments hold


def _digits(value: int) -> int:
    """Decimal digits of ``value``; estimated past 4,000, where ``str`` refuses (CPython's
    int_max_str_digits)."""
    if value.bit_length() < 13_000:
        return len(str(abs(value)))
    return int((value.bit_length() - 1) * math.log10(2)) + 1


def _elements(value: Any, limit: int) -> int:
    """Elements of a tuple or characters of a string, nested tuples counted in full (each
    time they occur); stops counting once past ``limit``."""
    count, stack = 0, [value]
    while stack and count <= limit:
        v = stack.pop()
        if isinstance(v, tuple | str):
            count += len(v)
            if isinstance(v, tuple) and count <= limit:
                stack.extend(v)
    return count


class LimitChecks:
    """Step accounting and size checks, mixed into :class:`~resdsl.elaborate.Elaborator`
    (which holds ``limits`` and ``steps``)."""

    limits: Limits
    steps: int

    def _tick(self, cost: int, span: Span | None) -> None:
        """Count ``cost`` steps of work; past ``limits.max_steps`` the spec is stopped."""
        self.steps += cost
        if self.steps > self.limits.max_steps:
            raise LimitError(
                f"elaboration takes more than {self.limits.max_steps} steps", span,
                hints=["a step is an expression or statement run, a loop pass, or an element "
                       "of a tuple or string built; resdsl.Limits(max_steps=...) raises it"],
            )  # fmt: skip

    def _loop_bound(self, n: int, span: Span) -> None:
        if n > self.limits.max_loop:
            raise LimitError(
                f"loop of {n} iterations exceeds the limit of {self.limits.max_loop}", span
            )
        if n < 0:
            raise ValueRangeError(f"cannot repeat a negative number of times ({n})", span)

    def _check_scalar(self, value: Any, span: Span) -> None:
        if type(value) is int and abs(value) > self.limits.max_int:
            raise LimitError(f"integer of {_digits(value)} digits is too large", span)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueRangeError(f"arithmetic gives {value}", span)
        if isinstance(value, tuple | str):
            self._check_elements(value, span)

    def _check_elements(self, value: tuple | str, span: Span) -> None:
        """Bound a tuple or string built by the spec, counting nested tuples in full: a
        tuple holding another twice per level doubles without using memory, but comparing
        or printing it would not finish. Building it is that many steps of work."""
        n = _elements(value, self.limits.max_loop)
        if n > self.limits.max_loop:
            raise LimitError(
                f"a value of more than {self.limits.max_loop} elements (nested ones included) "
                "is too long", span,
            )  # fmt: skip
        self._tick(n, span)

    def _check_attr_ints(self, op_name: str, attrs: dict, attr_args, kwargs, span: Span) -> None:
        """Integer attributes fit 32 bits: ``stride=10**12`` may give a valid shape (1 x 1),
        but PyTorch's and TVM's kernels hold strides, paddings and sizes in 32 bits."""
        for i, attr in enumerate(OPS[op_name].attrs):
            value = attrs.get(attr.name)
            ints = value if type(value) is tuple else (value,)
            big = [v for v in ints if type(v) is int and abs(v) > MAX_ATTR_INT]
            if big:
                at = kwargs[attr.name][1] if attr.name in kwargs else attr_args.get(i, (0, span))[1]
                raise LimitError(
                    f"`{attr.name}` is too large: an integer of {_digits(big[0])} digits "
                    "(ops take at most 2**31 - 1)", at,
                )  # fmt: skip

    def _check_size(self, shape: tuple[int, ...], span: Span, what: str = "tensor") -> None:
        if math.prod(shape) > self.limits.max_tensor_elements:
            per = " per sample" if what == "tensor" else ""
            raise LimitError(
                f"{what} of shape {fmt_shape(shape)} exceeds {self.limits.max_tensor_elements} "
                f"elements{per}", span,
            )  # fmt: skip

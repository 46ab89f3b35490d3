"""Which labels can name a layer or block instance: the rule shared by elaboration and the
PyTorch backend.

A name segment becomes a submodule of the generated ``nn.Module`` and the first part of its
state_dict keys. Two kinds of segment cannot be one, and elaboration refuses them at the
label (so ``resdsl check`` reports them):

* a Python special name, ``__x__`` (``__init__``, ``__call__``, ``__dict__``, ...);
* an attribute of ``torch.nn.Module`` (``forward``, ``training``, ``state_dict``,
  ``_modules``, ``eval``, ``to``, ...): a submodule of that name would hide, or be hidden
  by, what PyTorch itself calls, and no checkpoint has keys like ``forward.weight``.

Every other segment of letters, digits, underscores and hyphens (torchvision's RegNet
has ``block1-0``) is stored under its own name; the PyTorch backend writes
``self.conv1 = ...`` for a plain identifier and ``self.add_module("__c", ...)`` for a
segment that Python would mangle inside a class (``__c``), a keyword (``class``), all
digits (``0``) or not an identifier (``block1-0``). A label may hold several segments joined
by ``.`` (``"stem.conv"``). This module needs no torch.
"""

from __future__ import annotations

import re

from .errors import Span, ValueRangeError

# One segment of a name: what a state_dict key may hold between its dots.
SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_BAD = re.compile(r"[^A-Za-z0-9_.-]")

# Attributes of a ``torch.nn.Module()`` instance other than the ``__x__`` special names:
# ``dir(torch.nn.Module())`` under PyTorch 2.14 (methods, class attributes and the instance
# attributes set by ``Module.__init__``).
NN_MODULE_ATTRIBUTES = frozenset({
    "T_destination", "_apply", "_backward_hooks", "_backward_pre_hooks", "_buffers",
    "_call_impl", "_compiled_call_impl", "_forward_hooks", "_forward_hooks_always_called",
    "_forward_hooks_with_kwargs", "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs",
    "_get_backward_hooks", "_get_backward_pre_hooks", "_get_name", "_is_full_backward_hook",
    "_load_from_state_dict", "_load_state_dict_post_hooks", "_load_state_dict_pre_hooks",
    "_maybe_warn_non_full_backward_hook", "_modules", "_named_members",
    "_non_persistent_buffers_set", "_parameters", "_register_load_state_dict_pre_hook",
    "_register_state_dict_hook", "_replicate_for_data_parallel", "_save_to_state_dict",
    "_slow_forward", "_state_dict_hooks", "_state_dict_pre_hooks", "_version",
    "_wrapped_call_impl", "add_module", "apply", "bfloat16", "buffers", "call_super_init",
    "children", "compile", "cpu", "cuda", "double", "dump_patches", "eval", "extra_repr",
    "float", "forward", "get_buffer", "get_extra_state", "get_parameter", "get_submodule",
    "half", "ipu", "load_state_dict", "modules", "mtia", "named_buffers", "named_children",
    "named_modules", "named_parameters", "parameters", "register_backward_hook",
    "register_buffer", "register_forward_hook", "register_forward_pre_hook",
    "register_full_backward_hook", "register_full_backward_pre_hook",
    "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook",
    "register_module", "register_parameter", "register_state_dict_post_hook",
    "register_state_dict_pre_hook", "requires_grad_", "set_extra_state", "set_submodule",
    "share_memory", "state_dict", "to", "to_empty", "train", "training", "type", "xpu",
    "zero_grad",
})  # fmt: skip


def is_special(segment: str) -> bool:
    """``__x__``: a name Python reserves for special attributes."""
    return len(segment) > 4 and segment.startswith("__") and segment.endswith("__")


def reserved(segment: str) -> str | None:
    """Why ``segment`` cannot name a layer or block instance, or None when it can."""
    if is_special(segment):
        return f"the name `{segment}` is reserved: `__x__` names are Python's special names"
    if segment in NN_MODULE_ATTRIBUTES:
        return (
            f"the name `{segment}` is reserved: it is an attribute of PyTorch's `nn.Module` "
            f"(`model.{segment}`)"
        )
    return None


def check_label(segment: str, span: Span | None) -> None:
    """Raise a located :class:`ValueRangeError` if ``segment`` is a reserved name."""
    reason = reserved(segment)
    if reason is not None:
        other = (segment.strip("_") or "layer") + "_"
        while reserved(other):  # `requires_grad_` is taken too
            other += "_"
        raise ValueRangeError(
            reason,
            span,
            hints=[
                f"rename the label, e.g. `{other}`: a layer or block instance becomes a "
                "submodule of the generated PyTorch module, named as in the spec"
            ],
        )


def segment_problem(text: str) -> tuple[str, str] | None:
    """Why ``text`` cannot be a label -- ``(message, hint)`` -- or None when it can: one or
    more segments (:data:`SEGMENT`) joined by ``.``."""
    bad = _BAD.search(text)
    if bad is not None:
        return (
            f"name {text!r} has the character {bad.group()!r}: a name is letters, digits, "
            "`_` and `-`",
            'a `.` nests a name in scopes: `"stem.conv"`; other punctuation is refused '
            "(PyTorch's state_dict keys hold none)",
        )
    if not text:
        return "a name cannot be empty", 'write a name, e.g. `"conv{i}"`'
    if any(not segment for segment in text.split(".")):
        return (
            f"name {text!r} has an empty segment",
            'a `.` joins two segments: no leading, trailing or doubled dot (`"stem.conv"`)',
        )
    return None

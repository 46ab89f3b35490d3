"""Labels that clash with ``nn.Module`` (hardening issue 6).

Every attribute name of ``torch.nn.Module()`` (and the ones the issue tried), as the label of
a conv, of a block instance and of a conv inside a block, is either refused by ``resdsl
check`` at the label (exit 1, E0302, line and column), or stored under exactly that name: the
module from ``Network.to_torch()`` and the file from ``compile --target torch`` both run, their
state_dict keys are the spec's names, and a strict load into a fresh instance works. Internal
loads are strict, so a name mismatch is an error naming the keys, never a false "FAILED".
"""

import copy
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import resdsl
from resdsl import names
from resdsl.cli import EXIT_INTERNAL, main

torch = pytest.importorskip("torch")

# The names the issue lists, and more that a label could spell: every special name, the
# private state of a module, a name Python mangles inside a class (`__c`).
ISSUE = [
    "forward", "training", "__init__", "_modules", "_parameters", "_buffers", "state_dict",
    "load_state_dict", "eval", "train", "__call__", "parameters", "modules", "children", "to",
    "cuda", "cpu", "apply", "zero_grad", "register_buffer", "add_module", "named_modules",
    "half", "float", "double", "type", "extra_repr", "_apply", "__dict__", "__class__",
    "dump_patches", "call_super_init", "T_destination", "_version", "__c", "__getattr__",
    "__setattr__", "_forward_hooks", "requires_grad_", "share_memory", "get_submodule",
    "__setstate__", "_load_from_state_dict", "bfloat16", "ipu", "__getitem__", "__c_d",
]  # fmt: skip
NAMES = sorted(set(dir(torch.nn.Module())) | set(ISSUE))

# kind -> (spec with LABEL, (line, column) of the label, state_dict keys for LABEL)
BN = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
KINDS = {
    "conv": (
        """
        network n() (x: (3, 8, 8)) {
            return x -> LABEL: conv2d(4, 3)
        }
        """,
        (2, 17),
        lambda n: [f"{n}.weight", f"{n}.bias"],
    ),
    "instance": (
        """
        block b(c: int) (x) {
            return x -> conv: conv2d(c, 3) -> bn: batchnorm2d
        }
        network n() (x: (3, 8, 8)) {
            return x -> LABEL: b(4)
        }
        """,
        (5, 17),
        lambda n: [f"{n}.conv.weight", f"{n}.conv.bias", *(f"{n}.bn.{w}" for w in BN)],
    ),
    "inside": (
        """
        block b(c: int) (x) {
            return x -> LABEL: conv2d(c, 3) -> bn: batchnorm2d
        }
        network n() (x: (3, 8, 8)) {
            return x -> layer1: b(4)
        }
        """,
        (2, 17),
        lambda n: [f"layer1.{n}.weight", f"layer1.{n}.bias", *(f"layer1.bn.{w}" for w in BN)],
    ),
}


def spec_text(kind: str, label: str) -> str:
    return textwrap.dedent(KINDS[kind][0]).lstrip().replace("LABEL", label)


def from_source(path) -> torch.nn.Module:
    """``build()`` of a generated file, exec'd in a fresh namespace."""
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace["build"]()


def exercise(build, keys: list[str]) -> None:
    """The module runs; its state_dict keys are ``keys``; a strict load into a fresh one
    reproduces it; PyTorch's own methods (train, eval, to, copy, repr) still work."""
    torch.manual_seed(0)
    model = build()
    assert list(model.state_dict()) == keys
    torch.manual_seed(1)
    fresh = build()
    fresh.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 4, 6, 6)
        assert torch.equal(model(x), fresh(x))
    model.train().zero_grad()
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert [k for k, _ in model.named_parameters()] == [k for k in keys if "running" not in k
                                                       and "num_batches" not in k]  # fmt: skip
    copy.deepcopy(model).to(torch.float64)
    assert repr(model)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("label", NAMES)
def test_label_is_refused_at_check_or_stored_by_its_name(label, kind, spec, tmp_path, capsys):
    path = spec(spec_text(kind, label))
    code = main(["check", path, "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    if code != 0:
        assert code == 1
        (diag,) = out["files"][0]["diagnostics"]
        line, column = KINDS[kind][1]
        assert (diag["code"], diag["kind"]) == ("E0302", "ValueRangeError")
        assert (diag["span"]["line"], diag["span"]["column"]) == (line, column)
        assert diag["span"]["end_column"] == column + len(label)
        assert diag["message"].startswith(f"the name `{label}` is reserved")
        assert diag["hints"][0].startswith("rename the label, e.g. `")
        # and every other way in: compile, and loading from Python
        assert main(["compile", path, "--target", "torch", "-o", str(tmp_path / "m.py")]) == 1
        assert not (tmp_path / "m.py").exists()
        with pytest.raises(resdsl.ValueRangeError):
            resdsl.load(path)
        return
    keys = KINDS[kind][2](label)
    net = resdsl.load(path)
    exercise(lambda: net.to_torch(seed=None), keys)
    out_file = tmp_path / "m.py"
    assert main(["compile", path, "--target", "torch", "-o", str(out_file)]) == 0
    exercise(lambda: from_source(out_file), keys)


def test_which_labels_are_refused():
    refused = [n for n in NAMES if names.reserved(n)]
    stored = [n for n in NAMES if not names.reserved(n)]
    assert stored == ["__c", "__c_d"]  # mangled inside a class: registered by string
    assert len(refused) == len(NAMES) - 2 and {"forward", "training", "__init__"} <= set(refused)
    # every attribute of the installed torch's nn.Module is refused (a newer torch that adds
    # one fails here: add it to names.NN_MODULE_ATTRIBUTES)
    # (in a fresh process: torch.compile, run by other tests, patches attributes onto
    # nn.Module at run time, such as `___needs_generation_tag_patch`)
    fresh = subprocess.run(
        [sys.executable, "-c", "import json, torch; print(json.dumps(dir(torch.nn.Module())))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    public = {n for n in json.loads(fresh.stdout) if not names.is_special(n)}
    assert public <= names.NN_MODULE_ATTRIBUTES
    # the generated class adds only special names (`__getitem__`) and its own submodules
    model = resdsl.loads(spec_text("instance", "layer1")).to_torch()
    added = set(dir(model)) - set(model._modules) - set(dir(torch.nn.Module()))
    assert all(names.is_special(n) for n in added), added


def test_refusal_is_rendered_with_the_label_underlined(spec, capsys):
    path = spec("network n() (x: (3, 8, 8)) {\n    y = x -> forward: conv2d(8, 3)\n    return y\n}")
    assert main(["check", path]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"{path}:2:14: error[E0302]: the name `forward` is reserved: it is an attribute of "
        "PyTorch's `nn.Module` (`model.forward`)",
        "   2 |     y = x -> forward: conv2d(8, 3)",
        "                    ^^^^^^^",
        "  hint: rename the label, e.g. `forward_`: a layer or block instance becomes a "
        "submodule of the generated PyTorch module, named as in the spec",
    ]


@pytest.mark.parametrize(
    ("text", "where", "hint"),
    [
        ('x -> "{n}": conv2d(4, 3)', (2, 17), "e.g. `training_`"),  # a template label
        ('x -> "__{n}__": conv2d(4, 3)', (2, 17), "e.g. `training_`"),
        ("x -> requires_grad_: relu", (2, 17), "e.g. `requires_grad__`"),  # ops without weights
        ("x -> __init__: relu", (2, 17), "e.g. `init_`"),
    ],
)
def test_templates_and_weightless_ops_are_refused_too(text, where, hint):
    source = f'network n(n: str = "training") (x: (3, 8, 8)) {{\n    return {text}\n}}\n'
    with pytest.raises(resdsl.ValueRangeError) as info:
        resdsl.loads(source)
    assert (info.value.span.line, info.value.span.column) == where
    assert hint in info.value.hints[0]


ODD = """
block b(c: int) (x) {
    p = class: parameter((c, 8, 8))
    q = __p: parameter((c, 8, 8))
    y = x -> __c: conv2d(c, 3, padding=1) -> lambda: batchnorm2d
    return y + p + q
}
network n() (x: (3, 8, 8)) {
    y = x -> "for": b(4) -> "0": b(4)
    return y -> __d: relu -> __fc: conv2d(4, 3)
}
"""
ODD_KEYS = [
    f"{scope}.{key}"
    for scope in ("for", "0")
    for key in ["class", "__p", "__c.weight", "__c.bias", *(f"lambda.{w}" for w in BN)]
] + ["__fc.weight", "__fc.bias"]


def test_keywords_digits_and_mangled_names_on_parameters_and_scopes(tmp_path):
    """`parameter` ops under names that are not attributes are reached with getattr (a
    Scope's [...] holds submodules only); a scope `for` holds a mangled `__c`."""
    net = resdsl.loads(ODD)
    exercise(lambda: net.to_torch(seed=None), ODD_KEYS)
    source = net.to_torch_source()
    assert 'self.add_module("for", Scope())' in source
    assert 'self["for"].add_module("__c", nn.Conv2d(3, 4, 3, padding=1))' in source
    assert 'getattr(self["for"], "__p")' in source
    assert "self.__" not in source and source.count("_modules") == 1  # in Scope.__getitem__
    path = tmp_path / "m.py"
    path.write_text(source)
    exercise(lambda: from_source(path), ODD_KEYS)


def test_the_backend_refuses_a_reserved_name_that_got_past_elaboration(monkeypatch):
    from resdsl.elaborate import naming

    monkeypatch.setattr(naming, "check_label", lambda segment, span: None)
    net = resdsl.loads(spec_text("inside", "state_dict"))
    with pytest.raises(resdsl.SpecError, match=r"`state_dict` is reserved.*\(target torch\)") as e:
        net.to_torch()
    assert (e.value.span.line, e.value.span.column) == (2, 17)


def test_plain_labels_keep_the_plain_attribute_form():
    source = resdsl.loads(spec_text("instance", "layer1")).to_torch_source()
    assert "        self.layer1 = Scope()\n" in source
    assert "        self.layer1.conv = nn.Conv2d(3, 4, 3)\n" in source
    assert "add_module" not in source


# --- compile --check: strict loads, no false failure -------------------------------------------

MANGLED = """
block b(c: int) (x) {
    y = x -> __c: conv2d(c, 3, padding=1) -> __bn: batchnorm2d -> relu
    return y + x
}
network n() (x: (4, 8, 8)) {
    return x -> __c: b(4) -> __c2: conv2d(4, 3)
}
"""


def test_onnx_check_passes_on_a_mangled_label(spec, tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    path = spec(MANGLED)
    module = resdsl.load(path).to_torch(seed=3)
    assert "__c.__c.weight" in module.state_dict()
    weights = tmp_path / "w.pt"
    torch.save(module.state_dict(), weights)
    out = tmp_path / "m.onnx"
    for extra in ([], ["--weights", str(weights)]):
        args = ["compile", path, "--target", "onnx", "-o", str(out), "--check", *extra]
        assert main(args) == 0
        captured = capsys.readouterr().out
        assert captured.startswith("check output: max abs diff ") and captured.endswith(" ok\n")


def test_a_name_mismatch_is_an_error_naming_the_keys_not_a_failed_check(
    spec, tmp_path, monkeypatch, capsys
):
    """The old bug, put back: the backend writes `self.__c` (mangled to `_N__c`). The strict
    load in the reference refuses it, naming the keys, instead of comparing a random conv."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from resdsl.backends import torch as backend

    monkeypatch.setattr(backend, "_is_attribute", backend._is_identifier)
    path = spec(MANGLED)
    assert "_N__c" in next(iter(resdsl.load(path).to_torch().state_dict()))
    args = ["compile", path, "--target", "onnx", "-o", str(tmp_path / "m.onnx"), "--check"]
    assert main(args) == EXIT_INTERNAL
    captured = capsys.readouterr()
    assert "FAILED" not in captured.out
    assert "Missing key(s)" in captured.err and '"__c.__c.weight"' in captured.err


def test_reference_load_is_strict_but_optional_buffers_may_be_absent():
    from resdsl.backends.check import random_inputs, reference
    from resdsl.weights import from_module

    net = resdsl.loads(spec_text("instance", "layer1"))
    weights = from_module(net.to_torch(seed=0))
    x = random_inputs([(2, 3, 8, 8)], 0)
    del weights["layer1.bn.num_batches_tracked"]  # optional, as in many checkpoints
    (y,) = reference(net, weights, x)
    assert y.shape == (2, 4, 6, 6)
    weights["layer1.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*layer1\.extra\.weight"):
        reference(net, weights, x)
    del weights["layer1.extra.weight"], weights["layer1.conv.bias"]
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*layer1\.conv\.bias"):
        reference(net, weights, x)

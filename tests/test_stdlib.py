"""The standard library: `import std.NAME`, its documentation, and its errors."""

from __future__ import annotations

import pathlib
import re

import pytest

import resdsl
from resdsl.errors import DuplicateNameError, SpecImportError, SpecSyntaxError
from resdsl.loader import std_modules

from .conftest import ROOT

STD = ROOT / "resdsl" / "std"
DOC = (ROOT / "docs" / "stdlib.md").read_text()


def headers(path) -> list[str]:
    """Each `block ...` header of a library file, up to (not including) ` {`."""
    text = path.read_text()
    return [m.group(1) for m in re.finditer(r"^(block [^{]*?) \{", text, re.M | re.S)]


def test_the_modules():
    assert std_modules() == ["blocks", "densenet", "resnet", "transformer"]
    assert sorted(p.stem for p in STD.glob("*.res")) == std_modules()


@pytest.mark.parametrize("name", ["blocks", "densenet", "resnet", "transformer"])
def test_every_block_is_documented_with_its_exact_header(name):
    assert f"## `std.{name}`" in DOC
    found = headers(STD / f"{name}.res")
    assert found, name
    for header in found:
        assert f"```text\n{header}\n```" in DOC, header


@pytest.mark.parametrize("name", ["blocks", "densenet", "resnet", "transformer"])
def test_each_module_is_a_library_that_checks(name, spec):
    from resdsl.elaborate import check_definitions
    from resdsl.loader import load_program

    path = spec(f"import std.{name}\n")
    program = load_program(pathlib.Path(path).read_text(), path)
    check_definitions(program)
    assert program.files[1:] == [f"std/{name}.res"]


def test_the_documented_example_works_from_any_directory(spec):
    (body,) = re.findall(r"```res\n(.*?)```", DOC, re.S)
    net = resdsl.load(spec(body, "elsewhere/deep/net.res"))
    # stem 3*64*9 + BN 128; layer1: 4 convs 64*64*9 + 4 BN; layer2: 128*64*9 + 3 * 128*128*9,
    # 4 BN of 128, a 1x1 projection 64*128 with its BN; fc 128*10 + 10
    expected = (1728 + 128) + (4 * 36864 + 4 * 128) + (73728 + 3 * 147456 + 4 * 256 + 8192
                                                        + 256) + (1280 + 10)  # fmt: skip
    assert net.num_params == expected == 676_682
    assert net.graph.inputs_of("layer2.0.downsample.0") == ["layer1.1.relu_1"]


def test_unknown_module_is_located_with_a_suggestion():
    with pytest.raises(SpecImportError) as e:
        resdsl.loads("import std.resnt\nnetwork n() (x: 3) { return x }", path="n.res")
    assert (e.value.line, e.value.column) == (1, 1)
    assert e.value.message == "no module `std.resnt` in the standard library"
    assert e.value.hints == ["did you mean `resnet`?"]
    with pytest.raises(SpecImportError) as e:
        resdsl.loads("import std.zzz\nnetwork n() (x: 3) { return x }", path="n.res")
    assert e.value.hints == ["modules: std.blocks, std.densenet, std.resnet, std.transformer"]


def test_only_std_is_a_dotted_library():
    with pytest.raises(SpecSyntaxError) as e:
        resdsl.loads("\nimport os.path\nnetwork n() (x: 3) { return x }", path="n.res")
    assert (e.value.line, e.value.column) == (2, 8)
    assert e.value.hints == ['a file is imported by its path: `import "os.res"`']


def test_std_names_share_the_namespace(spec):
    with pytest.raises(DuplicateNameError) as e:
        resdsl.loads(
            "import std.resnet\nblock basic() (x) { return x }\nnetwork n() (x: 3) { return x }",
            path="n.res",
        )
    # the spec's own definitions come first, so the library's `basic` is the second one
    assert (e.value.path, e.value.line, e.value.column) == ("std/resnet.res", 6, 7)
    note = e.value.notes[0]
    assert (note.message, note.span.path, note.span.line) == ("first defined here", "n.res", 2)


def test_std_imported_twice_and_through_a_file(spec):
    spec("import std.resnet\n", "lib.res")
    path = spec('import std.resnet\nimport "lib.res"\nimport std.resnet\n'
                "network n() (x: (3, 8, 8)) { return x -> stage(basic, 3, 1) }")  # fmt: skip
    assert resdsl.load(path).num_params == 2 * (3 * 3 * 9 + 6)


def test_errors_inside_std_point_at_the_library(spec):
    path = spec("import std.resnet\nnetwork n() (x: (3, 8, 8)) { return x -> basic(4, groups=2) }")
    with pytest.raises(resdsl.SpecError) as e:
        resdsl.load(path)
    assert (e.value.path, e.value.line) == ("std/resnet.res", 7)
    assert "basic blocks have one group of width 64" in resdsl.render(e.value)


def test_qkv_attention_matches_timms_layout():
    """std.transformer.qkv_attention against timm's Attention (its forward written out):
    a `qkv` linear, heads split from it, q scaled, softmax(q k^T) v, the `proj` linear."""
    torch = pytest.importorskip("torch")
    net = resdsl.loads(
        "import std.transformer\nnetwork t() (x: (5, 12)) { return x -> attn: qkv_attention(3) }\n"
    )
    module = net.to_torch().eval()
    assert list(module.state_dict()) == [
        "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias"
    ]  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in module.state_dict().values():
            t.copy_(torch.randn(t.shape, generator=gen))
    w = module.state_dict()
    x = torch.randn(2, 5, 12, generator=gen)
    b, n, c, heads = 2, 5, 12, 3
    qkv = torch.nn.functional.linear(x, w["attn.qkv.weight"], w["attn.qkv.bias"])
    q, k, v = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
    attn = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)
    y = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
    want = torch.nn.functional.linear(y, w["attn.proj.weight"], w["attn.proj.bias"])
    with torch.no_grad():
        got = module(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("call", "squeeze", "act", "gate"),
    [
        ("squeeze_excite(squeeze=6, act=silu)", 6, "SiLU", "Sigmoid"),
        ("squeeze_excite(squeeze=4, gate=hardsigmoid)", 4, "ReLU", "Hardsigmoid"),
        ("squeeze_excite(4)", 6, "ReLU", "Sigmoid"),
        ("squeeze_excite(divisor=8)", 8, "ReLU", "Sigmoid"),
    ],
)
def test_squeeze_excite_is_torchvisions(call, squeeze, act, gate):
    """std.blocks.squeeze_excite against torchvision.ops.SqueezeExcitation: same keys,
    strict load, equal outputs on a randomised state."""
    torch = pytest.importorskip("torch")
    ops = pytest.importorskip("torchvision.ops")
    net = resdsl.loads(
        f"import std.blocks\nnetwork t() (x: (24, 5, 5)) {{ return x -> se: {call} }}\n"
    )
    reference = ops.SqueezeExcitation(
        24, squeeze, activation=getattr(torch.nn, act), scale_activation=getattr(torch.nn, gate)
    ).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in reference.state_dict().values():
            t.copy_(torch.randn(t.shape, generator=gen))
    module = net.to_torch().eval()
    module.load_state_dict({f"se.{k}": v for k, v in reference.state_dict().items()}, strict=True)
    x = torch.randn(2, 24, 5, 5, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(module(x), reference(x), rtol=1e-5, atol=1e-5)

"""`resdsl diff`: blocks, ops and connections added/removed/changed, and per-stage deltas.

ResNet-18 against ResNet-34 is checked against torchvision's parameter counts and against
MACs worked out by hand; small hand-written pairs pin down every section exactly.
"""

import json

import pytest

import resdsl
from resdsl.cli import main
from resdsl.tools import fmt
from resdsl.tools.diff import compare, render

from .conftest import EXAMPLES

A = """network n(width: int = 8) (x: (width, 8, 8)) {
    y = x -> c1: conv2d(width, 3, padding=1) -> relu
    return y + x
}
"""
B = """network n(width: int = 8) (x: (width, 8, 8)) {
    y = x -> c1: conv2d(2 * width, 3, padding=1) -> relu
    return y + proj: shortcut(x, like=y)
}
"""


def load(name: str) -> resdsl.Network:
    return resdsl.load(EXAMPLES / f"{name}.res")


@pytest.fixture(scope="module")
def resnets():
    return compare(load("resnet18"), load("resnet34"))


# --- ResNet-18 -> ResNet-34 ----------------------------------------------------------------


def test_resnet18_to_34_stage_params_match_torchvision(resnets):
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    with torch.device("meta"):  # shapes only: counting needs no initialisation
        r18, r34 = tv.models.resnet18(), tv.models.resnet34()
    stages = {s["stage"]: s for s in resnets["stages"]}
    assert list(stages) == ["", "layer1", "layer2", "layer3", "layer4"]
    for name in ("layer1", "layer2", "layer3", "layer4"):
        a, b = count(getattr(r18, name)), count(getattr(r34, name))
        assert (stages[name]["params_a"], stages[name]["params_b"]) == (a, b)
        assert stages[name]["params_delta"] == b - a
    assert stages[""]["params_delta"] == 0  # stem and classifier are the same
    assert resnets["params_delta"] == count(r34) - count(r18) == 10_108_160


def test_resnet18_to_34_stage_deltas_by_hand(resnets):
    # Each added basic block of C channels is two bias-free 3x3 convolutions C -> C
    # (2 * C * C * 9 weights) and two batch norms (2 * 2 * C), on an S x S map: 2 * (S * S *
    # C) * (C * 9) MACs, the same at every stage (C doubles as S halves).
    block_macs = 2 * (56 * 56 * 64) * (64 * 9)
    assert block_macs == 231_211_008
    added = {"layer1": (1, 64), "layer2": (2, 128), "layer3": (4, 256), "layer4": (1, 512)}
    stages = {s["stage"]: s for s in resnets["stages"]}
    for name, (n, c) in added.items():  # [3, 4, 6, 3] - [2, 2, 2, 2] blocks
        assert stages[name]["params_delta"] == n * (2 * c * c * 9 + 4 * c)
        assert stages[name]["macs_delta"] == n * block_macs
    assert stages[""]["params_delta"] == stages[""]["macs_delta"] == 0
    assert resnets["macs_delta"] == 8 * block_macs


def test_resnet18_to_34_blocks_ops_connections(resnets):
    added = [b["name"] for b in resnets["blocks"]["added"]]
    assert added == ["layer1.2", "layer2.2", "layer2.3", "layer3.2", "layer3.3", "layer3.4",
                     "layer3.5", "layer4.2"]  # fmt: skip
    assert {b["block"] for b in resnets["blocks"]["added"]} == {"basic"}
    assert resnets["blocks"]["added"][0]["params"] == 2 * 64 * 64 * 9 + 2 * 2 * 64
    assert resnets["blocks"]["removed"] == resnets["blocks"]["changed"] == []
    assert len(resnets["ops"]["added"]) == 8 * 7  # conv, bn, relu, conv, bn, add, relu
    assert resnets["ops"]["removed"] == resnets["ops"]["changed"] == []
    # Each new block is entered twice (its branch and its identity skip), and the first
    # block after a stage's end now reads the new last block.
    skips = [e for e in resnets["connections"]["added"] if e["kind"] == "skip"]
    assert [(e["src"], e["dst"]) for e in skips[:2]] == [
        ("layer1.1.relu_1", "layer1.2.add_0"), ("layer2.1.relu_1", "layer2.2.add_0")
    ]  # fmt: skip
    changed = {(c["dst"], c["port"]): c for c in resnets["connections"]["changed"]}
    assert changed["layer2.0.downsample.0", 0]["src"] == ["layer1.1.relu_1", "layer1.2.relu_1"]
    assert changed["layer2.0.downsample.0", 0]["kind"] == ["projection", "projection"]
    assert changed["avgpool", 0]["src"] == ["layer4.1.relu_1", "layer4.2.relu_1"]
    assert len(changed) == 7  # conv1 and downsample of layer2-4's first block, avgpool


def test_resnet18_to_34_text(resnets):
    text = render(resnets)
    assert "blocks: 8 added\n  + layer1.2  basic  7 ops  73,984 params  231,211,008 MACs" in text
    assert "ops: 56 added (56 inside the blocks above)" in text
    assert "  ~ avgpool[0]: layer4.1.relu_1 -> layer4.2.relu_1  data" in text
    assert text.splitlines()[-1].split() == [
        "total", "11,689,512", "21,797,672", "+10,108,160", "1,814,073,344", "3,663,761,408",
        "+1,849,688,064",
    ]  # fmt: skip


# --- no differences ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet50", "densenet121", "long_skips"])
def test_same_network_and_formatted_spec_have_no_differences(name, tmp_path):
    path = EXAMPLES / f"{name}.res"
    reformatted = fmt.format_text(path.read_text(), str(path))
    net = resdsl.loads(reformatted, path=str(path))  # imports resolve beside the original
    d = compare(load(name), net)
    assert d["identical"]
    assert all(not v for section in ("blocks", "ops", "connections") for v in d[section].values())
    assert all(s["params_delta"] == s["macs_delta"] == 0 for s in d["stages"])
    assert "no differences in blocks, ops or connections" in render(d)


# --- small pairs, exactly ------------------------------------------------------------------


def test_wider_conv_and_a_projection_shortcut():
    d = compare(resdsl.loads(A), resdsl.loads(B))
    assert d["blocks"] == {
        "added": [{"name": "proj", "block": "shortcut", "ops": 2, "params": 16 * 8 + 2 * 16,
                   "macs": 16 * 8 * 8 * 8}],
        "removed": [], "changed": [],
    }  # fmt: skip
    assert [o["name"] for o in d["ops"]["added"]] == ["proj.0", "proj.1"]
    assert d["ops"]["removed"] == []
    c1, relu, add = d["ops"]["changed"]
    assert c1 == {
        "name": "c1",
        "attrs": {"out_channels": [8, 16]},
        "shape": [[8, 8, 8], [16, 8, 8]],
        "params": [8 * 8 * 9 + 8, 16 * 8 * 9 + 16],
        "macs": [8 * 8 * 8 * 8 * 9, 16 * 8 * 8 * 8 * 9],
    }
    assert (relu["name"], relu["shape"]) == ("relu_0", [[8, 8, 8], [16, 8, 8]])
    assert (add["name"], "attrs" in add) == ("add_0", False)
    assert d["connections"] == {
        "added": [{"src": "x", "dst": "proj.0", "port": 0, "kind": "projection"},
                  {"src": "proj.0", "dst": "proj.1", "port": 0, "kind": "projection"}],
        "removed": [],
        "changed": [{"dst": "add_0", "port": 1, "src": ["x", "proj.1"],
                     "kind": ["skip", "projection"]}],
    }  # fmt: skip
    assert d["stages"] == [
        {"stage": "", "params_a": 584, "params_b": 1168, "params_delta": 584,
         "macs_a": 36_864, "macs_b": 73_728, "macs_delta": 36_864},
        {"stage": "proj", "params_a": 0, "params_b": 160, "params_delta": 160,
         "macs_a": 0, "macs_b": 8192, "macs_delta": 8192},
    ]  # fmt: skip
    assert not d["identical"]


def test_concat_replaced_by_add():
    a = resdsl.loads("network n() (x: (4, 2, 2)) { y = x -> relu\n return concat(x, y) }")
    b = resdsl.loads("network n() (x: (4, 2, 2)) { y = x -> relu\n return y + x }")
    d = compare(a, b)
    assert [o["name"] for o in d["ops"]["removed"]] == ["concat_0"]
    assert [o["name"] for o in d["ops"]["added"]] == ["add_0"]
    assert d["connections"]["removed"] == [
        {"src": "x", "dst": "concat_0", "port": 0, "kind": "concat"},
        {"src": "relu_0", "dst": "concat_0", "port": 1, "kind": "concat"},
    ]
    assert d["connections"]["added"] == [
        {"src": "relu_0", "dst": "add_0", "port": 0, "kind": "data"},
        {"src": "x", "dst": "add_0", "port": 1, "kind": "skip"},
    ]
    assert d["blocks"] == {"added": [], "removed": [], "changed": []}


BLOCKS = """block unit(c: int) (x) {{
    return x -> conv: conv2d(c, 1){extra}
}}
network n() (x: (4, 2, 2)) {{
    y = x -> first: unit(4){second}
    return y
}}
"""


def test_blocks_removed_and_changed():
    a = resdsl.loads(BLOCKS.format(extra="", second=" -> second: unit(4)"))
    b = resdsl.loads(BLOCKS.format(extra=" -> relu", second=""))
    d = compare(a, b)
    assert [x["name"] for x in d["blocks"]["removed"]] == ["second"]
    assert d["blocks"]["changed"] == [{
        "name": "first", "block": ["unit", "unit"], "ops_added": 1, "ops_removed": 0,
        "ops_changed": 0, "params": [20, 20], "macs": [64, 64],
    }]  # fmt: skip
    text = render(d)
    assert "blocks: 1 removed, 1 changed\n  - second  unit  1 ops  20 params  64 MACs" in text
    assert "  ~ first  unit  1 ops added" in text
    assert "ops: 1 added, 1 removed (1 inside the blocks above)\n  + first.relu_0  relu" in text
    assert "connections: 1 added, 1 removed\n  + first.conv -> first.relu_0[0]  data\n" in text


# --- the command line ----------------------------------------------------------------------


def test_cli_text_output(spec, capsys):
    a, b = spec(A, "a.res"), spec(B, "b.res")
    assert main(["diff", a, b]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[3:] == [
        "blocks: 1 added",
        "  + proj  shortcut  2 ops  160 params  8,192 MACs",
        "ops: 2 added, 3 changed (2 inside the blocks above)",
        "  ~ c1  out_channels 8 -> 16, shape (8, 8, 8) -> (16, 8, 8), params 584 -> 1,168",
        "  ~ relu_0  shape (8, 8, 8) -> (16, 8, 8)",
        "  ~ add_0  shape (8, 8, 8) -> (16, 8, 8)",
        "connections: 2 added, 1 changed (1 inside the blocks above)",
        "  + x -> proj.0[0]  projection",
        "  ~ add_0[1]: x -> proj.1  skip -> projection",
        "",
        "stage        params a  params b  Δ params  MACs a  MACs b   Δ MACs",
        "------------------------------------------------------------------",
        "(top level)       584     1,168      +584  36,864  73,728  +36,864",
        "proj                0       160      +160       0   8,192   +8,192",
        "------------------------------------------------------------------",
        "total             584     1,328      +744  36,864  81,920  +45,056",
    ]
    assert out.splitlines()[0] == f"a  n  {a}  584 params  36,864 MACs  4 ops"


def test_cli_json_and_exit_codes(spec, capsys):
    a, b = spec(A, "a.res"), spec(B, "b.res")
    assert main(["diff", a, b, "--json"]) == 0  # different, but like `git diff`: 0
    d = json.loads(capsys.readouterr().out)
    assert d == json.loads(json.dumps(compare(resdsl.load(a), resdsl.load(b))))
    assert main(["diff", a, b, "--exit-code"]) == 1
    assert main(["diff", a, a, "--exit-code"]) == 0
    capsys.readouterr()


def test_cli_set_applies_to_both(spec, capsys):
    a, b = spec(A, "a.res"), spec(B, "b.res")
    assert main(["diff", a, b, "--json", "--set", "width=4"]) == 0
    c1 = json.loads(capsys.readouterr().out)["ops"]["changed"][0]
    assert c1["attrs"] == {"out_channels": [4, 8]}


def test_cli_spec_error_and_missing_file(spec, capsys):
    good = spec(A, "a.res")
    bad = spec("network n() (x: (8, 8, 8)) {\n    return x + y\n}\n", "bad.res")
    assert main(["diff", good, bad]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2:16: error[E0201]" in err
    assert main(["diff", good, str(bad) + ".missing"]) == 2
    assert "no such file" in capsys.readouterr().err

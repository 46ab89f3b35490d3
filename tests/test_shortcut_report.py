"""Shortcuts that do not hide mistakes: the projections `shortcut` inserts are recorded and
reported by `check` and `info` (each one with --verbose), and `project=false` refuses them."""

import json

import pytest

import resdsl
from resdsl.cli import main
from resdsl.errors import Span

BLOCK = """\
block basic(c: int, stride: int = 1) (x) {
    y = x -> conv2d(c, 3, stride=stride, padding=1, bias=false) -> batchnorm2d -> relu
          -> conv2d(c, 3, padding=1, bias=false) -> batchnorm2d
    return relu(y + downsample: shortcut(x, like=y{strict}))
}

network net() (x: (16, 8, 8)) {
    y = x -> a: basic(16) -> b: basic({channels}, stride=2)
    return y
}
"""


def spec(channels: int = 32, strict: str = "") -> str:
    return BLOCK.replace("{channels}", str(channels)).replace("{strict}", strict)


def test_projections_are_recorded_on_the_network():
    net = resdsl.loads(spec(), path="net.res")
    assert net.projections == (
        ("b.downsample", Span("net.res", 4, 21, 4, 52), (16, 8, 8), (32, 4, 4)),
    )
    (p,) = net.projections
    assert (p.name, p.source, p.target) == ("b.downsample", (16, 8, 8), (32, 4, 4))
    assert "b.downsample.0" in net.graph and "b.downsample.1" in net.graph


def test_no_projection_no_record():
    net = resdsl.loads(spec(channels=16).replace(", stride=2)", ")"))
    assert net.projections == ()


def test_vector_projection_is_recorded():
    net = resdsl.loads("network n() (v: (4,)) { return (v -> linear(8)) + shortcut(v, like=(8,)) }")
    assert [(p.name, p.source, p.target) for p in net.projections] == [("shortcut_0", (4,), (8,))]


def test_explicit_project_is_not_reported():
    net = resdsl.loads("network n() (x: (4, 8, 8)) { return x -> p: project(8) }")
    assert net.projections == ()


# --- project=false ------------------------------------------------------------------------


def test_strict_shortcut_refuses_a_projection():
    text = spec(strict=", project=false")
    with pytest.raises(resdsl.ShapeError) as info:
        resdsl.loads(text, path="net.res")
    err = info.value
    assert err.code == "E0301"
    assert err.message == (
        "the shortcut has shape (16, 8, 8), not (32, 4, 4), and `project=false` refuses a "
        "projection"
    )
    assert (err.line, err.column) == (4, 21)  # the call, label included
    assert err.column == text.splitlines()[3].index("downsample:") + 1
    assert err.hints == [
        "check the branch's channels and stride; or drop `project=false` to insert "
        "`conv2d(32, 1, stride=2, bias=false) -> batchnorm2d`"
    ]
    assert err.notes[0].message == "in `b`, an instance of `basic`"


def test_strict_shortcut_is_identity_when_shapes_match():
    text = spec(channels=16, strict=", project=false").replace(", stride=2)", ")")
    net = resdsl.loads(text)
    assert net.projections == ()
    assert not any(".downsample" in name for name in net.graph.nx.nodes)


def test_strict_shortcut_refuses_an_impossible_projection_the_same_way():
    with pytest.raises(resdsl.ShapeError) as info:
        resdsl.loads("network n() (x: (4, 8, 8)) { return x -> shortcut(like=(9, 3, 5), "
                     "project=false) }")  # fmt: skip
    assert info.value.message.endswith("`project=false` refuses a projection")
    assert info.value.hints == ["check the branch's channels and stride"]


def test_project_must_be_a_bool():
    with pytest.raises(resdsl.TypeMismatchError) as info:
        resdsl.loads("network n() (x: (4,)) { return x -> shortcut(like=x, project=1) }")
    assert info.value.message == "`project` must be true or false, got int 1"
    assert (info.value.line, info.value.column) == (1, 37)  # `shortcut`, counted by hand


def test_project_has_a_did_you_mean():
    with pytest.raises(resdsl.UnknownNameError) as info:
        resdsl.loads("network n() (x: (4,)) { return x -> shortcut(like=x, projct=false) }")
    assert info.value.hints == ["did you mean `project`?"]


# --- check and info -----------------------------------------------------------------------


@pytest.fixture
def net_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.res").write_text(spec())
    return "net.res"


def test_check_counts_the_projections(net_file, capsys):
    assert main(["check", net_file]) == 0
    out = capsys.readouterr().out
    assert out == "net.res: ok (17 ops, 19,200 params, 524.29 K MACs, 1 shortcut projection)\n"


def test_check_verbose_lists_each_projection(net_file, capsys):
    assert main(["check", "--verbose", net_file]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "net.res: ok (17 ops, 19,200 params, 524.29 K MACs, 1 shortcut projection)",
        "  net.res:4:21: b.downsample: projects (16, 8, 8) to (32, 4, 4)",
    ]


def test_check_plural_and_none(tmp_path, capsys):
    four = tmp_path / "four.res"
    four.write_text(spec().replace("a: basic(16)", "a: basic(8, stride=1)").replace(
        "-> b: basic(32, stride=2)",
        "-> b: basic(32, stride=2) -> c: basic(64) -> d: basic(16)",
    ))  # fmt: skip
    none = tmp_path / "none.res"
    none.write_text("network n() (x: (4,)) { return x -> relu }\n")
    assert main(["check", "-v", str(four), str(none)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(", 4 shortcut projections)")
    assert [line.split(": ")[1] for line in lines[1:5]] == [
        "a.downsample", "b.downsample", "c.downsample", "d.downsample"
    ]  # fmt: skip
    assert lines[5] == f"{none}: ok (2 ops, 0 params, 0 MACs)"  # nothing added without any


def test_check_json_lists_the_projections(net_file, capsys):
    assert main(["check", net_file, "--format", "json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["files"]
    assert entry["summary"].endswith(", 1 shortcut projection")
    assert entry["projections"] == [
        {"name": "b.downsample", "path": "net.res", "line": 4, "column": 21,
         "source": [16, 8, 8], "target": [32, 4, 4]}
    ]  # fmt: skip


def test_check_reports_the_strict_error(tmp_path, capsys):
    path = tmp_path / "strict.res"
    path.write_text(spec(strict=", project=false"))
    assert main(["check", str(path), "--color", "never"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:4:21: error[E0301]: the shortcut has shape (16, 8, 8), not")


def test_info_says_how_many_and_lists_them_with_verbose(net_file, capsys):
    assert main(["info", net_file]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[5:8] == ["ops      17", "shortcut 1 projection", ""]
    assert main(["info", net_file, "-v"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[5:9] == [
        "ops      17",
        "shortcut 1 projection",
        "  net.res:4:21: b.downsample: projects (16, 8, 8) to (32, 4, 4)",
        "",
    ]


def test_info_without_projections_has_no_line(tmp_path, capsys):
    path = tmp_path / "plain.res"
    path.write_text("network n() (x: (4,)) { return x -> linear(2) }\n")
    assert main(["info", str(path), "-v"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[5:7] == ["ops      2", ""]


def test_info_json_has_the_projections(net_file, capsys):
    assert main(["info", net_file, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in data["projections"]] == ["b.downsample"]

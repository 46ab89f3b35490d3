"""Names that fit any checkpoint: `-` in a segment, dotted labels that open (and reopen)
scopes, and inline blocks that add no name level (docs/language.md "Labels and names")."""

import pytest

import resdsl


def names(text: str) -> list[str]:
    """The node names of the graph, inputs excluded, in emission order."""
    return [n.name for n in resdsl.loads(text).graph.nodes() if n.op != "input"]


def error(text: str, cls: type) -> resdsl.SpecError:
    with pytest.raises(cls) as e:
        resdsl.loads(text)
    return e.value


def at(err: resdsl.SpecError) -> tuple[int, int, int]:
    return err.line, err.column, err.span.end_column


def net(body: str, shape: str = "(4, 8, 8)", defs: str = "") -> str:
    return f"{defs}network t() (x: {shape}) {{\n{body}\n}}\n"


# --- `-` in a segment ------------------------------------------------------------------------


def test_a_hyphen_may_stand_in_a_segment():
    text = net(
        '    y = x -> "block1-0": conv2d(4, 1) -> "a-{1 + 1}-b": relu\n'
        '    return y -> "-lead": conv2d(4, 1)'
    )
    assert names(text) == ["block1-0", "a-2-b", "-lead"]


@pytest.mark.parametrize("label", ["a/b", "a b", "a:b", "a+b", "é", "a{'!'}"])
def test_other_punctuation_is_refused_at_the_label(label):
    err = error(net(f'    return x -> "{label}": relu'), resdsl.ValueRangeError)
    assert err.code == "E0302"
    assert "a name is letters, digits, `_` and `-`" in err.message
    assert at(err)[:2] == (2, 17)
    assert any("`.` nests a name in scopes" in h for h in err.hints)


@pytest.mark.parametrize("label", ["a..b", ".a", "a.", ".", "{''}.x"])
def test_a_segment_may_not_be_empty(label):
    err = error(net(f'    return x -> "{label}": relu'), resdsl.ValueRangeError)
    assert err.code == "E0302"
    assert ("empty segment" in err.message) or err.message == "a name cannot be empty"
    assert at(err) == (2, 17, 17 + len(label) + 2)


def test_an_empty_label_is_refused():
    err = error(net('    return x -> "": relu'), resdsl.ValueRangeError)
    assert (err.message, at(err)) == ("a name cannot be empty", (2, 17, 19))


@pytest.mark.parametrize("label", ["stem.forward", "__init__.conv", "a.b.state_dict"])
def test_reserved_names_are_refused_per_segment(label):
    err = error(net(f'    return x -> "{label}": conv2d(4, 1)'), resdsl.ValueRangeError)
    assert "is reserved" in err.message
    assert at(err)[:2] == (2, 17)


# --- dotted labels ---------------------------------------------------------------------------


def test_dotted_labels_open_scopes_without_a_block():
    text = net(
        '    y = x -> "stem.conv": conv2d(8, 3, padding=1) -> "stem.bn": batchnorm2d -> relu\n'
        '    return y -> global_avgpool -> "head.fc": linear(10)'
    )
    assert names(text) == ["stem.conv", "stem.bn", "relu_0", "global_avgpool_0", "head.fc"]


def test_a_scope_may_be_reentered_interleaved_as_modulelist_pairs():
    text = net(
        "    for i in range(3) {\n"
        '        x = x -> "convs.{i}": conv2d(4, 3, padding=1) -> "bns.{i}": batchnorm2d\n'
        "    }\n"
        "    return x"
    )
    assert names(text) == ["convs.0", "bns.0", "convs.1", "bns.1", "convs.2", "bns.2"]


def test_dotted_block_instances_and_reopened_instance_scopes():
    defs = "block unit(c: int) (x) { return x -> conv: conv2d(c, 1) -> relu }\n"
    text = net(
        "    for i in range(2) {\n"
        '        x = x -> "stages.{i}.blocks.0": unit(4)\n'
        "    }\n"
        "    y = x -> layer1: unit(4)\n"
        '    return y -> "layer1.extra": conv2d(4, 1) -> "stages.0.blocks.1.conv": conv2d(4, 1)',
        defs=defs,
    )
    assert names(text) == [
        "stages.0.blocks.0.conv", "stages.0.blocks.0.relu_0",
        "stages.1.blocks.0.conv", "stages.1.blocks.0.relu_0",
        "layer1.conv", "layer1.relu_0", "layer1.extra", "stages.0.blocks.1.conv",
    ]  # fmt: skip


def test_dotted_labels_inside_a_block_are_under_its_instance():
    defs = 'block unit() (x) { return x -> "a.b": conv2d(4, 1) -> "a.c.d": relu }\n'
    assert names(net("    return x -> u: unit", defs=defs)) == ["u.a.b", "u.a.c.d"]


def test_a_dotted_projection_scope():
    text = net('    return conv2d(x, 8, 1) + "skip.down": shortcut(x, like=(8, 8, 8))')
    assert names(text) == ["conv2d_0", "skip.down.0", "skip.down.1", "add_0"]


def test_a_name_used_twice_is_still_an_error_with_a_note():
    text = net('    y = x -> "a.b": conv2d(4, 1)\n    return y -> "a.b": relu')
    err = error(text, resdsl.DuplicateNameError)
    assert (err.code, err.message) == ("E0204", "the name `a.b` is already used")
    assert at(err) == (3, 17, 22)
    assert err.notes[0].message == "first used here"
    assert (err.notes[0].span.line, err.notes[0].span.column) == (2, 14)


def test_an_op_cannot_become_a_scope():
    text = net('    y = x -> "a": conv2d(4, 1)\n    return y -> "a.b": conv2d(4, 1)')
    err = error(text, resdsl.DuplicateNameError)
    assert err.code == "E0204"
    assert err.message == "`a` is an op, so it cannot also be a scope holding `a.b`"
    assert at(err) == (3, 17, 22)
    assert err.notes[0].message == "`a` is named here"
    assert (err.notes[0].span.line, err.notes[0].span.column) == (2, 14)
    assert err.hints


def test_a_deeper_op_cannot_become_a_scope_either():
    text = net('    y = x -> "a.b": conv2d(4, 1)\n    return y -> "a.b.c.d": relu')
    err = error(text, resdsl.DuplicateNameError)
    assert err.message == "`a.b` is an op, so it cannot also be a scope holding `a.b.c.d`"
    assert at(err)[:2] == (3, 17)


def test_a_scope_cannot_become_an_op():
    text = net('    y = x -> "a.b": conv2d(4, 1)\n    return y -> "a": relu')
    err = error(text, resdsl.DuplicateNameError)
    assert err.message == "the name `a` is already a scope (of `a.b`)"
    assert at(err) == (3, 17, 20)
    assert (err.notes[0].span.line, err.notes[0].span.column) == (2, 14)


def test_a_scope_cannot_become_a_block_instance():
    defs = "block unit() (x) { return x -> conv: conv2d(4, 1) }\n"
    text = net('    y = x -> "a.b": conv2d(4, 1)\n    return y -> a: unit', defs=defs)
    err = error(text, resdsl.DuplicateNameError)
    assert err.message == "the name `a` is already a scope (of `a.b`)"
    assert at(err) == (4, 17, 18)


def test_an_input_is_not_a_scope():
    err = error(net('    return x -> "x.w": conv2d(4, 1)'), resdsl.DuplicateNameError)
    assert err.message == "`x` is an op, so it cannot also be a scope holding `x.w`"


def test_anonymous_names_skip_scopes():
    text = net('    y = x -> "relu_0.a": conv2d(4, 1)\n    return y -> relu')
    assert names(text) == ["relu_0.a", "relu_1"]


def test_a_long_dotted_name_hits_the_name_limit():
    text = net(
        "    return x -> \"aaaaaaaaaa.bbbbbbbbbb.cccccccccc.dddddddddd.{'e' + 'eeee'}\": relu"
    )
    with pytest.raises(resdsl.LimitError) as e:
        resdsl.loads(text, limits=resdsl.Limits(max_name_length=40))
    assert (e.value.code, e.value.line, e.value.column) == ("E0501", 2, 17)


def test_every_error_is_reported_once_in_source_order():
    text = net(
        '    y = x -> "a": conv2d(4, 1)\n'
        '    z = y -> "a.b": relu\n'
        '    w = y -> "c..d": relu\n'
        "    return y"
    )
    err = error(text, resdsl.SpecError)
    assert [(e.code, e.line) for e in err.errors] == [("E0204", 3), ("E0302", 4)]


# --- inline blocks ---------------------------------------------------------------------------

LN2D = """inline block ln2d(eps: float = 1e-6) (x) {
    return x -> permute((1, 2, 0)) -> "{label}": layernorm(eps) -> permute((2, 0, 1))
}
"""


def test_an_inline_block_adds_no_name_level():
    text = net(
        '    y = x -> "stem.norm": ln2d -> relu\n    return y -> norm2: ln2d(1e-5)', defs=LN2D
    )
    assert names(text) == [
        "permute_0", "stem.norm", "permute_1", "relu_0", "permute_2", "norm2", "permute_3",
    ]  # fmt: skip
    graph = resdsl.loads(text).graph
    assert graph.node("norm2").attrs["eps"] == 1e-5
    assert graph.node("stem.norm").attrs["eps"] == 1e-6
    assert {n.scope for n in graph.nodes()} == {""}  # the caller's scope, not a block's


def test_an_inline_block_inside_a_block_instance_names_there():
    defs = LN2D + 'block stage() (x) { return x -> conv: conv2d(4, 1) -> "norm": ln2d }\n'
    text = net('    return x -> "stages.0": stage', defs=defs)
    assert names(text) == [
        "stages.0.conv", "stages.0.permute_0", "stages.0.norm", "stages.0.permute_1",
    ]  # fmt: skip
    node = resdsl.loads(text).graph.node("stages.0.norm")
    assert (node.scope, node.block) == ("stages.0", "stage")


def test_labels_inside_an_inline_body_join_the_callers_prefix():
    defs = """inline block pair(c: int) (x) {
    return x -> "{label}.conv": conv2d(c, 1) -> "{label}.bn": batchnorm2d -> fixed: relu
}
block holder() (x) { return x -> "p": pair(4) }
"""
    assert names(net("    return x -> h: holder", defs=defs)) == [
        "h.p.conv", "h.p.bn", "h.fixed",
    ]  # fmt: skip


def test_an_unlabelled_inline_call_whose_body_needs_its_label():
    text = net("    y = x -> relu\n    return y -> ln2d", defs=LN2D)
    err = error(text, resdsl.ArgumentError)
    assert err.code == "E0202"
    assert err.message == (
        "`label` is the label of the call to inline block `ln2d`, and this call has none"
    )
    assert at(err) == (2, 41, 46)  # `label` in the template's hole
    assert "label the call: `norm: ln2d(...)`" in err.hints
    (call,) = err.notes
    assert (call.message, call.span.line, call.span.column) == (
        "in a call of inline block `ln2d`", 6, 17,
    )  # fmt: skip


def test_an_unlabelled_inline_call_is_fine_when_the_body_names_nothing_by_it():
    defs = "inline block act() (x) { return x -> relu -> gelu }\n"
    text = net("    y = x -> act -> act\n    return y -> relu", defs=defs)
    assert names(text) == ["relu_0", "gelu_0", "relu_1", "gelu_1", "relu_2"]


def test_a_parameter_named_label_wins():
    defs = 'inline block named(label: str) (x) { return x -> "{label}": relu }\n'
    assert names(net('    return x -> outer: named("inner")', defs=defs)) == ["inner"]


def test_inline_blocks_are_first_class():
    defs = LN2D + ("block apply(kind: block) (x) { return x -> a: kind -> conv2d(4, 1) }\n")
    text = net("    return x -> outer: apply(ln2d)", defs=defs)
    assert names(text) == ["outer.permute_0", "outer.a", "outer.permute_1", "outer.conv2d_0"]


def test_an_inline_block_label_on_two_calls_is_a_duplicate():
    text = net("    y = x -> n: ln2d\n    return y -> n: ln2d", defs=LN2D)
    err = error(text, resdsl.DuplicateNameError)
    assert err.message == "the name `n` is already used"
    assert at(err)[:2] == (2, 39)  # the body's label `"{label}"`
    assert err.notes[0].message == "first used here"
    assert err.notes[-1].message == "in `n`, an instance of `ln2d`"
    assert (err.notes[-1].span.line, err.notes[-1].span.column) == (6, 17)


def test_an_inline_block_that_calls_itself_is_a_cycle():
    defs = "inline block loop() (x) { return x -> loop }\n"
    err = error(net("    return x -> loop", defs=defs), resdsl.CycleError)
    assert (err.code, err.line) == ("E0401", 1)


@pytest.mark.parametrize("label", ['"a b"', '"a.forward"', "training"])
def test_a_bad_inline_label_is_refused_at_the_call(label):
    err = error(net(f"    return x -> {label}: ln2d", defs=LN2D), resdsl.ValueRangeError)
    assert at(err) == (5, 17, 17 + len(label))


def test_inline_is_a_keyword():
    with pytest.raises(resdsl.SpecSyntaxError, match="`inline` is a keyword"):
        resdsl.loads(net("    inline = 3\n    return x"))
    with pytest.raises(resdsl.SpecSyntaxError) as e:
        resdsl.loads("inline network t() (x: (4,)) { return x }\n")
    assert (e.value.line, e.value.column) == (1, 8)


# --- the PyTorch module stores weights under exactly these names ------------------------------


def test_dotted_labels_are_state_dict_keys():
    pytest.importorskip("torch")
    text = net(
        '    y = x -> "stem.conv": conv2d(8, 3, padding=1, bias=false) -> "stem.bn": batchnorm2d\n'
        "    for i in range(2) {\n"
        '        y = y -> "convs.{i}": conv2d(8, 3, padding=1) -> "bns.{i}": batchnorm2d\n'
        "    }\n"
        '    return y -> "stem.norm": ln2d -> global_avgpool -> "head.fc": linear(10)',
        defs=LN2D,
    )
    keys = set(resdsl.loads(text).to_torch().state_dict())
    bn = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
    want = {"stem.conv.weight", "stem.norm.weight", "stem.norm.bias", "head.fc.weight"}
    want |= {"head.fc.bias"} | {f"stem.bn.{k}" for k in bn}
    for i in range(2):
        want |= {f"convs.{i}.weight", f"convs.{i}.bias"} | {f"bns.{i}.{k}" for k in bn}
    assert keys == want


def test_hyphenated_labels_are_state_dict_keys():
    pytest.importorskip("torch")
    text = net(
        '    y = x -> "trunk_output.block1.block1-0.proj.0": conv2d(8, 1, bias=false)\n'
        '    return y -> "trunk_output.block1.block1-0.proj.1": batchnorm2d'
    )
    keys = set(resdsl.loads(text).to_torch().state_dict())
    assert keys == {
        "trunk_output.block1.block1-0.proj.0.weight",
        *(f"trunk_output.block1.block1-0.proj.1.{k}"
          for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")),
    }  # fmt: skip

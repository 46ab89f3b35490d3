"""The language's semantics: expressions, statements, blocks, names, parameters, imports."""

import pytest

import resdsl
from resdsl.elaborate import constant


def vector_net(body: str, params: str = "") -> str:
    """A network over a (4,) vector whose body computes `n`, returned as linear(n)."""
    return f"network t({params}) (x: (4,)) {{\n{body}\n    return x -> linear(n)\n}}\n"


def value(expr: str, **params) -> int:
    """Evaluate an int expression through the language: it becomes an output width."""
    net = resdsl.loads(vector_net(f"    n = {expr}"), **params)
    return net.output_shapes["output"][0]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("2 ** 3 ** 2", 512),  # right-associative
        ("-2 ** 2 + 10", 6),  # unary minus binds looser than **
        ("17 // 5 + 17 % 5", 5),
        ("int(7 / 2)", 3),
        ("int(64 * 0.5)", 32),
        ("max(3, 9, 4) - min(3, 9, 4)", 6),
        ("max((2, 8, 5))", 8),
        ("abs(-5)", 5),
        ("ceil(7 / 2) + floor(7 / 2)", 7),
        ("round(2.6)", 3),
        ("int(sqrt(49))", 7),
        ("if 3 > 2 and not (1 == 2) then 11 else 12", 11),
        ("if 1 >= 2 or false then 11 else 12", 12),
        ("if 2 != 2 then 1 elif_is_not_syntax else 2".replace(" elif_is_not_syntax", ""), 2),
        ("(5, 6, 7)[1]", 6),
        ("(5, 6, 7)[-1]", 7),
        ('len((1, 2, 3)) + len("ab")', 5),
        ("x.channels + x.rank + x.features", 9),
        ("x.shape[0] * 10", 40),
        ("1_000 // 100", 10),
    ],
)
def test_expressions(expr, expected):
    assert value(expr) == expected


def test_short_circuit_skips_the_error():
    # the right side would divide by zero; `and`/`or` and the conditional are lazy
    assert value("if false and 1 / 0 > 1 then 1 else 2") == 2
    assert value("if true or 1 / 0 > 1 then 3 else 4") == 3
    assert value("if true then 5 else 1 / 0") == 5


def test_for_repeat_if_and_unpacking():
    body = """
    n = 0
    for i in range(1, 4) { n = n + i }
    repeat 2 { n = n * 2 }
    for w in (10, 20) { n = n + w }
    a, b = (n, 1)
    if a > 100 { n = 1 } elif a > 50 { n = a + b } else { n = 2 }
"""
    # (1 + 2 + 3) * 4 + 30 = 54 -> second branch -> 55
    assert resdsl.loads(vector_net(body)).output_shapes["output"] == (55,)


def test_parameters_types_and_defaults():
    spec = vector_net(
        "    n = if flag then int(width * scale) + len(name) else dims[1]",
        'width: int = 8, scale: float = 1.5, flag: bool = true, name: str = "ab", '
        "dims: tuple = (1, 2)",
    )
    assert resdsl.loads(spec).output_shapes["output"] == (14,)
    assert resdsl.loads(spec, width=4, scale=2).output_shapes["output"] == (10,)
    assert resdsl.loads(spec, flag=False, dims=(3, 7)).output_shapes["output"] == (7,)
    with pytest.raises(resdsl.TypeMismatchError, match="parameter `width` is int"):
        resdsl.loads(spec, width=2.5)
    with pytest.raises(resdsl.TypeMismatchError, match="parameter `flag` is bool"):
        resdsl.loads(spec, flag=1)


def test_defaults_may_use_earlier_parameters():
    spec = """
block widen(c: int, out: int = c * 2) (x) { return x -> linear(out) }
network t() (x: (4,)) { return x -> widen(3) }
"""
    assert resdsl.loads(spec).output_shapes["output"] == (6,)


def test_blocks_as_values_and_multiple_outputs():
    spec = """
block split(a: int, b: int) (x) { return x -> left: linear(a), x -> right: linear(b) }
block apply(f: block, n: int) (x) { return x -> inner: f(n) }
block dense1(n: int) (x) { return x -> fc: linear(n) }
network t() (x: (4,)) {
    p, q = x -> s: split(2, 3)
    return p, q, x -> app: apply(dense1, 5)
}
"""
    net = resdsl.loads(spec)
    assert net.output_shapes == {"p": (2,), "q": (3,), "output2": (5,)}
    names = [n.name for n in net.graph.nodes()]
    assert names == ["x", "s.left", "s.right", "app.inner.fc"]


def test_anonymous_names_are_deterministic_per_scope():
    spec = """
block two() (x) { return x -> relu -> relu }
network t() (x: (4,)) {
    y = x -> linear(4) -> relu -> linear(4)
    return y -> two -> two -> relu_0: identity
}
"""
    names = [n.name for n in resdsl.loads(spec.replace("relu_0:", "last:")).graph.nodes()]
    assert names == [
        "x", "linear_0", "relu_0", "linear_1",
        "two_0.relu_0", "two_0.relu_1", "two_1.relu_0", "two_1.relu_1", "last",
    ]  # fmt: skip
    # an explicit name may not take one already given to an anonymous op
    with pytest.raises(resdsl.DuplicateNameError, match="`relu_0` is already used"):
        resdsl.loads(spec)


def test_template_labels():
    spec = """
block unit(n: int) (x) { return x -> fc: linear(n) }
network t() (x: (4,)) {
    for i in range(3) { x = x -> "layer{i + 1}": unit(4) }
    return x -> "head_{str(7)}_{2 * 3}": unit(2)
}
"""
    names = [n.name for n in resdsl.loads(spec).graph.nodes()]
    assert names == ["x", "layer1.fc", "layer2.fc", "layer3.fc", "head_7_6.fc"]


def test_block_input_shape_is_checked():
    spec = """
block wants(n: int) (x: (n,)) { return x -> linear(2) }
network t() (x: (4,)) { return x -> wants(4) -> wants(3) }
"""
    with pytest.raises(resdsl.ShapeError, match="expects `x` of shape"):
        resdsl.loads(spec)
    ok = spec.replace("-> wants(3)", "")
    assert resdsl.loads(ok).output_shapes["output"] == (2,)


def test_network_choice(spec):
    text = "network a() (x: (4,)) { return x }\nnetwork b() (x: (5,)) { return x }\n"
    with pytest.raises(resdsl.SpecError, match="several networks"):
        resdsl.loads(text)
    assert resdsl.loads(text, "b").output_shapes == {"x": (5,)}
    with pytest.raises(resdsl.UnknownNameError, match="no network named `aa`") as e:
        resdsl.loads(text, "aa")
    assert e.value.hints == ["did you mean `a`?"]


def test_imports_are_relative_to_the_importing_file(spec):
    spec("block unit(n: int) (x) { return x -> fc: linear(n) }\n", "lib/units.res")
    spec('import "units.res"\nblock pair(n: int) (x) { return x -> a: unit(n) -> b: unit(n) }\n',
         "lib/pairs.res")  # fmt: skip
    path = spec('import "lib/pairs.res"\nnetwork t() (x: (4,)) { return x -> p: pair(3) }\n')
    net = resdsl.load(path)
    assert [n.name for n in net.graph.nodes()] == ["x", "p.a.fc", "p.b.fc"]


def test_same_file_imported_twice_is_fine(spec):
    spec("block unit() (x) { return x -> relu }\n", "u.res")
    spec('import "u.res"\n', "a.res")
    path = spec('import "u.res"\nimport "a.res"\nnetwork t() (x: (4,)) { return x -> unit }\n')
    assert len(resdsl.load(path).graph) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10", 10),
        ("-3", -3),
        ("2.5e-1", 0.25),
        ("true", True),
        ('"hi"', "hi"),
        ("fast", "fast"),
        ("(64, 128)", (64, 128)),
        ("(1,)", (1,)),
    ],
)
def test_command_line_constants(text, expected):
    assert constant(text) == expected


@pytest.mark.parametrize("text", ["1 + 2", "f(3)", "1 +", "x.shape"])
def test_command_line_constants_reject_expressions(text):
    with pytest.raises(ValueError):
        constant(text)


def test_to_torch_submodule_names_follow_the_spec():
    torch = pytest.importorskip("torch")
    spec = """
block unit(n: int) (x) { return x -> fc: linear(n) -> relu }
network t() (x: (4,)) {
    for i in range(2) { x = x -> "{i}": unit(4) }
    return x -> head: linear(3)
}
"""
    model = resdsl.loads(spec).to_torch(seed=0)
    assert list(model.state_dict()) == [
        "0.fc.weight", "0.fc.bias", "1.fc.weight", "1.fc.bias", "head.weight", "head.bias",
    ]  # fmt: skip
    assert model(torch.zeros(2, 4)).shape == (2, 3)


def test_chain_binds_looser_than_the_conditional():
    # `->` is the loosest operator: the whole conditional is the chain's head
    spec = (
        "network t(wide: bool = false) (x: (4,)) {\n"
        "    return if wide then x else x -> linear(3)\n}\n"
    )
    assert resdsl.loads(spec).output_shapes["output"] == (3,)
    assert resdsl.loads(spec, wide=True).output_shapes["output"] == (3,)


def test_keywords_cannot_be_assigned():
    with pytest.raises(resdsl.SpecSyntaxError, match="`true` is a keyword") as e:
        resdsl.loads("network t() (x: (4,)) {\n    true = 3\n    return x\n}\n")
    assert (e.value.line, e.value.column) == (2, 5)


def test_errors_inside_a_block_name_the_instance():
    spec = """block unit(c: int) (x) { return conv2d(x, c, 3, padding=1) + x }
network t() (x: (4, 8, 8)) {
    y = x -> first: unit(4)
    return y -> second: unit(8)
}
"""
    with pytest.raises(resdsl.ShapeError) as e:
        resdsl.loads(spec)
    assert (e.value.line, e.value.column) == (1, 33)  # `conv2d(...) + x`
    instance = e.value.notes[-1]
    assert instance.message == "in `second`, an instance of `unit`"
    assert (instance.span.line, instance.span.column) == (4, 17)


def test_builtin_results_are_bounded():
    with pytest.raises(resdsl.LimitError, match="too large"):
        value("int(1e30)")


def test_projection_argument_checks():
    base = "network t() (x: (4,)) {{\n    return {}\n}}\n"
    with pytest.raises(resdsl.TypeMismatchError, match="`bn` must be true or false"):
        resdsl.loads(base.format("project(x, 8, bn=1)"))
    with pytest.raises(resdsl.ValueRangeError, match="a stride needs a"):
        resdsl.loads(base.format("project(x, 8, stride=2)"))
    net = resdsl.loads(base.format("p: project(x, 8)"))
    assert [(n.name, n.op, n.attrs.get("bias")) for n in net.graph.nodes()][1:] == [
        ("p.0", "linear", False)
    ]


# --- `elif` in conditional expressions ------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "expected"), [(0, 10), (1, 11), (2, 12), (3, 13), (7, 13)]
)  # fmt: skip
def test_elif_in_a_conditional_expression(a, expected):
    expr = f"if {a} == 0 then 10 elif {a} == 1 then 11 elif {a} == 2 then 12 else 13"
    assert value(expr) == expected


def test_elif_branches_are_lazy_and_nest():
    assert value("if false then 1 / 0 elif true then 5 elif 1 / 0 > 1 then 6 else 1 / 0") == 5
    assert (
        value("if true then if false then 1 elif true then 2 else 3 elif true then 4 else 5") == 2
    )
    assert value("(if false then 1 elif false then 2 else 3) + 1") == 4


def test_elif_needs_a_bool_and_an_else():
    with pytest.raises(resdsl.TypeMismatchError) as e:
        value("if false then 1 elif 2 then 3 else 4")
    assert (e.value.message, e.value.line, e.value.column) == (
        "expected true or false, got int 2", 2, 30,
    )  # fmt: skip
    with pytest.raises(resdsl.SpecSyntaxError) as e:
        value("if false then 1 elif true then 3")
    assert e.value.message == "unexpected `return`"  # the line after the conditional


# --- gcd, log2, log, make_divisible ---------------------------------------------------------


def _make_divisible(v, divisor=8, min_value=None, round_limit=0.9):
    """torchvision's `_make_divisible` / timm's `make_divisible`, verbatim."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def test_make_divisible_is_torchvisions_and_timms():
    cases = []
    for v in [*range(0, 200, 3), 0.5, 7.9, 15.99, 16.0, 24.5, 37.6, 96 * 0.75, 1280 * 1.4, 1e4]:
        for divisor in (1, 3, 4, 8, 16):
            cases.append((v, divisor, None, 0.9))
            cases.append((v, divisor, 2 * divisor, 0.9))
            cases.append((v, divisor, None, 0.0))
            cases.append((v, divisor, 0, 1.0))
    lines = []
    for v, divisor, min_value, limit in cases:
        call = f"make_divisible({v!r}, {divisor}"
        call += f", min_value={min_value}" if min_value is not None else ""
        call += f", round_limit={limit!r})" if limit != 0.9 else ")"
        want = _make_divisible(v, divisor, min_value, limit)
        lines.append(f'    assert {call} == {want}, "{call}"')
    for k in range(0, len(lines), 300):  # specs of at most 64 KB
        resdsl.loads(vector_net("\n".join(lines[k : k + 300]) + "\n    n = 1"))
    assert len(lines) == 1520
    assert value("make_divisible(32 * 0.75)") == 24
    assert value("make_divisible(v=37, divisor=16, round_limit=0.5)") == 32
    assert value("make_divisible(37, 16, 64)") == 64


def test_gcd_log2_and_log():
    assert value("gcd(12, 18)") == 6
    assert value("gcd(0, 7) + gcd(-4, 6) + gcd(8, 12, 20)") == 7 + 2 + 4
    assert value("int(log2(1024))") == 10
    assert value("int(log(8, 2) + 0.5) + int(log(1))") == 3
    assert value("round(1000 * log(10))") == 2303
    assert value("ceil(log2(48))") == 6


@pytest.mark.parametrize(
    ("expr", "cls", "message", "column"),
    [
        ("gcd(12, 2.5)", resdsl.TypeMismatchError, "`gcd` needs ints, got float 2.5", 17),
        ("gcd(12)", resdsl.ArgumentError, "`gcd` takes 2 to any argument(s), got 1", 9),
        ("gcd(true, 2)", resdsl.TypeMismatchError, "`gcd` needs numbers, got true", 13),
        ("log2(0)", resdsl.ValueRangeError, "`log2` needs a positive number, got 0", 14),
        ("log2(4, 2)", resdsl.ArgumentError, "`log2` takes 1 argument(s), got 2", 9),
        ("log(8, 1)", resdsl.ValueRangeError, "`log` to base 1 is not defined", 16),
        ("log(-1.5)", resdsl.ValueRangeError, "`log` needs a positive number, got -1.5", 13),
        ('log("e")', resdsl.TypeMismatchError, '`log` needs numbers, got str "e"', 13),
        ("make_divisible()", resdsl.ArgumentError, "`make_divisible` needs `v`", 9),
        ("make_divisible(30, divisor=0)", resdsl.ValueRangeError,
         "`divisor` must be at least 1, got 0", 28),
        ("make_divisible(30, 8, -1)", resdsl.ValueRangeError,
         "`min_value` must be at least 0, got -1", 31),
        ("make_divisible(30, divisor=2.5)", resdsl.TypeMismatchError,
         "`divisor` must be an int, got float 2.5", 28),
        ("make_divisible(30, 8, v=3)", resdsl.ArgumentError, "argument `v` is given twice", 31),
        ("make_divisible(30, divsor=4)", resdsl.UnknownNameError,
         "`make_divisible` has no argument `divsor`", 28),
        ("make_divisible(30, 8, 8, 0.9, 1)", resdsl.ArgumentError,
         "`make_divisible` takes at most 4 arguments, got 5", 39),
        ('make_divisible("a")', resdsl.TypeMismatchError,
         '`make_divisible` needs numbers, got str "a"', 24),
    ],
)  # fmt: skip
def test_builtin_misuse_is_located(expr, cls, message, column):
    with pytest.raises(cls) as e:
        value(expr)
    assert (e.value.message, e.value.line, e.value.column) == (message, 2, column)


def test_elif_clauses_are_bounded():
    chain = " ".join(f"elif false then {i}" for i in range(101))
    with pytest.raises(resdsl.LimitError) as e:
        value(f"if false then 0 {chain} else 1")
    assert e.value.message == "a conditional with more than 100 `elif` clauses"
    assert (e.value.line, e.value.column) == (2, 9 + len("if false then 0 ") + 100 * 18 + 90)
    assert value(f"if false then 0 {' '.join(chain.split(' ')[:-4])} else 7") == 7

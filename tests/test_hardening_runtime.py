"""Hardening of what `resdsl run` and `--weights` read: model.json (a schema, the library
confined to the artifact directory, the library's signature), `.npy` inputs, checkpoints
of unusual dtypes and layouts, NaN/Inf values, and `--seed`.

Each case was an internal error (exit 3), a misleading message, or a library loaded from
outside the artifact; each must now be a clear error with an exact exit code and no
traceback.
"""

import io
import json
import os
import shutil
import sys

import numpy as np
import pytest

from resdsl.cli import main

torch = pytest.importorskip("torch")
pytest.importorskip("tvm")
pytest.importorskip("safetensors")

from safetensors.numpy import save_file as save_numpy  # noqa: E402
from safetensors.torch import save_file as save_torch  # noqa: E402

import resdsl  # noqa: E402
from resdsl import runtime  # noqa: E402
from resdsl.weights import WeightsError, expected, initialise, load_file, resolve  # noqa: E402

SPEC = """network t() (x: (3, 8, 8)) {
    y = x -> conv2d(4, 3, padding=1) -> relu -> conv2d(4, 3, padding=1)
    return y
}
"""
X_SHAPE = (1, 3, 8, 8)
MAX = 2**31 - 1


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One small llvm artifact for the module: (spec path, artifact directory)."""
    root = tmp_path_factory.mktemp("hardening")
    spec = root / "t.res"
    spec.write_text(SPEC)
    out = root / "artifact"
    assert main(["compile", str(spec), "--target", "llvm", "-o", str(out)]) == 0
    return spec, out


@pytest.fixture
def artifact(built, tmp_path):
    """A private copy of the artifact; returns (directory, its model.json as a dict)."""
    out = tmp_path / "art"
    shutil.copytree(built[1], out)
    return out, json.loads((out / "model.json").read_text())


def run(capsys, *argv):
    """`resdsl ARGV`: (exit code, stderr); an internal error would be exit 3."""
    rc = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    return rc, err


def write_meta(out, meta) -> str:
    text = meta if isinstance(meta, str) else json.dumps(meta)
    (out / "model.json").write_text(text)
    return str(out / "model.json")


# --- 11. model.json redirects the library ------------------------------------------------------


@pytest.fixture
def other(built, tmp_path):
    """A second, working artifact at tmp_path/other: a redirect would load its library."""
    other = tmp_path / "other"
    shutil.copytree(built[1], other)
    assert runtime.load(other)(np.zeros(X_SHAPE, np.float32)).shape == (1, 4, 8, 8)
    return other


@pytest.mark.parametrize("where", ["absolute", "dotdot"])
def test_library_outside_the_directory_is_refused(artifact, other, capsys, where):
    out, meta = artifact
    library = str(other / "model.so") if where == "absolute" else "../other/model.so"
    meta["library"] = library
    meta_path = write_meta(out, meta)
    (out / "model.so").unlink()  # nothing inside could be what ran
    rc, err = run(capsys, "run", str(out))
    assert rc == 1
    assert f"{meta_path} is not valid: 'library' must be a file name ending in .so, " \
        f"got {library!r}" in err  # fmt: skip
    assert "error[E0801]" in err
    with pytest.raises(runtime.ArtifactError):
        runtime.load(out)


def test_library_symlink_leaving_the_directory_is_refused(artifact, other, capsys):
    out, _ = artifact
    (out / "model.so").unlink()
    os.symlink(os.path.join("..", "other", "model.so"), out / "model.so")
    rc, err = run(capsys, "run", str(out))
    assert rc == 1
    assert f"{out / 'model.so'} leaves the artifact directory {out} (a symbolic link)" in err


@pytest.mark.parametrize("library", ["", ".", "..", "model", "a\0.so", "a\\b.so", "lib/model.so"])
def test_library_must_be_a_plain_file_name(artifact, capsys, library):
    out, meta = artifact
    meta["library"] = library
    meta_path = write_meta(out, meta)
    rc, err = run(capsys, "run", str(out))
    assert rc == 1
    assert f"{meta_path} is not valid: 'library' must be a file name ending in .so, " \
        f"got {library!r}" in err  # fmt: skip


@pytest.mark.parametrize("kind", ["missing", "directory", "fifo"])
def test_library_must_be_a_regular_file(artifact, capsys, kind):
    out, _ = artifact
    (out / "model.so").unlink()
    if kind == "directory":
        (out / "model.so").mkdir()
    elif kind == "fifo":
        os.mkfifo(out / "model.so")
    rc, err = run(capsys, "run", str(out))
    assert rc == 1
    assert f"{out / 'model.so'} is missing or not a regular file" in err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF shared objects")
@pytest.mark.parametrize("keep", ["third", "all-but-one", "header", "nothing", "text"])
def test_truncated_library_is_refused_before_dlopen(artifact, capsys, keep):
    # was: glibc's dlopen maps a truncated ELF file and the process dies of SIGBUS
    out, _ = artifact
    data = (out / "model.so").read_bytes()
    cut = {"third": data[: len(data) // 3], "all-but-one": data[:-1], "header": data[:63],
           "nothing": b"", "text": b"not a library\n"}[keep]  # fmt: skip
    (out / "model.so").write_bytes(cut)
    rc, err = run(capsys, "run", str(out))
    assert rc == 1
    reason = {
        "third": f"its headers reach past the end of the file ({len(cut)} bytes; truncated?)",
        "all-but-one": f"its headers reach past the end of the file ({len(cut)} bytes; truncated?)",
        "header": "its ELF header is truncated",
        "nothing": "it is not an ELF file",
        "text": "it is not an ELF file",
    }[keep]
    assert f"{out / 'model.so'} is not a complete shared library: {reason}" in err


# --- 10. tampered model.json: each a clear ArtifactError (exit 1) -------------------------------


def _set(path, value):
    def change(meta):
        *parents, last = path
        target = meta
        for key in parents:
            target = target[key]
        target[last] = value
        return meta

    return change


def _delete(*path):
    def change(meta):
        *parents, last = path
        target = meta
        for key in parents:
            target = target[key]
        del target[last]
        return meta

    return change


def _extra_output(meta):
    meta["outputs"].append({"name": "z", "shape": [1, 4], "dtype": "float32"})
    return meta


SIZES = f"'shape' sizes must be integers from 1 to {MAX}"
TAMPERED = {
    # changed shape or dtype: TVM's own argument check, or the outputs compared after the call
    "input-shape": (
        _set(("inputs", 0, "shape"), [1, 3, 9, 8]),
        "does not match the library: input 'x' is declared (1, 3, 9, 8) float32, "
        "the library takes (1, 3, 8, 8) float32",
    ),
    "input-dtype": (
        _set(("inputs", 0, "dtype"), "float64"),
        "does not match the library: input 'x' is declared (1, 3, 8, 8) float64, "
        "the library takes (1, 3, 8, 8) float32",
    ),
    "output-shape": (
        _set(("outputs", 0, "shape"), [1, 4, 8, 9]),
        "does not match the library: output 'y' is declared (1, 4, 8, 9) float32, "
        "the library returns (1, 4, 8, 8) float32",
    ),
    "output-dtype": (
        _set(("outputs", 0, "dtype"), "float16"),
        "does not match the library: output 'y' is declared (1, 4, 8, 8) float16, "
        "the library returns (1, 4, 8, 8) float32",
    ),
    "renamed-input": (
        _set(("inputs", 0, "name"), "z"),
        "does not match the library: it declares inputs (z), the library takes (x)",
    ),
    "extra-output": (_extra_output, "declares 2 output(s), the library returns 1"),
    # missing keys
    "missing-inputs": (_delete("inputs"), "is not valid: missing key 'inputs'"),
    "missing-library": (_delete("library"), "is not valid: missing key 'library'"),
    "missing-device": (_delete("device"), "is not valid: missing key 'device'"),
    "missing-shape": (
        _delete("inputs", 0, "shape"),
        "is not valid: inputs[0]: missing key 'shape'",
    ),
    # wrong JSON types
    "a-list": (lambda meta: [meta], "is not valid: expected a JSON object, got a list"),
    "inputs-an-object": (
        _set(("inputs",), {"x": [1, 3, 8, 8]}),
        "is not valid: 'inputs' must be a list, got an object",
    ),
    "shape-a-string": (
        _set(("inputs", 0, "shape"), "1,3,8,8"),
        "is not valid: inputs[0]: 'shape' must be a list of at most 32 sizes, got '1,3,8,8'",
    ),
    "shape-of-floats": (
        _set(("inputs", 0, "shape"), [1.0, 3, 8, 8]),
        f"is not valid: inputs[0]: {SIZES}, got 1.0",
    ),
    "shape-of-bools": (
        _set(("inputs", 0, "shape"), [True, 3, 8, 8]),
        f"is not valid: inputs[0]: {SIZES}, got True",
    ),
    "name-not-a-string": (
        _set(("outputs", 0, "name"), 7),
        "is not valid: outputs[0]: 'name' must be an identifier, got 7",
    ),
    "batch-a-string": (
        _set(("batch",), "1"),
        "is not valid: 'batch' must be an integer, got a string",
    ),
    "unknown-dtype": (
        _set(("inputs", 0, "dtype"), "object"),
        "is not valid: inputs[0]: 'dtype' must be one of float16, float32, float64, int8, "
        "int16, int32, int64, uint8, bool, got 'object'",
    ),
    "unknown-device": (
        _set(("device",), "tpu"),
        "is not valid: 'device' must be one of cpu, cuda, got 'tpu'",
    ),
    "unknown-format": (
        _set(("format",), "resdsl-artifact/99"),
        "is not valid: unknown format 'resdsl-artifact/99' (expected 'resdsl-artifact/1')",
    ),
    # negative or huge shapes: refused before anything is allocated
    "negative-shape": (
        _set(("inputs", 0, "shape"), [-1, 3, 8, 8]),
        f"is not valid: inputs[0]: {SIZES}, got -1",
    ),
    "zero-shape": (_set(("outputs", 0, "shape"), [0]), f"is not valid: outputs[0]: {SIZES}, got 0"),
    "huge-shape": (
        _set(("inputs", 0, "shape"), [2**40, 3, 8, 8]),
        f"is not valid: inputs[0]: {SIZES}, got 1099511627776",
    ),
    "huge-product": (
        _set(("inputs", 0, "shape"), [MAX, MAX]),
        f"is not valid: inputs[0]: 'shape' [{MAX}, {MAX}] has more than {MAX} elements",
    ),
    "deep-rank": (
        _set(("inputs", 0, "shape"), [1] * 33),
        "is not valid: inputs[0]: 'shape' must be a list of at most 32 sizes",
    ),
    # 100k-deep nesting (a RecursionError in json) and a file too large to read
    "deep-nesting": (lambda meta: "[" * 100_000 + "]" * 100_000, "it is nested too deeply"),
    "nested-in-a-key": (
        lambda meta: json.dumps(meta)[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "it is nested too deeply",
    ),
    "too-large": (
        _set(("network",), "n" * 2**20),
        "is larger than 1 MiB",
    ),
    "not-json": (lambda meta: "{'format': 1}", "cannot read"),
    "not-utf8": (lambda meta: "\udcff", "it is not UTF-8 text"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_tampered_model_json(artifact, capsys, case):
    out, meta = artifact
    change, message = TAMPERED[case]
    changed = change(meta)
    if case == "not-utf8":
        (out / "model.json").write_bytes(b'{"format": "\xff"}')
        meta_path = str(out / "model.json")
    else:
        meta_path = write_meta(out, changed)
    rc, err = run(capsys, "run", str(out))
    assert rc == 1, err
    assert "error[E0801]" in err
    assert meta_path in err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err  # one clear line


def test_tampered_shape_with_an_input_file(artifact, tmp_path, capsys):
    # with --input of the declared (wrong) shape, TVM's check refuses it, not a crash
    out, meta = artifact
    meta["inputs"][0]["shape"] = [1, 3, 4, 4]
    write_meta(out, meta)
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 4, 4), np.float32))
    rc, err = run(capsys, "run", str(out), "--input", str(tmp_path / "x.npy"))
    assert rc == 1
    assert "input 'x' is declared (1, 3, 4, 4) float32, the library takes (1, 3, 8, 8)" in err


def test_model_json_that_is_a_fifo_is_not_opened(artifact, capsys):
    out, _ = artifact
    (out / "model.json").unlink()
    os.mkfifo(out / "model.json")
    rc, err = run(capsys, "run", str(out))
    assert rc == 1
    assert f"{out / 'model.json'} is not a regular file" in err


def test_the_written_model_json_fits_the_schema(built):
    meta = json.loads((built[1] / "model.json").read_text())
    assert runtime.validate_meta(meta) is None
    unknown = dict(meta, added_by_a_later_version={"a": 1})  # unknown top-level keys are kept
    assert runtime.validate_meta(unknown) is None


# --- 10. run inputs -------------------------------------------------------------------------------


def _npy_with_header(path, pad: int):
    """A valid float32 .npy of X_SHAPE whose header is padded to `pad` extra bytes."""
    buf = io.BytesIO()
    np.save(buf, np.zeros(X_SHAPE, np.float32))
    data = buf.getvalue()
    length = int.from_bytes(data[8:10], "little")
    header = data[10 : 10 + length].rstrip(b"\n") + b" " * pad + b"\n"
    path.write_bytes(b"\x93NUMPY\x02\x00" + len(header).to_bytes(4, "little") + header
                     + data[10 + length:])  # fmt: skip


INPUTS = {
    "text": (
        lambda p: p.write_text("1 2 3\n"),
        "not a .npy file (it does not start with NumPy's magic string)",
    ),
    "strings": (lambda p: np.save(p, np.full(X_SHAPE, "a")), "it holds text (<U1), not numbers"),
    "bytes": (lambda p: np.save(p, np.full(X_SHAPE, b"a")), "it holds bytes (|S1), not numbers"),
    "structured": (
        lambda p: np.save(p, np.zeros(X_SHAPE, [("a", "f4"), ("b", "i4")])),
        "it holds records of a structured dtype [('a', '<f4'), ('b', '<i4')], not numbers",
    ),
    "empty-dtype": (lambda p: np.save(p, np.zeros(X_SHAPE, np.dtype([]))), "its dtype [] is empty"),
    "void": (lambda p: np.save(p, np.zeros(X_SHAPE, "V0")), "its dtype |V0 is empty"),
    "objects": (
        lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True),
        "it holds Python objects (pickled data), which resdsl never loads",
    ),
    "complex": (
        lambda p: np.save(p, np.zeros(X_SHAPE, np.complex64)),
        "it holds complex numbers (complex64); the input 'x' is float32",
    ),
    "huge-header": (
        lambda p: _npy_with_header(p, 200_000),
        "its header is larger than 10000 bytes",
    ),
    "npz": (
        lambda p: np.savez(open(p, "wb"), x=np.zeros(X_SHAPE, np.float32)),  # noqa: SIM115
        "a .npz archive; give one .npy file per input",
    ),
    "truncated": (
        lambda p: p.write_bytes(np.lib.format.magic(1, 0)),
        "a damaged .npy header (EOF: reading array header length, expected 2 bytes got 0)",
    ),
    "short-data": (
        lambda p: p.write_bytes(_npy_bytes(np.zeros(X_SHAPE, np.float32))[:-4]),
        "it is truncated: 768 bytes of data expected after the header",
    ),
}


def _npy_bytes(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@pytest.mark.parametrize("case", list(INPUTS))
def test_bad_input_file(built, tmp_path, capsys, case):
    make, reason = INPUTS[case]
    path = tmp_path / "x.npy"
    make(path)
    rc, err = run(capsys, "run", str(built[1]), "--input", str(path))
    assert rc == 2, err
    assert err == f"resdsl run: error: cannot read {path}: {reason}\n"


def test_input_of_a_huge_declared_shape_is_refused_before_reading(built, tmp_path, capsys):
    # the header claims 2**40 elements: checked against the model before any allocation
    path = tmp_path / "x.npy"
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": (2**40,)}
    )
    path.write_bytes(buf.getvalue() + b"\0" * 16)
    rc, err = run(capsys, "run", str(built[1]), "--input", str(path))
    assert rc == 1
    assert "input 'x' must have shape (1, 3, 8, 8), got (1099511627776,)" in err


def test_input_names_unknown_and_twice(built, tmp_path, capsys):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros(X_SHAPE, np.float32))
    rc, err = run(capsys, "run", str(built[1]), "--input", f"q={path}")
    assert (rc, err) == (2, "resdsl run: error: --input q=...: the model has no input 'q'; "
                            "its inputs: x\n")  # fmt: skip
    rc, err = run(capsys, "run", str(built[1]), "--input", f"x={path}", "--input", f"x={path}")
    assert (rc, err) == (2, "resdsl run: error: --input: input 'x' is given twice\n")


def test_runtime_refuses_arrays_that_are_not_numbers(built):
    model = runtime.load(built[1])
    with pytest.raises(runtime.ArtifactError) as info:
        model(np.full(X_SHAPE, "a"))
    assert info.value.message == "input 'x' must hold numbers (float32), got an array of " \
        "strings (<U1)"  # fmt: skip
    with pytest.raises(runtime.ArtifactError, match=r"complex \(complex128\)"):
        model(np.zeros(X_SHAPE, complex))


# --- 14. NaN and Inf in inputs --------------------------------------------------------------------


def _with_non_finite(shape=X_SHAPE):
    x = np.zeros(shape, np.float32)
    x.flat[:3] = [np.nan, np.inf, -np.inf]
    return x


def test_non_finite_input_warns(built, tmp_path, capsys):
    path = tmp_path / "x.npy"
    np.save(path, _with_non_finite())
    rc = main(["run", str(built[1]), "--input", str(path)])
    captured = capsys.readouterr()
    assert rc == 0
    warning = f"resdsl run: warning: input 'x' ({path}) holds 3 NaN or infinite value(s) (of 192)"
    assert captured.err.splitlines()[0] == warning
    assert "RuntimeWarning" not in captured.err
    assert captured.out.startswith("y: shape (1, 4, 8, 8) float32")


def test_non_finite_input_is_refused_with_strict(built, tmp_path, capsys):
    path = tmp_path / "x.npy"
    np.save(path, _with_non_finite())
    rc, err = run(capsys, "run", str(built[1]), "--input", str(path), "--strict")
    assert rc == 2
    assert err == (f"resdsl run: error: {path}: input 'x' holds 3 NaN or infinite value(s) "
                   "(of 192); --strict refuses them\n")  # fmt: skip


# --- --seed ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", ["-1", str(2**32), "1.5"])
@pytest.mark.parametrize("command", ["run", "compile", "sample"])
def test_seed_out_of_range_is_a_usage_error(built, capsys, command, seed):
    argv = {
        "run": ["run", str(built[1])],
        "compile": ["compile", str(built[0]), "--target", "llvm", "-o", str(built[1].parent / "x")],
        "sample": ["sample", str(built[0])],
    }
    with pytest.raises(SystemExit) as info:
        main([*argv[command], "--seed", seed])
    assert info.value.code == 2
    err = capsys.readouterr().err
    reason = f"not an integer: {seed!r}" if seed == "1.5" else \
        f"must be between 0 and 2**32-1, got {seed}"  # fmt: skip
    assert err.splitlines()[-1] == f"resdsl {command}: error: argument --seed: {reason}"
    assert not (built[1].parent / "x").exists()


def test_largest_seed_runs(built, capsys):
    rc, _ = run(capsys, "run", str(built[1]), "--seed", str(2**32 - 1))
    assert rc == 0


# --- weights: dtypes, layouts, keys, empty files, NaN/Inf -----------------------------------------


@pytest.fixture(scope="module")
def graph(built):
    return resdsl.load(built[0]).graph


def _state(graph) -> dict:
    return {k: torch.from_numpy(v) for k, v in initialise(graph, 0).items()}


W = "conv2d_0.weight"
TORCH_REFUSED = {
    "float8_e4m3fn": (
        lambda t: t.to(torch.float8_e4m3fn),
        f"`{W}` is float8_e4m3fn, a float format resdsl cannot read; convert the checkpoint "
        "to float32, float16 or bfloat16",
    ),
    "float8_e5m2": (
        lambda t: t.to(torch.float8_e5m2),
        f"`{W}` is float8_e5m2, a float format resdsl cannot read; convert the checkpoint "
        "to float32, float16 or bfloat16",
    ),
    "qint8": (
        lambda t: torch.quantize_per_tensor(t, 0.1, 0, torch.qint8),
        f"`{W}` is a quantised tensor (qint8); save it dequantised (tensor.dequantize())",
    ),
    "sparse": (
        lambda t: t.to_sparse(),
        f"`{W}` is a sparse tensor (torch.sparse_coo); save it dense (tensor.to_dense())",
    ),
    "meta": (lambda t: t.to("meta"), f"`{W}` is a meta tensor, which holds no data"),
    "complex": (
        lambda t: t.to(torch.complex64),
        f"`{W}` is complex (complex64); weights must be real numbers",
    ),
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's own, when saving a sparse tensor
@pytest.mark.parametrize("case", list(TORCH_REFUSED))
def test_torch_checkpoint_of_an_unreadable_tensor(graph, tmp_path, case):
    change, message = TORCH_REFUSED[case]
    state = _state(graph)
    state[W] = change(state[W])
    path = tmp_path / "w.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError) as info:
        load_file(str(path))
    assert info.value.message == f"{path}: {message}"
    assert info.value.code == "E0601"


def test_non_string_key(graph, tmp_path):
    state = _state(graph)
    state[7] = state.pop(W)
    path = tmp_path / "w.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError) as info:
        load_file(str(path))
    assert info.value.message == (f"{path}: the key 7 (int) is not a string; a state_dict's "
                                  "keys are names such as `conv1.weight`")  # fmt: skip
    with pytest.raises(WeightsError, match=r"the key 7 \(int\) is not a string"):
        resolve(graph, {7: np.zeros(1), **initialise(graph)})


@pytest.mark.parametrize("kind", ["F8_E4M3", "F8_E5M2", "C64"])
def test_safetensors_of_an_unreadable_dtype(graph, tmp_path, kind):
    state = _state(graph)
    dtype = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
             "C64": torch.complex64}[kind]  # fmt: skip
    state[W] = state[W].to(dtype)
    path = tmp_path / "w.safetensors"
    save_torch(state, str(path))
    with pytest.raises(WeightsError) as info:
        load_file(str(path))
    if kind == "C64":
        assert info.value.message == f"{path}: `{W}` is complex (C64); weights must be real numbers"
    else:
        assert info.value.message == (f"{path}: `{W}` is {kind}, a float format resdsl cannot "
                                      "read; convert the checkpoint to float32, float16 or "
                                      "bfloat16")  # fmt: skip


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_bfloat16_is_converted_with_a_note(graph, tmp_path, capsys, suffix):
    state = _state(graph)
    state[W] = state[W].to(torch.bfloat16)
    state["conv2d_0.bias"] = state["conv2d_0.bias"].to(torch.bfloat16)
    path = tmp_path / f"w{suffix}"
    if suffix == ".pt":
        torch.save(state, path)
    else:
        save_torch(state, str(path))
    weights, _ = resolve(graph, str(path))
    assert weights[W].dtype == np.float32
    np.testing.assert_array_equal(weights[W], state[W].float().numpy())
    resolve(graph, str(path))  # loaded twice (tuning, build, --check): noted once
    err = capsys.readouterr().err
    assert (
        err == f"resdsl: note: {path}: converted bfloat16 `conv2d_0.bias` (and 1 more) to float32\n"
    )


def test_empty_checkpoint(tmp_path, built, capsys):
    for name in ("w.pt", "w.safetensors"):
        path = tmp_path / name
        path.write_bytes(b"")
        with pytest.raises(WeightsError) as info:
            load_file(str(path))
        assert info.value.message == f"cannot read {path}: the file is empty"
    rc, err = run(capsys, "compile", str(built[0]), "--target", "llvm", "--weights",
                  str(tmp_path / "w.pt"), "-o", str(tmp_path / "out"))  # fmt: skip
    assert rc == 1
    assert f"error[E0601]: cannot read {tmp_path / 'w.pt'}: the file is empty" in err
    assert not (tmp_path / "out").exists()


def test_truncated_checkpoint_names_the_error_type(tmp_path, graph):
    # was: `cannot read w.pt as a PyTorch state_dict: ` (an exception with no message)
    path = tmp_path / "w.pt"
    torch.save(_state(graph), path)
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(WeightsError) as info:
        load_file(str(path))
    assert info.value.message.startswith(f"cannot read {path} as a PyTorch state_dict: ")
    assert not info.value.message.endswith(": ")


def _non_finite_checkpoint(graph, path, fmt):
    state = initialise(graph, 0)
    state[W].flat[:2] = [np.nan, np.inf]
    if fmt == "safetensors":
        save_numpy(state, str(path))
    else:
        torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)


def test_non_finite_weights_warn_once_naming_the_key(graph, built, tmp_path, capsys):
    path = tmp_path / "w.safetensors"
    _non_finite_checkpoint(graph, path, "safetensors")
    out = tmp_path / "out"
    rc, err = run(capsys, "compile", str(built[0]), "--target", "llvm", "--weights", str(path),
                  "-o", str(out), "--check")  # fmt: skip
    warning = f"resdsl: warning: `{W}` in w.safetensors holds 2 NaN or infinite value(s) (of 108)"
    assert err.count(warning) == 1, err
    assert "RuntimeWarning" not in err
    assert rc in (0, 1)  # --check compares NaN outputs: it may report a mismatch
    assert (out / "model.so").exists()


@pytest.mark.parametrize("target", ["llvm", "onnx"])
def test_non_finite_weights_refused_with_strict(graph, built, tmp_path, capsys, target):
    pytest.importorskip("onnx")
    path = tmp_path / "w.pt"
    _non_finite_checkpoint(graph, path, "pt")
    out = tmp_path / ("out" if target == "llvm" else "m.onnx")
    rc, err = run(capsys, "compile", str(built[0]), "--target", target, "--weights", str(path),
                  "-o", str(out), "--strict")  # fmt: skip
    assert rc == 1
    assert (f"error[E0601]: `{W}` in w.pt holds 2 NaN or infinite value(s) (of 108); strict "
            "mode (--strict) refuses them") in err  # fmt: skip
    assert not out.exists()


def test_weight_dtypes_that_are_not_numbers(graph):
    state = dict(initialise(graph, 0))
    state[W] = np.full(state[W].shape, "a")
    with pytest.raises(WeightsError) as info:
        resolve(graph, state)
    assert info.value.message == f"`{W}` in the weights is text (<U1); weights must be real numbers"


def test_every_expected_key_is_a_string(graph):
    assert all(isinstance(k, str) for k in expected(graph))

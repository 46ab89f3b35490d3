"""Hypothesis strategies for hostile artifacts and checkpoints, and the properties they must
satisfy.

* ``hostile_model_json(meta, libraries)`` tampers with a valid ``model.json``: shapes
  changed, negative, zero, huge or of the wrong type; unknown dtypes; keys missing or added;
  wrong JSON types at every level; nesting up to 100,000 deep; strings of several MB;
  integers of thousands of digits, ``NaN``; outputs and inputs dropped, duplicated, added;
  ``library`` names that are absolute, climb with ``..``, name symbolic links (inside and
  out), directories, a FIFO, a truncated or foreign file, hold a NUL, or are empty; and
  text-level damage (a BOM, invalid UTF-8, truncation, duplicate keys).
* ``check_artifact(dir, meta_text)`` is the property: with ``meta_text`` as its
  ``model.json``, ``resdsl.runtime.load(dir)`` and a call either give the artifact's real
  outputs or raise ``ArtifactError``. Anything else fails: another exception, a result that
  is not the library's, a library mapped from outside ``dir``. A crash of the process (a
  segfault in ``dlopen``) or a hang is caught by :class:`ArtifactChecker`, which runs each
  example in a forked child of a worker process that has imported TVM but never run it.
* ``odd_weights(graph)`` draws state_dicts for a small network with tensors of every torch
  dtype (bfloat16, float16, the float8 kinds, integers, bool, complex), quantised, sparse,
  on the meta device, non-contiguous, expanded, zero-size, mis-shaped, NaN and infinite,
  with non-string keys, nested dicts and wrappers, written as a ``.pt`` file, as a
  ``.safetensors`` file where it can be, or passed as an in-memory dict.
* ``check_weights(graph, case, tmp)`` is their property: ``resdsl.weights.resolve`` returns
  the network's weights (the right keys, shapes and dtypes, the values of the tensors
  converted exactly) or raises a ``SpecError`` (``WeightsError``); float8, quantised,
  sparse, meta and complex tensors and non-string keys are always refused.

``build_artifact(root)`` compiles the tiny spec below (two convolutions, two outputs) in a
subprocess and lays out the traps next to it. Used by ``tests/test_fuzz.py`` and
``benchmarks/fuzz.py``.
"""

from __future__ import annotations

import base64
import copy
import gc
import json
import os
import pathlib
import resource
import select
import signal
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

ROOT = pathlib.Path(__file__).resolve().parent.parent

TINY_SPEC = """network tiny() (x: (2, 4, 4)) {
    y = x -> a: conv2d(2, 3, padding=1) -> bn: batchnorm2d -> relu
    return y -> b: conv2d(3, 1), y -> global_avgpool -> fc: linear(2)
}
"""

# --- the artifact and its traps --------------------------------------------------------------


@dataclass
class Artifact:
    """A compiled artifact directory, its genuine metadata, and names to try as ``library``."""

    dir: str
    meta: dict[str, Any]
    libraries: list[str]


def build_artifact(root: str | os.PathLike[str]) -> Artifact:
    """Compile ``TINY_SPEC`` into ``root/art`` in a subprocess (so that this process never
    starts TVM's thread pool, and may fork), record its outputs for fixed inputs in
    ``root/art.reference.npz``, and lay out the traps:

    * ``root/outside/model.so``: a working copy of the library outside the directory;
    * in ``art/``: links to the library inside and outside, a link chain, a link loop, a
      link to a directory, a subdirectory holding a copy, a FIFO, an empty, a truncated and
      a text ``.so``."""
    root = os.path.abspath(root)
    art = os.path.join(root, "art")
    subprocess.run([sys.executable, "-m", "tests.artifactgen", "build", art], cwd=ROOT,
                   check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    outside = os.path.join(root, "outside")
    os.makedirs(outside, exist_ok=True)
    library = pathlib.Path(art, "model.so").read_bytes()
    pathlib.Path(outside, "model.so").write_bytes(library)
    sub = os.path.join(art, "sub")
    os.makedirs(sub, exist_ok=True)
    pathlib.Path(sub, "model.so").write_bytes(library)
    pathlib.Path(art, "trunc.so").write_bytes(library[: len(library) // 3])
    pathlib.Path(art, "empty.so").write_bytes(b"")
    pathlib.Path(art, "text.so").write_text("not a library\n")
    links = {"link_in.so": "model.so", "link_out.so": "../outside/model.so",
             "link_abs.so": os.path.join(outside, "model.so"), "link_chain.so": "link_in.so",
             "link_chain_out.so": "link_out.so", "link_loop.so": "link_loop2.so",
             "link_loop2.so": "link_loop.so", "dirlink.so": "sub", "dirlink": "sub",
             "link_missing.so": "missing.so"}  # fmt: skip
    for name, target in links.items():
        path = os.path.join(art, name)
        if not os.path.lexists(path):
            os.symlink(target, path)
    fifo = os.path.join(art, "fifo.so")
    if not os.path.exists(fifo):
        os.mkfifo(fifo)
    meta = json.loads(pathlib.Path(art, "model.json").read_text())
    libraries = [
        "model.so", "./model.so", "link_in.so", "link_chain.so", "sub/model.so",
        "sub/../model.so", "link_out.so", "link_abs.so", "link_chain_out.so", "link_loop.so",
        "link_missing.so", "dirlink.so", "dirlink/model.so", "../outside/model.so",
        "sub/../../outside/model.so", os.path.join(outside, "model.so"),
        os.path.join(art, "model.so"), "sub", "dirlink", ".", "..", "", "\x00", "model.so\x00",
        "model.so\x00.txt", "fifo.so", "trunc.so", "empty.so", "text.so", "model.json",
        "missing.so", "/dev/zero", "/dev/null", "/proc/self/exe", "~/model.so", "MODEL.SO",
        "model.so ", " model.so", "model.so/", "\\model.so", "..\\outside\\model.so",
        "x" * 300 + ".so", "a/" * 3000 + "model.so", "%s%n.so", "model.so\n",
    ]  # fmt: skip
    return Artifact(art, meta, libraries)


# Library names that crash the process today, left out of the fuzzers' draws so that their
# figures show new crashes. None now: a truncated ELF file (glibc's dlopen took SIGBUS
# reading past its end) is refused by resdsl.runtime before it is loaded.
KNOWN_CRASHES: list[str] = []


def _build_main(art: str) -> None:
    """``python -m tests.artifactgen build DIR``: compile, then run once for the reference."""
    import numpy as np

    import resdsl
    from resdsl import runtime
    from resdsl.backends.tvm import BuildOptions, compile_network

    net = resdsl.loads(TINY_SPEC, path="tiny.res")
    compile_network(net, art, BuildOptions("llvm"), seed=1)
    model = runtime.load(art)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(i["shape"]).astype(i["dtype"]) for i in model.inputs]
    outputs = model(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    arrays = {f"in{i}": a for i, a in enumerate(inputs)}
    arrays.update({f"out{i}": a for i, a in enumerate(outputs)})
    np.savez(art + ".reference.npz", **arrays)


def _reference(art: str) -> tuple[list[Any], list[Any]]:
    import numpy as np

    with np.load(art + ".reference.npz") as data:
        ins = [data[f"in{i}"] for i in range(sum(k.startswith("in") for k in data.files))]
        outs = [data[f"out{i}"] for i in range(sum(k.startswith("out") for k in data.files))]
    return ins, outs


# --- tampering with model.json ---------------------------------------------------------------

WRONG_VALUES = [None, True, False, 0, -1, 1, 1.5, -0.0, 1e308, 2**31, 2**63, -(2**63), 2**64,
                "", "x", "model.so", "float32", "cpu", [], [1], [[]], {}, {"a": 1},
                {"name": "x"}, ["x"], "\x00", "\ud7ff\u202e", "__import__('os')"]  # fmt: skip
DIMS = [0, -1, 1, 2, 3, 5, 2**31 - 1, 2**31, 2**62, 2**64, 10**30, 4.0, 1e400, "4", True, None,
        [], {}, [4]]  # fmt: skip
DTYPE_NAMES = ["float32", "float16", "float64", "bfloat16", "float8_e4m3fn", "int8", "int32",
               "int64", "uint8", "bool", "complex64", "object", "O", "V10", "<f4", ">f4", "f4",
               "S5", "U3", "M8[ns]", "float32\x00", "Float32", "", "void", "float128",
               "e", "int4", "handle"]  # fmt: skip
DEVICES = ["cpu", "cuda", "CPU", "", "rocm", "metal", "cuda:1", "cpu\x00", "opencl"]
NAMES = ["x", "y", "output", "", "x y", "1x", "__import__('os')", "x" * 5000, "é", "x\x00",
         "main", "self", "_"]  # fmt: skip
# Nesting depths and lengths up to the bounds (100,000 deep; several MB).
JSON_DEPTHS = st.one_of(st.integers(1, 1200), st.sampled_from([999, 1000, 1001, 100_000]),
                        st.integers(1, 100_000))  # fmt: skip
STRING_LENGTHS = st.one_of(st.integers(0, 5000), st.sampled_from([2**20, 2**20 + 1]),
                           st.integers(0, 3_000_000))  # fmt: skip


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a JSON value (the root included), as key and index tuples."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _get(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _set(doc: Any, path: tuple, value: Any) -> Any:
    """``doc`` with the value at ``path`` replaced (the root: returns ``value``)."""
    if not path:
        return value
    _get(doc, path[:-1])[path[-1]] = value
    return doc


def _tensors(doc: Any) -> list[tuple]:
    """Paths of the input and output entries that are still objects."""
    out = []
    if isinstance(doc, dict):
        for key in ("inputs", "outputs"):
            if isinstance(doc.get(key), list):
                out += [(key, i) for i, t in enumerate(doc[key]) if isinstance(t, dict)]
    return out


@st.composite
def hostile_model_json(draw: st.DrawFn, meta: dict[str, Any],
                       libraries: list[str] | None = None) -> str | bytes:  # fmt: skip
    """``meta`` (a valid model.json object) with one to three tamperings, as JSON text (or
    bytes, for invalid UTF-8)."""
    doc: Any = copy.deepcopy(meta)
    raw: dict[str, str] = {}  # placeholder string -> JSON text to put in its place

    def placeholder(text: str) -> str:
        key = f"@@raw{len(raw)}@@"
        raw[key] = text
        return key

    ops = ["library", "library", "shape", "shape", "dtype", "device", "format", "delete",
           "retype", "retype", "extra_key", "tensor_list", "deep", "long_string", "number",
           "name", "valid"]  # fmt: skip
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(ops))
        tensors = _tensors(doc)
        if op == "library" and isinstance(doc, dict):
            doc["library"] = draw(st.sampled_from(libraries or ["model.so", "../x.so", "/x.so"]))
        elif op == "shape" and tensors:
            entry = _get(doc, draw(st.sampled_from(tensors)))
            shape = entry.get("shape")
            how = draw(st.sampled_from(["dim", "dim", "append", "drop", "replace"]))
            if how == "dim" and isinstance(shape, list) and shape:
                shape[draw(st.integers(0, len(shape) - 1))] = draw(st.sampled_from(DIMS))
            elif how == "append" and isinstance(shape, list):
                shape.extend([draw(st.sampled_from([1, 2, 0]))] * draw(st.integers(1, 40)))
            elif how == "drop" and isinstance(shape, list) and shape:
                shape.pop(draw(st.integers(0, len(shape) - 1)))
            else:
                entry["shape"] = draw(st.sampled_from([[], [1] * 1000, [2**16] * 4, "1,2",
                                                       None, [1, 2, 4, 4], [1, 3, 4, 4],
                                                       {"0": 1}, [[1, 2]]]))  # fmt: skip
        elif op == "dtype":
            targets = [(*t, "dtype") for t in tensors] + [("dtype",)]
            path = draw(st.sampled_from(targets))
            if isinstance(doc, dict):
                _set(doc, path, draw(st.sampled_from(DTYPE_NAMES)))
        elif op == "device" and isinstance(doc, dict):
            doc["device"] = draw(st.sampled_from(DEVICES))
        elif op == "format" and isinstance(doc, dict):
            doc["format"] = draw(st.sampled_from(["resdsl-artifact/2", "resdsl-artifact/1 ",
                                                  "", "RESDSL-ARTIFACT/1", None]))  # fmt: skip
        elif op == "delete":
            paths = [p for p in _paths(doc) if p]
            if paths:
                path = draw(st.sampled_from(paths))
                parent = _get(doc, path[:-1])
                del parent[path[-1]]
        elif op == "retype":
            doc = _set(doc, draw(st.sampled_from(_paths(doc))), draw(st.sampled_from(WRONG_VALUES)))
        elif op == "extra_key":
            dicts = [p for p in _paths(doc) if isinstance(_get(doc, p), dict)]
            if dicts:
                key = draw(st.sampled_from(["extra", "", "__proto__", "x" * 1000, "\x00",
                                            "inputs2", "library "]))  # fmt: skip
                _get(doc, draw(st.sampled_from(dicts)))[key] = draw(st.sampled_from(WRONG_VALUES))
        elif op == "tensor_list" and isinstance(doc, dict):
            key = draw(st.sampled_from(["inputs", "outputs"]))
            items = doc.get(key)
            if isinstance(items, list):
                how = draw(st.sampled_from(["drop", "duplicate", "add", "reverse", "empty",
                                            "many"]))  # fmt: skip
                if how == "drop" and items:
                    items.pop(draw(st.integers(0, len(items) - 1)))
                elif how == "duplicate" and items:
                    items.append(copy.deepcopy(draw(st.sampled_from(items))))
                elif how == "add":
                    items.append({"name": draw(st.sampled_from(["z", "extra", "x"])),
                                  "shape": [1, draw(st.integers(1, 3)), 4, 4],
                                  "dtype": "float32"})  # fmt: skip
                elif how == "reverse":
                    items.reverse()
                elif how == "empty":
                    items.clear()
                else:
                    items.extend([copy.deepcopy(items[0]) if items else {}] * 10_000)
        elif op == "deep":
            depth = draw(JSON_DEPTHS)
            opener, closer = draw(st.sampled_from([("[", "]"), ('{"a": ', "}"), ("[1, ", "]")]))
            text = opener * depth + draw(st.sampled_from(["1", "[]", '"x"'])) + closer * depth
            doc = _set(doc, draw(st.sampled_from(_paths(doc))), placeholder(text))
        elif op == "long_string":
            strings = [p for p in _paths(doc) if isinstance(_get(doc, p), str)] or [()]
            unit = draw(st.sampled_from(["x", "model.so", "../", "\x00", "é", "\U0001f600"]))
            n = draw(STRING_LENGTHS)
            doc = _set(doc, draw(st.sampled_from(strings)), (unit * (n // len(unit) + 1))[:n])
        elif op == "number":
            digits = draw(st.sampled_from([10, 4300, 4301, 5000, 100_000]))
            text = draw(st.sampled_from(["1" * digits, "-" + "9" * digits, "1e400", "-1e400",
                                         "NaN", "Infinity", "-Infinity", "1" + "0" * 400 + ".0",
                                         "0." + "0" * digits + "1", "1E" + "9" * 30]))  # fmt: skip
            doc = _set(doc, draw(st.sampled_from(_paths(doc))), placeholder(text))
        elif op == "name" and tensors:
            _get(doc, draw(st.sampled_from(tensors)))["name"] = draw(st.sampled_from(NAMES))
    text = json.dumps(doc, indent=draw(st.sampled_from([None, 2])))
    for key, value in raw.items():
        text = text.replace(json.dumps(key), value)
    damage = draw(st.sampled_from(["none"] * 6 + ["bom", "truncate", "utf8", "garbage",
                                                  "duplicate", "empty", "nul"]))  # fmt: skip
    if damage == "bom":
        return "\ufeff" + text
    if damage == "truncate":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    if damage == "utf8":
        data = text.encode("utf-8", "surrogatepass")
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + data[at:]
    if damage == "garbage":
        return text + draw(st.sampled_from(["x", "}", "{}", "\x00", " " * 10]))
    if damage == "duplicate" and text.startswith("{"):
        lib = draw(st.sampled_from(libraries or ["../x.so"]))
        return '{"library": ' + json.dumps(lib) + ", " + text[1:] + ""
    if damage == "empty":
        return draw(st.sampled_from(["", " ", "null", "[]", "0", '"model.so"']))
    if damage == "nul":
        return text.replace(":", ":\x00", 1)
    return text


# --- the artifact property -------------------------------------------------------------------


def _mapped_files() -> set[str]:
    """Files mapped into this process (Linux); empty where there is no /proc."""
    try:
        with open("/proc/self/maps") as f:
            return {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) > 5}
    except OSError:
        return set()


def _inside(path: str, directory: str) -> bool:
    return os.path.commonpath([os.path.realpath(path), directory]) == directory


def check_artifact(dir: str, meta_text: str | bytes) -> str:
    """Write ``meta_text`` as ``dir/model.json``, load ``dir`` and run it; return the outcome
    (``"ok"``, ``"E0801-load"``, ``"E0801-run"``). Anything else is a failure (an
    exception). Run it in a child process (:class:`ArtifactChecker`): it loads libraries."""
    import numpy as np

    from resdsl import runtime

    data = meta_text.encode("utf-8", "surrogatepass") if isinstance(meta_text, str) else meta_text
    with open(os.path.join(dir, "model.json"), "wb") as f:
        f.write(data)
    ref_in, ref_out = _reference(dir)
    real_dir = os.path.realpath(dir)
    root = os.path.dirname(real_dir)
    before = _mapped_files()
    try:
        model = runtime.load(dir)
    except runtime.ArtifactError:
        return "E0801-load"
    outside = sorted(p for p in _mapped_files() - before
                     if _inside(p, root) and not _inside(p, real_dir))  # fmt: skip
    assert not outside, f"a library outside the artifact directory was loaded: {outside}"
    declared = model.inputs
    genuine = [(list(a.shape), str(a.dtype)) for a in ref_in]
    try:
        wanted = [(list(i["shape"]), str(np.dtype(i["dtype"]))) for i in declared]
    except Exception:  # not shapes and dtypes: the call must refuse whatever it is given
        wanted = None
    arrays = ref_in
    if wanted not in (None, genuine) and all(math_prod(s) <= 2**20 for s, _ in wanted):
        arrays = [np.zeros(s, d) for s, d in wanted]  # what model.json says it takes
    try:
        result = model(*arrays)
    except runtime.ArtifactError:
        return "E0801-run"
    assert wanted == genuine, (
        f"ran with inputs {wanted} declared by model.json; the library takes {genuine}"
    )
    outs = list(result) if isinstance(result, tuple) else [result]
    got = [(list(o.shape), str(o.dtype)) for o in outs]
    want = [(list(o.shape), str(o.dtype)) for o in ref_out]
    assert got == want, f"outputs {got}, the library's are {want}"
    for o, r in zip(outs, ref_out, strict=True):
        np.testing.assert_allclose(o, r, rtol=1e-5, atol=1e-6)
    declared_out = [(list(o["shape"]), o["dtype"]) for o in model.outputs]
    assert declared_out == want, f"model.json declares outputs {declared_out}; returned {want}"
    return "ok"


def math_prod(shape: Any) -> float:
    total = 1
    for d in shape:
        total *= d if isinstance(d, int) and d >= 0 else float("inf")
    return total


@dataclass
class Result:
    """One example checked in a child: its outcome (None: a failure) and what it cost."""

    outcome: str | None
    error: str = ""
    cpu_s: float = 0.0  # user + system CPU time of the child
    peak_kb: int = 0  # the child's peak resident memory
    base_kb: int = 0  # the child's resident memory when it started: peak - base is its cost


class ArtifactChecker:
    """Runs :func:`check_artifact` for each example in a forked child of a worker process.

    The worker imports TVM once and never runs it, so its children start clean (no thread
    pool to inherit) and quickly; a child that segfaults, runs past ``cpu`` CPU seconds or
    ``wall`` seconds (a FIFO blocks without using CPU) is a failure, and the next example
    gets a fresh child."""

    def __init__(self, cpu: float = 20.0, wall: float = 60.0) -> None:
        self.cpu, self.wall = cpu, wall
        self.proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.artifactgen", "worker", str(self.cpu),
                 str(self.wall)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
        return self.proc

    def check(self, dir: str, meta_text: str | bytes) -> Result:
        proc = self._start()
        text = meta_text if isinstance(meta_text, str) else None
        data = None if text is not None else base64.b64encode(meta_text).decode()
        request = {"dir": dir, "text": text, "bytes": data}
        line = json.dumps(request) + "\n"
        proc.stdin.write(line.encode("utf-8", "surrogatepass"))
        proc.stdin.flush()
        reply = proc.stdout.readline()
        if not reply:
            self.close()
            return Result(None, "the worker process died")
        return Result(**json.loads(reply))

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.stdin.close()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None

    def __enter__(self) -> ArtifactChecker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def run_forked(fn: Any, args: tuple, cpu: float, wall: float) -> Result:
    """``fn(*args)`` in a forked child under an RLIMIT_CPU of ``cpu`` seconds and a wall
    limit: its returned outcome, or a failure for an exception, a signal or a hang, with the
    child's CPU time and peak memory. The caller must not run threads the child needs."""
    base = _rss_kb()  # replaced by the child's own figure when it reports
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        status = 0
        try:
            os.close(read_end)
            # the parent's objects (a long fuzzing run's heap) are not the example's: frozen,
            # the collector does not scan them, so CPU time is what a fresh process spends
            gc.freeze()
            limit = max(1, int(cpu + 0.999))
            resource.setrlimit(resource.RLIMIT_CPU, (limit, limit + 1))
            base = _rss_kb()  # the child's own start: the pages it shares are counted lazily
            try:
                reply = {"outcome": fn(*args), "base_kb": base}
            except BaseException as e:  # the property failed
                lines = traceback.format_exception_only(type(e), e)
                reply = {"outcome": None, "error": "".join(lines).strip()[:4000], "base_kb": base}
            with os.fdopen(write_end, "w") as f:
                json.dump(reply, f)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    chunks, start, hung = [], time.monotonic(), False
    with os.fdopen(read_end, "rb") as f:
        while True:
            left = wall - (time.monotonic() - start)
            if left <= 0:
                hung = True
                os.kill(pid, signal.SIGKILL)
                break
            ready, _, _ = select.select([f], [], [], left)
            if ready:
                chunk = os.read(f.fileno(), 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
    _, status, usage = os.wait4(pid, 0)
    cpu_s = usage.ru_utime + usage.ru_stime
    costs = {"cpu_s": cpu_s, "peak_kb": usage.ru_maxrss, "base_kb": base}
    if hung:
        return Result(None, f"no result after {wall} s of wall time (a hang)", **costs)
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        why = " (past the CPU limit)" if sig in ("SIGXCPU", "SIGKILL") else ""
        return Result(None, f"the child was killed by {sig}{why}", **costs)
    try:
        reply = json.loads(b"".join(chunks))
    except ValueError:
        return Result(None, f"the child exited with status {os.WEXITSTATUS(status)}", **costs)
    costs["base_kb"] = reply.get("base_kb", base)
    return Result(reply["outcome"], reply.get("error", ""), **costs)


def _worker_main(cpu: float, wall: float) -> None:
    """``python -m tests.artifactgen worker CPU WALL``: one JSON request a line on stdin,
    one :class:`Result` a line on stdout."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything TVM prints goes to stderr, not into the replies
    from resdsl import runtime

    runtime._import_tvm()  # imported once here; each child loads and runs
    for line in sys.stdin:
        request = json.loads(line)
        text = request["text"]
        if text is None:
            text = base64.b64decode(request["bytes"])
        result = run_forked(check_artifact, (request["dir"], text), cpu, wall)
        out.write(json.dumps(result.__dict__) + "\n")
        out.flush()


# --- odd weights -----------------------------------------------------------------------------

# Refused whatever their shape (the brief of resdsl.weights): no float format resdsl reads,
# no dense real values to read.
REFUSED = ("float8", "float4", "complex", "quantised", "sparse", "meta")


@dataclass
class WeightsCase:
    """A drawn checkpoint: the object saved (or passed), how, and what each expected key
    holds (``"float32"``, ``"bfloat16"``, ``"sparse"``, ...)."""

    state: Any
    form: str  # "pt", "safetensors" or "dict"
    kinds: dict[str, str]

    def __repr__(self) -> str:  # what a failing example shows
        return f"WeightsCase(form={self.form!r}, kinds={self.kinds!r})"


def _dtypes() -> list[str]:
    import torch

    return sorted(n for n in dir(torch) if isinstance(getattr(torch, n), torch.dtype))


ODD_KINDS = ["dtype", "dtype", "dtype", "quantised", "sparse", "meta", "noncontiguous",
             "expanded", "offset", "zero_size", "wrong_shape", "nan", "inf", "not_a_tensor",
             "nested"]  # fmt: skip


def _odd_tensor(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[Any, str]:
    """A tensor (or not) for one key, and its kind."""
    with warnings.catch_warnings():  # experimental, beta and deprecated kinds are the point
        warnings.simplefilter("ignore")
        return _make_odd_tensor(draw, shape)


def _make_odd_tensor(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[Any, str]:
    import torch

    values = torch.randn(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 9))))
    kind = draw(st.sampled_from(ODD_KINDS))
    if kind == "dtype":
        name = draw(st.sampled_from(_dtypes()))
        dtype = getattr(torch, name)
        try:
            t = values.to(dtype)
        except Exception:  # bits, sub-byte and qint dtypes take no conversion
            try:
                t = torch.empty(shape, dtype=dtype)
            except Exception:
                return values, "float32"
        name = str(t.dtype).removeprefix("torch.")
        if t.is_quantized:
            return t, "quantised"
        return t, ("complex" if t.is_complex() else name)
    if kind == "quantised":
        qtype = draw(st.sampled_from(["qint8", "quint8", "qint32", "quint4x2"]))
        try:
            return torch.quantize_per_tensor(values, 0.1, 0, getattr(torch, qtype)), "quantised"
        except Exception:
            return torch.quantize_per_tensor(values, 0.1, 0, torch.qint8), "quantised"
    if kind == "sparse":
        how = draw(st.sampled_from(["coo", "csr"]))
        try:
            return (values.to_sparse() if how == "coo" else values.to_sparse_csr()), "sparse"
        except Exception:  # CSR needs two dimensions
            return values.to_sparse(), "sparse"
    if kind == "meta":
        return torch.empty(shape, device="meta"), "meta"
    if kind == "noncontiguous":
        big = torch.randn(*shape, 2) if shape else torch.randn(2)
        return (big[..., 0] if shape else big[0]), "float32"
    if kind == "expanded":
        if not shape:
            return values, "float32"
        return values[..., :1].expand(*shape), "float32"
    if kind == "offset":  # a view into a larger storage
        flat = torch.randn(values.numel() + 7)
        return flat[7:].view(shape), "float32"
    if kind == "zero_size":
        return torch.empty((0, *shape[1:])), "bad_shape"
    if kind == "wrong_shape":
        return torch.randn(*shape, 1), "bad_shape"
    if kind in ("nan", "inf"):
        t = values.clone()
        if t.numel():
            t.view(-1)[0] = float("nan") if kind == "nan" else float("-inf")
        return t, "float32"
    if kind == "not_a_tensor":
        return draw(st.sampled_from([1.5, None, "w", [1.0], b"\x00", (1, 2)])), "not_a_tensor"
    return {"weight": values}, "not_a_tensor"


@st.composite
def odd_weights(draw: st.DrawFn, graph: Any) -> WeightsCase:
    """A checkpoint for ``graph``: its weights in float32, then up to five keys given odd
    tensors, maybe an extra, missing or non-string key, maybe wrapped, in one form."""
    import torch

    from resdsl.weights import expected

    want = expected(graph)
    state: dict[Any, Any] = {}
    kinds: dict[str, str] = {}
    for key, w in want.items():
        state[key] = torch.randn(w.shape).to(getattr(torch, w.dtype))
        kinds[key] = w.dtype
    keys = sorted(want)
    for _ in range(draw(st.integers(0, 5))):
        key = draw(st.sampled_from(keys))
        state[key], kinds[key] = _odd_tensor(draw, tuple(want[key].shape))
    edit = draw(st.sampled_from(["none", "none", "missing", "extra", "int_key", "tuple_key",
                                 "bytes_key", "none_key", "float_key"]))  # fmt: skip
    if edit == "missing":
        key = draw(st.sampled_from(keys))
        del state[key]
        kinds[key] = "missing"
    elif edit == "extra":
        state["extra.weight"] = torch.zeros(2)
    elif edit != "none":
        key = {"int_key": 0, "tuple_key": ("a", 1), "bytes_key": b"a.weight", "none_key": None,
               "float_key": 1.5}[edit]  # fmt: skip
        state[key] = torch.zeros(1)
    form = draw(st.sampled_from(["pt", "pt", "safetensors", "safetensors", "dict"]))
    wrapper = draw(st.sampled_from([None, None, "state_dict", "model"]))
    if wrapper and form == "pt":  # safetensors files are flat
        state = {wrapper: state, "epoch": 3}
    return WeightsCase(state, form, kinds)


def _effective(case: WeightsCase) -> Any:
    """The dict of tensors resdsl should read: a checkpoint file's wrapper unwrapped."""
    state = case.state
    if case.form != "dict":
        for wrapper in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                state = state[wrapper]
    return state


def _safetensors_case(case: WeightsCase, path: str) -> WeightsCase | None:
    """Save what safetensors can hold of ``case`` (dense tensors under string keys, made
    contiguous and unshared; the rest left out, so missing) to ``path``; the case saved."""
    import torch
    from safetensors.torch import save_file

    state, kinds = {}, dict(case.kinds)
    for key, value in case.state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            kinds[key] = "missing"
            continue
        if value.is_meta or value.layout != torch.strided or value.is_quantized:
            kinds[key] = "missing"
            continue
        try:  # a dtype torch cannot copy, or safetensors has no name for
            tensor = value.detach().contiguous().clone()
            save_file({key: tensor}, path)
        except Exception:
            kinds[key] = "missing"
            continue
        state[key] = tensor
    try:
        save_file(state, path)
    except Exception:
        return None
    return WeightsCase(state, "safetensors", kinds)


def check_weights(graph: Any, case: WeightsCase, tmp: str | os.PathLike[str]) -> str:
    """Write ``case`` and resolve it for ``graph``; return ``"ok"``, ``"unrepresentable"``
    (safetensors cannot hold it) or the error code. Anything else is a failure."""
    import numpy as np
    import torch

    import resdsl
    from resdsl.weights import expected, resolve

    if case.form == "dict":
        target: Any = case.state
    elif case.form == "pt":
        target = os.path.join(tmp, "weights.pt")
        try:
            torch.save(case.state, target)
        except Exception:  # torch cannot save some dtypes (int2, quint4x2 views)
            return "unrepresentable"
    else:
        target = os.path.join(tmp, "weights.safetensors")
        case = _safetensors_case(case, target)
        if case is None:
            return "unrepresentable"
    try:
        weights, _ = resolve(graph, target)
    except resdsl.SpecError as e:
        return e.code
    want = expected(graph)
    state = _effective(case)
    assert isinstance(weights, dict), type(weights)
    assert all(isinstance(k, str) for k in state), "a non-string key was accepted"
    missing = [k for k, w in want.items() if w.required and k not in weights]
    assert not missing, f"returned without {missing}"
    for key, array in weights.items():
        assert key in want, f"returned `{key}`, which the network does not have"
        w = want[key]
        assert isinstance(array, np.ndarray), (key, type(array))
        assert array.shape == tuple(w.shape), (key, array.shape, w.shape)
        assert array.dtype == np.dtype(w.dtype), (key, array.dtype, w.dtype)
        kind = case.kinds.get(key, "")
        assert not kind.startswith(REFUSED), f"`{key}` was accepted: {kind}"
        source = state[key]
        if case.form == "dict" and not isinstance(source, torch.Tensor):
            continue  # a dict may hold NumPy arrays or numbers
        assert isinstance(source, torch.Tensor), f"`{key}` was accepted: {type(source)}"
        if source.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            exact = source.detach().to(getattr(torch, w.dtype)).contiguous().numpy()
            assert np.array_equal(array, exact, equal_nan=True), f"`{key}` changed its values"
    return "ok"


if __name__ == "__main__":
    if sys.argv[1] == "build":
        _build_main(sys.argv[2])
    elif sys.argv[1] == "worker":
        _worker_main(float(sys.argv[2]), float(sys.argv[3]))

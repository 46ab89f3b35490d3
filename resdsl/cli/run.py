"""``resdsl run``: run a compiled artifact on .npy inputs and print or write its outputs
(docs/cli.md, docs/deploy.md)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from .common import EXIT_OK, UsageError, _existing, _shown, seed_arg

# The largest .npy header `run --input` reads (NumPy's own default bound).
MAX_NPY_HEADER = 10000


def add_run_command(sub: Any) -> None:
    """Register ``resdsl run`` on the ``resdsl`` subcommand parser."""
    run = sub.add_parser(
        "run",
        help="run a compiled artifact on .npy inputs",
        description="Runs DIR/model.so with NumPy inputs; needs TVM's runtime only.",
    )
    run.add_argument("artifact", metavar="DIR")
    run.add_argument(
        "--input", action="append", default=[], metavar="[NAME=]FILE",
        help=".npy input, in input order or by name (default: a seeded random input)",
    )  # fmt: skip
    run.add_argument("--output", metavar="FILE", help="write outputs: .npy, or .npz for several")
    run.add_argument("--seed", type=seed_arg, default=0, help="seed of the random input")
    run.add_argument(
        "--batch", type=int, metavar="N",
        help="batch of the random input for an artifact compiled for a batch range "
        "(default: the range's low end)",
    )  # fmt: skip
    run.add_argument(
        "--strict", action="store_true",
        help="refuse inputs holding NaN or infinite values (default: a warning)",
    )  # fmt: skip
    run.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import runtime

    model = runtime.load(args.artifact)
    batch = _batch(model, args)
    if args.input:
        arrays = _read_inputs(args.input, model.meta, args.strict)
    else:
        inputs = [{**i, "shape": runtime.concrete_shape(i, batch)} for i in model.inputs]
        arrays = _random_inputs(inputs, args.seed)
    result = model(**arrays)
    outputs = result if isinstance(result, tuple) else (result,)
    named = {o["name"]: y for o, y in zip(model.outputs, outputs, strict=True)}
    for name, y in named.items():
        bad = _non_finite(y)
        if bad:
            print(f"resdsl run: warning: output {name!r} holds {bad} NaN or infinite value(s) "
                  f"(of {y.size})", file=sys.stderr)  # fmt: skip
    if args.output:
        _write_outputs(args.output, named)
        print(f"wrote {args.output}", file=sys.stderr)
        return EXIT_OK
    for name, y in named.items():
        head = ", ".join(f"{v:.6g}" for v in y.reshape(-1)[:5])
        with np.errstate(all="ignore"):  # NaN and Inf are reported above
            mean, std = y.mean(), y.std()
        print(f"{name}: shape {tuple(y.shape)} {y.dtype} mean {mean:.6g} std {std:.6g} "
              f"[{head}{', ...' if y.size > 5 else ''}]")  # fmt: skip
    return EXIT_OK


def _batch(model: Any, args: argparse.Namespace) -> int | None:
    """The random input's batch: ``--batch`` for a dynamic-batch artifact (within its
    range), else its low end; None for a fixed batch, where ``--batch`` is refused."""
    low_high = model.batch_range
    if args.batch is None:
        return low_high[0] if low_high else None
    if low_high is None:
        raise UsageError(
            "--batch applies to an artifact compiled for a batch range (compile --batch LOW..HIGH)"
        )
    if args.input:
        raise UsageError("--batch sets the random input's batch; --input gives the inputs")
    if not low_high[0] <= args.batch <= low_high[1]:
        raise UsageError(
            f"--batch must be within the artifact's range {low_high[0]}..{low_high[1]}, "
            f"got {args.batch}"
        )
    return args.batch


def _random_inputs(inputs: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Without ``--input``: standard normal values from ``--seed``, one array per input."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = {}
    for i in inputs:
        kind = i["dtype"] if i["dtype"] in ("float32", "float64") else "float32"
        try:
            x = rng.standard_normal(i["shape"], dtype=kind)
        except MemoryError:
            raise UsageError(f"not enough memory for a random input of shape "
                             f"{tuple(i['shape'])}; give --input") from None  # fmt: skip
        arrays[i["name"]] = x.astype(i["dtype"], copy=False)
    return arrays


def _non_finite(array: Any) -> int:
    """How many NaN or infinite values a float array holds."""
    import numpy as np

    if array.dtype.kind != "f":
        return 0
    return int(array.size - np.count_nonzero(np.isfinite(array)))


def _read_inputs(
    specs: Sequence[str], meta: dict[str, Any], strict: bool = False
) -> dict[str, Any]:
    """``--input [NAME=]FILE`` arrays by input name; each file's header (dtype, shape) is
    checked against the model (``model.json``'s ``meta``) before its data is read."""
    inputs = meta["inputs"]
    names = [i["name"] for i in inputs]
    arrays: dict[str, Any] = {}
    for i, spec in enumerate(specs):
        name, sep, path = spec.partition("=")
        if not sep:
            if i >= len(names):
                raise UsageError(f"the model takes {len(names)} input(s); got more --input")
            name, path = names[i], spec
        if name not in names:
            raise UsageError(f"--input {name}=...: the model has no input {name!r}; "
                             f"its inputs: {', '.join(names)}")  # fmt: skip
        if name in arrays:
            raise UsageError(f"--input: input {name!r} is given twice")
        array = _read_npy(_existing(path), inputs[names.index(name)], meta)
        bad = _non_finite(array)
        if bad and strict:
            raise UsageError(f"{_shown(path)}: input {name!r} holds {bad} NaN or infinite "
                             f"value(s) (of {array.size}); --strict refuses them")  # fmt: skip
        if bad:
            print(f"resdsl run: warning: input {name!r} ({_shown(path)}) holds {bad} NaN or "
                  f"infinite value(s) (of {array.size})", file=sys.stderr)  # fmt: skip
        arrays[name] = array
    return arrays


def _read_npy(path: str, spec: dict[str, Any], meta: dict[str, Any]) -> Any:
    """One ``.npy`` file for the input ``spec``: numbers of the input's shape, never
    pickled objects; a usage error naming the file and the reason otherwise."""
    import numpy as np

    from ..runtime import check_shape

    def refuse(reason: str) -> UsageError:
        return UsageError(f"cannot read {_shown(path)}: {reason}")

    fmt = np.lib.format
    with open(path, "rb") as f:
        magic = f.read(6)
        if magic != fmt.MAGIC_PREFIX:
            if magic.startswith(b"PK\x03\x04"):
                raise refuse("a .npz archive; give one .npy file per input")
            raise refuse("not a .npy file (it does not start with NumPy's magic string)")
        f.seek(0)
        try:
            version = fmt.read_magic(f)
            read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
            if version not in read_header:
                raise ValueError(f"version {version[0]}.{version[1]}, which resdsl does not read")
            shape, _, dtype = read_header[version](f, max_header_size=MAX_NPY_HEADER)
        except ValueError as e:
            if "Header info length" in str(e):
                raise refuse(f"its header is larger than {MAX_NPY_HEADER} bytes") from None
            raise refuse(f"a damaged .npy header ({str(e).splitlines()[0]})") from None
        offset = f.tell()
    if dtype.hasobject:
        raise refuse("it holds Python objects (pickled data), which resdsl never loads")
    if dtype.itemsize == 0:
        raise refuse(f"its dtype {dtype} is empty")
    if dtype.fields is not None:
        raise refuse(f"it holds records of a structured dtype {dtype}, not numbers")
    if dtype.kind == "c":
        raise refuse(f"it holds complex numbers ({dtype}); the input {spec['name']!r} is "
                     f"{spec['dtype']}")  # fmt: skip
    if dtype.kind not in "biuf":
        what = {"U": "text", "S": "bytes", "V": "raw bytes", "M": "dates", "m": "durations"}
        raise refuse(f"it holds {what.get(dtype.kind, 'values')} ({dtype}), not numbers")
    check_shape(meta, spec, tuple(shape))
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if os.path.getsize(path) - offset < size:
        raise refuse(f"it is truncated: {size} bytes of data expected after the header")
    try:
        return np.load(path, allow_pickle=False, max_header_size=MAX_NPY_HEADER)
    except (ValueError, EOFError) as e:
        raise refuse(str(e).splitlines()[0] if str(e) else type(e).__name__) from None


def _write_outputs(path: str, named: dict[str, Any]) -> None:
    import io

    import numpy as np

    from .._io import atomic_write

    buffer = io.BytesIO()
    if path.endswith(".npz"):
        np.savez(buffer, **named)
    elif len(named) == 1:
        np.save(buffer, next(iter(named.values())))
    else:
        raise UsageError(f"the model has {len(named)} outputs: write them to a .npz file")
    atomic_write(path, buffer.getvalue())

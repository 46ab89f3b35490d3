"""Files -> parsed modules: reading, import resolution, and the parse cache.

An import names a ``.res`` file relative to the importing file. It may not leave the
importing file's directory tree (no absolute paths, no ``..`` escape, no symlink escape),
so a spec from an untrusted repository can only read the spec files beside it.
``import std.NAME`` reads ``NAME.res`` of the standard library shipped in ``resdsl/std``;
its spans say ``std/NAME.res``. A spec named ``zoo:NAME`` is the network ``NAME`` of the
model zoo shipped in ``resdsl/zoo`` (:func:`resolve_spec`); its spans say ``zoo/FILE.res``.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources

from . import _io
from .errors import (
    CycleError,
    DidYouMean,
    DuplicateNameError,
    Note,
    SpecError,
    SpecImportError,
)
from .errors import shown_path as _shown
from .syntax import ast, parse
from .syntax.parser import check_size

_CACHE: dict[str, ast.Module] = {}  # parse cache keyed by (path, text) digest
_CACHE_LIMIT = 512


def parse_cached(text: str, path: str) -> ast.Module:
    """Parse with a cache: search scripts load the same files thousands of times."""
    text = strip_bom(text)
    # surrogatepass: a file name that is not UTF-8 (os.fsdecode) keeps its bytes
    key = f"{path}\0{text}".encode("utf-8", "surrogatepass")
    key = hashlib.blake2b(key, digest_size=16).hexdigest()
    module = _CACHE.get(key)
    if module is None:
        if len(_CACHE) >= _CACHE_LIMIT:
            _CACHE.clear()
        module = _CACHE[key] = parse(text, path)
    else:
        from .errors import remember_source

        remember_source(path, text)
    return module


@dataclass
class Program:
    """The main module plus everything it imports, with one namespace of definitions."""

    main: ast.Module
    definitions: dict[str, ast.Definition] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    digest: str = ""  # sha256 over every file's text, in import order

    def _add_file(self, path: str, text: str) -> None:
        self.files.append(path)
        h = hashlib.sha256(self.digest.encode())
        h.update(text.encode("utf-8", "surrogatepass"))
        self.digest = h.hexdigest()


BOM = "\ufeff"


def strip_bom(text: str) -> str:
    """``text`` without a leading UTF-8 byte order mark (editors on Windows write one)."""
    return text[1:] if text.startswith(BOM) else text


def open_regular(path: str, mode: str = "r", **kwargs):
    """``open(path)`` for a regular file only: a FIFO, a device or a socket is refused with
    an ``OSError`` before it can block (opened with ``O_NONBLOCK``, then checked)."""

    def opener(name: str, flags: int) -> int:
        fd = os.open(name, flags | os.O_NONBLOCK)
        try:
            kind = os.fstat(fd).st_mode
            if not stat.S_ISREG(kind):
                raise OSError(errno.EINVAL, f"{_io.file_kind(kind)}, not a regular file")
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    return open(path, mode, opener=opener, **kwargs)


def read_spec(path: str) -> str:
    """A spec file's text, a UTF-8 byte order mark skipped. Only a regular file is read."""
    return read_text(path, lambda size: check_size(size, path, "bytes"))


def read_text(path: str, check: Callable[[int], None]) -> str:
    """A UTF-8 text file's contents, a byte order mark skipped, after ``check`` (which
    raises) has seen its size in bytes. Only a regular file is read; failures are
    ``SpecError``s naming the file."""
    try:
        with open_regular(path, encoding="utf-8") as f:
            check(os.fstat(f.fileno()).st_size)  # before reading it
            return strip_bom(f.read())
    except FileNotFoundError:
        raise SpecError(f"no such file: {_shown(path)}") from None
    except OSError as e:
        raise SpecError(f"cannot read {_shown(path)}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise SpecError(f"cannot read {_shown(path)}: {e}") from None


def load_program(text: str, path: str) -> Program:
    """Parse ``text`` (the file at ``path``) and, recursively, its imports."""
    text = strip_bom(text)
    main = parse_cached(text, path)
    program = Program(main)
    _collect(program, main, path, text, stack=[os.path.realpath(path)], seen=set())
    return program


def _collect(
    program: Program, module: ast.Module, path: str, text: str, stack: list[str], seen: set
) -> None:
    program._add_file(path, text)
    for definition in module.definitions:
        _define(program, definition)
    for imp in module.imports:
        if imp.std is not None:
            target, real = imp.path, f"<std>/{imp.std}"
        else:
            target = _resolve(imp, path)
            real = os.path.realpath(target)
        if real in stack:
            chain = " -> ".join(os.path.basename(p) for p in [*stack, real])
            raise CycleError(f"import cycle: {chain}", imp.span)
        if real in seen:
            continue
        seen.add(real)
        child_text = read_std(imp) if imp.std is not None else read_spec_for(imp, target)
        child = parse_cached(child_text, target)
        _collect(program, child, target, child_text, [*stack, real], seen)


def read_spec_for(imp: ast.Import, target: str) -> str:
    try:
        return read_spec(target)
    except SpecError as e:
        raise SpecImportError(f"cannot import {imp.path!r}: {e.message}", imp.span) from None


def std_modules() -> list[str]:
    """Names of the standard library's modules (``import std.NAME``)."""
    files = resources.files("resdsl.std").iterdir()
    return sorted(f.name[:-4] for f in files if f.name.endswith(".res"))


def read_std(imp: ast.Import) -> str:
    """The text of ``std/NAME.res``; only the names the package ships can be read."""
    name = imp.std or ""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name) or name not in std_modules():
        raise SpecImportError(
            f"no module `std.{name}` in the standard library", imp.span,
            hints=DidYouMean(std_modules()).hint(name)
            or ["modules: " + ", ".join(f"std.{m}" for m in std_modules())],
        )  # fmt: skip
    return resources.files("resdsl.std").joinpath(f"{name}.res").read_text(encoding="utf-8")


# --- the model zoo -------------------------------------------------------------------------------

ZOO = "zoo:"  # a spec name such as `zoo:resnet50`: the network of that name in resdsl/zoo


def zoo_files() -> list[str]:
    """The zoo's family files (``resnet.res``, ...), sorted."""
    files = resources.files("resdsl.zoo").iterdir()
    return sorted(f.name for f in files if f.name.endswith(".res"))


def zoo_text(file: str) -> str:
    """The text of one of the zoo's family files (``resnet.res``)."""
    return resources.files("resdsl.zoo").joinpath(file).read_text(encoding="utf-8")


@functools.cache
def _zoo_index() -> tuple[tuple[str, str], ...]:
    """(model, family file) of every network in the zoo, sorted; read once per process (the
    package's files do not change while it runs)."""
    models = {}
    for file in zoo_files():
        module = parse_cached(zoo_text(file), f"zoo/{file}")
        for definition in module.definitions:
            if definition.kind == "network":
                models[definition.name] = file
    return tuple(sorted(models.items()))


def zoo_models() -> dict[str, str]:
    """Every model of the zoo: its name (the network's, torchvision's builder's) -> the
    family file that defines it."""
    return dict(_zoo_index())


def resolve_spec(path: str) -> tuple[str, str, str | None]:
    """A spec named by a path or a zoo name: (text, the path its spans show, the network
    the name picks, if any). A zoo name reads only the files the package ships."""
    if not path.startswith(ZOO):
        return read_spec(path), path, None
    name = path[len(ZOO) :]
    models = zoo_models()
    if name not in models:
        raise SpecError(
            f"no model `{name}` in the zoo",
            hints=DidYouMean(list(models)).hint(name)
            or [f"`resdsl models` lists the {len(models)} models"],
        )
    return zoo_text(models[name]), f"zoo/{models[name]}", name


def _resolve(imp: ast.Import, importer: str) -> str:
    if not imp.path.endswith(".res"):
        raise SpecImportError(
            f"cannot import {imp.path!r}: imports name a .res file", imp.span,
            hints=[f'write `import "{imp.path}.res"`'],
        )  # fmt: skip
    if any(ord(c) < 32 for c in imp.path):  # os.path raises on NUL; no file name needs these
        raise SpecImportError(
            f"cannot import {imp.path!r}: the path holds a control character", imp.span
        )
    if os.path.isabs(imp.path) or imp.path.startswith(("~", "\\")):
        raise SpecImportError(
            f"cannot import {imp.path!r}: imports are relative to the importing file", imp.span
        )
    base = os.path.dirname(os.path.abspath(importer))
    target = os.path.normpath(os.path.join(base, imp.path))
    real_base, real_target = os.path.realpath(base), os.path.realpath(target)
    if os.path.commonpath([real_base, real_target]) != real_base:
        raise SpecImportError(
            f"cannot import {imp.path!r}: it leaves the directory of the importing file",
            imp.span,
            hints=["spec files may only import files in their own directory or below it"],
        )
    if not os.path.isfile(target):
        raise SpecImportError(f"cannot import {imp.path!r}: no such file", imp.span)
    rel = os.path.relpath(target)
    return rel if not rel.startswith("..") else target


def _define(program: Program, definition: ast.Definition) -> None:
    previous = program.definitions.get(definition.name)
    if previous is not None and previous is not definition:
        raise DuplicateNameError(
            f"`{definition.name}` is defined twice",
            definition.name_span,
            notes=[Note("first defined here", previous.name_span)],
        )
    program.definitions[definition.name] = definition

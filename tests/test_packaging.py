"""The wheel ships every subpackage and data file: pyproject lists packages explicitly."""

from __future__ import annotations

import tomllib

from .conftest import ROOT


def test_every_subpackage_is_listed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "resdsl").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert set(config["packages"]) == found | {"resdsl.grammars"}
    assert config["package-data"] == {
        "resdsl.grammars": ["*.lark"], "resdsl.std": ["*.res"], "resdsl.zoo": ["*.res"]
    }  # fmt: skip

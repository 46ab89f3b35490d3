import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture
def spec(tmp_path):
    """Write spec text to a file and return its path."""

    def write(text: str, name: str = "net.res") -> str:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    return write


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` (the zoo's giants: minutes and gigabytes each) run only with
    RESDSL_SLOW=1; the default run, CI's, covers everything else."""
    if os.environ.get("RESDSL_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set RESDSL_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)

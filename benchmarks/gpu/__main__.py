"""``python benchmarks/gpu prepare|device``: see the package docstring."""

import sys
from pathlib import Path

# Run as a directory, Python puts this folder first on sys.path; put its parent there
# instead, so that the package imports as ``gpu`` and its module names shadow nothing.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from gpu.cli import main  # noqa: E402

sys.exit(main())

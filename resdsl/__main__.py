"""``python -m resdsl``: the same as the ``resdsl`` command (see :mod:`resdsl.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

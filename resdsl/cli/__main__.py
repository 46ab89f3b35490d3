"""``python -m resdsl.cli``: the same as the ``resdsl`` command."""

import sys

from . import main

sys.exit(main())

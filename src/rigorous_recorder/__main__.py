"""``python -m rigorous_recorder``: the same as the ``rigorous-recorder`` command."""

import sys

from .cli import main

sys.exit(main())

"""`python -m fovcompletion` runs the command line (the Slicer module starts it this way)."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())

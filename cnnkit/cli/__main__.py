"""``python -m cnnkit.cli ...`` (as ``python -m cnnkit ...``) runs the ``cnnkit`` command."""

from __future__ import annotations

import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())

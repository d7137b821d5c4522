"""``python -m embedrt_dev.fetch``: the same command line as ``scripts/fetch_models.py``."""

import sys

from .cli import main

sys.exit(main())

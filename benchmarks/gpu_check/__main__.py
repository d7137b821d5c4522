"""``python -m benchmarks.gpu_check RESULTS_DIR ...``: see the package docstring."""

import sys

from .cli import main

sys.exit(main())

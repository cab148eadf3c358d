"""``python -m bench``: the same as ``fastsock-bench``."""

import sys

from bench.cli import main

sys.exit(main())

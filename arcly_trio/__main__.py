"""``python -m arcly_trio`` is ``arcly-trio``."""

import sys

from .server.cli import main

sys.exit(main())

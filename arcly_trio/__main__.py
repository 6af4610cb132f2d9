"""``python -m arcly_trio`` is ``arcly-trio``."""

import sys

from arcly_trio.server.cli import main

sys.exit(main())

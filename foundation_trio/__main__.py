"""``python -m foundation_trio``: the same as the ``foundation-trio`` command."""

import sys

from foundation_trio.cli import main

sys.exit(main())

"""``python -m auxsearch`` is the ``auxsearch`` command (worker processes start this way)."""

import sys

from auxsearch.cli import main

sys.exit(main())

"""`python -m clients.cli` is `isb`."""

import sys

from clients.cli import main

sys.exit(main())

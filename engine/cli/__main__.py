"""`python -m engine.cli`: the `paintbridge` command."""

import sys

from . import main

sys.exit(main())

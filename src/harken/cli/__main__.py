"""`python -m harken.cli`: the `harken` command."""

import sys

from harken.cli.main import main

sys.exit(main())

import sys

from harken.cli.main import main

sys.exit(main())

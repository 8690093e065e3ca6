"""`python -m autoround`: the same as the `autoround` command."""

import sys

from autoround.cli.commands import main

sys.exit(main())

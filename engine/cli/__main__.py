"""``python -m engine.cli``: the same program as the ``sluice`` command."""

import sys

from engine.cli.main import main

sys.exit(main())

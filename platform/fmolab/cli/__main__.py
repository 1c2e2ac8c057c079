"""``python -m fmolab.cli``: the ``fmolab`` command."""
import sys

from fmolab.cli import main

sys.exit(main())

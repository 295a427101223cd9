"""``python -m minillm.cli``: the ``minillm`` command."""

import sys

from minillm.cli import main

sys.exit(main())

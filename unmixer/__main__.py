"""``python -m unmixer``: see :mod:`unmixer.cli`."""

import sys

from unmixer.cli import main

sys.exit(main())

"""``python -m unmixer``: see :mod:`unmixer.cli`."""

import sys

from unmixer.cli import main

if __name__ == "__main__":  # worker processes (unmixer.loops.beats) import this module again
    sys.exit(main())

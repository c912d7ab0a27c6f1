"""`python -m minimind …` (and `torchrun -m minimind …`) runs the command line."""

import sys

from minimind.cli import main

sys.exit(main())

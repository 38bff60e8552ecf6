"""``python -m dashboard``: the same command line as the ``dashboard`` console script."""
import sys

from dashboard.cli import main

sys.exit(main())

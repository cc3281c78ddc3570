"""``python -m zdt_backfill``: the same CLI as the ``zdt-backfill`` console script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

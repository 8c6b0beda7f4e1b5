"""`python -m fastsock bench|info`: the same commands as the `fastsock` console script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

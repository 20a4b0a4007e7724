"""``python -m streamssm ...``: the same command line as the ``streamssm`` script."""

import sys

from streamssm.cli import main

if __name__ == "__main__":
    sys.exit(main())

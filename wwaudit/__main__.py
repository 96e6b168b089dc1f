"""Allow ``python -m wwaudit``."""

import sys

from wwaudit.cli.main import main

if __name__ == "__main__":
    sys.exit(main())

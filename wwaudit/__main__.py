"""Allow ``python -m wwaudit``."""

import sys

from wwaudit.cli import main

sys.exit(main())

"""Allow ``python -m wwaudit``."""

import sys

from wwaudit.cli.main import main

sys.exit(main())

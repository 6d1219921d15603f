"""``python -m purejaxppo``: the ``purejaxppo`` command."""

import sys

from purejaxppo.app.cli import main

sys.exit(main())

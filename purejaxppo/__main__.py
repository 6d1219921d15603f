"""``python -m purejaxppo``: the ``purejaxppo`` command."""

import sys

from purejaxppo.cli import main

sys.exit(main())

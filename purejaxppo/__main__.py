"""``python -m purejaxppo``: the ``purejaxppo`` command."""

from purejaxppo.app.cli import run

run()

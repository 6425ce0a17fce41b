"""``python -m imgshard`` is the ``imgshard`` command."""

from .cli import main

main()

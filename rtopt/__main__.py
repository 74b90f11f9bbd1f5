"""``python -m rtopt``: the same as the ``rtopt`` command."""

from rtopt.cli import main

main()

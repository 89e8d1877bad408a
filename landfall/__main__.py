"""``python -m landfall``: the same as the ``landfall`` command."""

from landfall.cli import main

main()

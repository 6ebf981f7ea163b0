"""``python -m pgq.cli``: the ``pgq`` command without its console script."""

from pgq.cli import main

main()

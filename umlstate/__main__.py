"""``python -m umlstate``: the same entry point as the console script."""

from umlstate.cli.quick import main

main()

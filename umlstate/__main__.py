"""``python -m umlstate``: the same entry point as the console script."""

from umlstate.cli.main import main

main()

"""``python -m tuning`` runs the command line."""

from tuning.cli import main

main()

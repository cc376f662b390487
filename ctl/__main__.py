"""``python -m ctl ...`` runs maoctl."""

from ctl.cli import main

main()

"""`python -m mailstack` runs the CLI."""

from mailstack.cli import main

main()

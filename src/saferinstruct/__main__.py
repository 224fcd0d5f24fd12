"""`python -m saferinstruct` = the `safer-instruct` command."""

from .cli import main

main()

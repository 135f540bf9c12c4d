"""`python -m shopmind`: the command line (the same as the `shopmind` script and `python -m shopmind.cli`)."""

from .cli import app

app()

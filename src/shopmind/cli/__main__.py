"""`python -m shopmind.cli`: run the command line."""

from . import app

app()

"""``python -m nnopt`` runs the command line."""

from nnopt.cli import app

app()

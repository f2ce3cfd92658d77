"""Entry point for ``python -m rnnfc_cli``."""

from rnnfc_cli.cli import run

run()

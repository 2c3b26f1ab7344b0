"""`ascend tiny` (not yet built)."""

import typer


def register(app: typer.Typer) -> None:
    """Placeholder until this subcommand lands; registers nothing."""

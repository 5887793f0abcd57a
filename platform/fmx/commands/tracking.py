"""`fmx compare` and `fmx ui` (stub: filled in by its owner)."""
import typer


def register(app: typer.Typer) -> None:
    """Add the top-level tracking commands to the main app."""

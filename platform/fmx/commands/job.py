"""`fmx job` sub-commands (stub: filled in by its owner)."""
import typer

app = typer.Typer(help="job commands", no_args_is_help=True)

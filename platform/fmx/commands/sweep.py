"""`fmx sweep` sub-commands (stub: filled in by its owner)."""
import typer

app = typer.Typer(help="sweep commands", no_args_is_help=True)

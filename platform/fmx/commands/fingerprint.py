"""`fmx fingerprint` sub-commands (stub: filled in by its owner)."""
import typer

app = typer.Typer(help="fingerprint commands", no_args_is_help=True)

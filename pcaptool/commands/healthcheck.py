"""`pcaptool healthcheck` (placeholder until its issue lands)."""

import typer

app = typer.Typer(help="Readiness signal for Cloud Run's TCP startup probe.", no_args_is_help=True)


@app.command()
def serve() -> None:
    """Not built yet."""
    raise typer.Exit(1)

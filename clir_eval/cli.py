"""Command-line interface: parsing and printing only; the work lives in the packages.

Each command imports what it needs inside its body, so ``clir-eval --help`` stays fast.
"""

from __future__ import annotations

import logging

import typer

app = typer.Typer(help="Build and judge cross-lingual retrieval for low-resource languages.", no_args_is_help=True)


@app.callback()
def _configure(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()

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


models_app = typer.Typer(help="Built-in offline models and how names resolve.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list() -> None:
    """List the built-in model names (any Hugging Face id or local path works too)."""
    from rich.console import Console
    from rich.table import Table

    from clir_eval.models.registry import BUILTIN_MODELS

    table = Table("name", "source", "pooling", "normalize", "query prefix", "passage prefix", "max length")
    for name, spec in sorted(BUILTIN_MODELS.items()):
        e = spec.encoder
        table.add_row(name, spec.location, e.pooling, str(e.normalize), repr(e.query_prefix), repr(e.passage_prefix),
                      str(e.max_length))
    Console().print(table)


@models_app.command("provision")
def models_provision() -> None:
    """Make every built-in model loadable offline (converts multilingual-e5-small once, then caches)."""
    from rich.console import Console

    from clir_eval.models.registry import BUILTIN_MODELS

    console = Console()
    for name, spec in sorted(BUILTIN_MODELS.items()):
        console.print(f"{name}: {spec.local_path()}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

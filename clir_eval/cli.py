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


collections_app = typer.Typer(help="Built-in and bring-your-own CLIR collections.", no_args_is_help=True)
app.add_typer(collections_app, name="collections")


def _fail(lines: list[str]) -> None:
    """Bad input: one clear line per problem on stderr (``file:line: message``), exit code 2, no traceback."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True)
    for line in lines:
        console.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _error_lines(exc: Exception) -> list[str]:
    if isinstance(exc, KeyError) and exc.args:
        return [str(exc.args[0])]
    return list(getattr(exc, "errors", None) or [str(exc)])


@collections_app.command("list")
def collections_list(
    name: list[str] = typer.Argument(None, help="Collections to show (built-in names or directories); default: all built-ins."),
) -> None:
    """Table of every collection, split and language: group, #queries, #docs, #relevant judgements."""
    from rich.console import Console
    from rich.table import Table

    from clir_eval.collections.registry import list_collections, load_collection
    from clir_eval.collections.summary import summarize
    from clir_eval.collections.validation import CollectionValidationError
    from clir_eval.io import InputFileError

    table = Table("collection", "split", "language", "group", "#queries", "#docs", "#qrels (relevant)")
    try:
        for item in name or list_collections():
            for row in summarize(load_collection(item, validate=False)):
                table.add_row(row.collection, row.split, row.lang, row.group, f"{row.num_queries:,}",
                              f"{row.num_documents:,}", f"{row.num_relevant:,}")
    except (InputFileError, CollectionValidationError, KeyError) as exc:
        _fail(_error_lines(exc))
    Console().print(table)


@collections_app.command("validate")
def collections_validate(
    directory: str = typer.Argument(..., help="A collection directory (or a built-in name)."),
    strict: bool = typer.Option(False, "--strict", help="Treat warnings as errors."),
) -> None:
    """Check every file of a collection and their consistency; exit code 2 on errors."""
    from rich.console import Console

    from clir_eval.collections.registry import load_collection
    from clir_eval.collections.validation import validate_collection
    from clir_eval.io import InputFileError

    try:
        collection = load_collection(directory, validate=False)
        report = validate_collection(collection, strict=strict)
    except (InputFileError, KeyError) as exc:
        _fail(_error_lines(exc))
    from rich.markup import escape

    console = Console()
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False, soft_wrap=True)
    if not report.ok:
        _fail(list(report.errors))
    queries = ", ".join(f"{split}: " + " ".join(f"{lang}={n}" for lang, n in sorted(by_lang.items()))
                        for split, by_lang in report.num_topics.items())
    console.print(f"[green]ok:[/green] {escape(collection.name)}: {report.num_documents:,} documents; queries {queries}; "
                  f"relevant judgements " + ", ".join(f"{s}={n:,}" for s, n in report.num_relevant.items()),
                  highlight=False, soft_wrap=True)


@collections_app.command("build")
def collections_build(
    source: str = typer.Option(..., "--source", help="Folder holding xquad-r/, ntrex/ and lafand/ (the original data)."),
    dest: str = typer.Option(None, "--dest", help="Data root to write into (default: $CLIR_EVAL_DATA or the repository)."),
) -> None:
    """Maintainer command: convert the original datasets into the committed collections (deterministic)."""
    from rich.console import Console

    from clir_eval.collections.converters import build_builtin
    from clir_eval.io import InputFileError

    try:
        counts = build_builtin(source, dest)
    except InputFileError as exc:
        _fail(_error_lines(exc))
    console = Console()
    for name, values in counts.items():
        console.print(f"{name}: {values}", highlight=False, soft_wrap=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

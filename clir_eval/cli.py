"""Command-line interface: parsing and printing only; the work lives in the packages.

Each command imports what it needs inside its body, so ``clir-eval --help`` stays fast.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Callable, NoReturn

import typer

app = typer.Typer(help="Build and judge cross-lingual retrieval for low-resource languages.", no_args_is_help=True)
# Set by the callback on every invocation; read by the error path of the command that follows.
_settings = {"debug": False}
_PACKAGE = Path(__file__).resolve().parent


def _print_version(value: bool) -> None:
    if not value:
        return
    import importlib.metadata

    try:
        version = importlib.metadata.version("clir-eval")
    except importlib.metadata.PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
        from clir_eval import __version__ as version
    typer.echo(f"clir-eval {version}")
    raise typer.Exit()


@app.callback()
def _configure(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of every error, bad input included."),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the installed version and exit."),
) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    _settings["debug"] = debug
    # Logs go to stderr: stdout carries only a command's result (evaluate --json must stay parseable).
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)],
    )
    logging.captureWarnings(True)  # third-party warnings become log records on the same stderr handler


def _user_errors(command: Callable[..., None]) -> Callable[..., None]:
    """The one error path of the commands: a user mistake becomes ``error: ...`` lines and exit code 2.

    Anything else is a bug and keeps its traceback; ``--debug`` shows the traceback of user mistakes too.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except Exception as exc:
            if _settings["debug"] or not _is_user_error(exc):
                raise
            _fail(_error_lines(exc))

    return wrapper


def _is_user_error(exc: Exception) -> bool:
    """Bad input rather than a bug: a path that is missing, unreadable or of the wrong kind, or a
    ``ValueError``/``KeyError`` raised by this package's own checks (``InputFileError``, ``ConfigError``,
    ``LeakageError``, registry look-ups, ... ); the same types raised inside a library are bugs."""
    from clir_eval.io import REFUSED_ERRNOS

    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return exc.filename is not None
    if isinstance(exc, OSError) and exc.errno in REFUSED_ERRNOS:  # disk full, read-only: the path given
        return exc.filename is not None
    from clir_eval.models.loading import ModelNotAvailableError

    if isinstance(exc, ModelNotAvailableError):  # a model id that is neither cached nor downloadable here
        return True
    if not isinstance(exc, (ValueError, KeyError)):
        return False
    trace = exc.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    return trace is not None and Path(trace.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE)


def _fail(lines: list[str]) -> NoReturn:
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
    if isinstance(exc, OSError) and exc.filename is not None:
        return [f"{exc.filename}: {exc.strerror or exc}"]
    return list(getattr(exc, "errors", None) or [str(exc)])


models_app = typer.Typer(help="Built-in offline models and how names resolve.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
@_user_errors
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
@_user_errors
def models_provision() -> None:
    """Make every built-in model loadable offline (converts multilingual-e5-small once, then caches)."""
    from rich.console import Console

    from clir_eval.models.registry import BUILTIN_MODELS

    console = Console()
    for name, spec in sorted(BUILTIN_MODELS.items()):
        console.print(f"{name}: {spec.local_path()}")


@app.command("run")
@_user_errors
def run_command(
    config: Path = typer.Argument(None, help="Study config (YAML); default: configs/default.yaml."),
    full: bool = typer.Option(False, "--full", help="Run configs/full.yaml: all the bitext, more languages (hours on a CPU)."),
    output_dir: Path = typer.Option(None, "--output-dir", "-o", help="Override the config's output_dir."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Step cache (default: $CLIR_EVAL_CACHE/steps)."),
) -> None:
    """Run a whole study: students, indexes, runs, significance-tested leaderboards and the HTML report."""
    import shlex
    import sys

    from rich.console import Console
    from rich.markdown import Markdown

    from clir_eval.experiment.config import FULL_CONFIG, load_config
    from clir_eval.experiment.runner import run_study

    if full and config is not None:
        _fail([f"give a CONFIG or --full, not both (--full runs {FULL_CONFIG})"])
    if full:
        config = FULL_CONFIG
    from clir_eval.experiment.schema import ConfigError
    from clir_eval.io import InputFileError, check_output_path

    # The cache is written too: its problem is reported with the config's, all before any step.
    errors = []
    if cache_dir is not None:
        try:
            check_output_path(cache_dir, directory=True)
        except InputFileError as exc:
            errors.append(f"--cache-dir: {exc}")
    try:
        study = load_config(config, overrides={"output_dir": str(output_dir)} if output_dir else None)
    except ConfigError as exc:
        raise ConfigError(*errors, *exc.errors) from None
    if errors:
        raise ConfigError(*errors)
    result = run_study(study, cache_root=cache_dir, command=shlex.join(["clir-eval", *sys.argv[1:]]))
    console = Console()
    for name, markdown in result.leaderboards.items():
        console.rule(name)
        console.print(Markdown(markdown))
    computed = result.computed_steps
    console.print(f"{len(result.steps) + 1} steps, {computed} computed, {len(result.steps) + 1 - computed} cached; "
                  f"{result.seconds:.0f} s")
    console.print(f"report: {result.report}\nmanifest: {result.manifest}")


collections_app = typer.Typer(help="Built-in and bring-your-own CLIR collections.", no_args_is_help=True)
app.add_typer(collections_app, name="collections")


@collections_app.command("list")
@_user_errors
def collections_list(
    name: list[str] = typer.Argument(None, help="Collections to show (built-in names or directories); default: all built-ins."),
) -> None:
    """Table of every collection, split and language: group, #queries, #docs, #relevant judgements."""
    from rich.console import Console
    from rich.table import Table

    from clir_eval.collections.registry import list_collections, load_collection, where_builtins_are
    from clir_eval.collections.summary import summarize

    names = name or list_collections()
    if not names:  # never an empty table: say where the built-ins were looked for
        _fail([f"no built-in collections: {where_builtins_are()}"])
    table = Table("collection", "split", "language", "group", "#queries", "#docs", "#qrels (relevant)")
    for item in names:
        for row in summarize(load_collection(item, validate=False)):
            table.add_row(row.collection, row.split, row.lang, row.group, f"{row.num_queries:,}",
                          f"{row.num_documents:,}", f"{row.num_relevant:,}")
    Console().print(table)


@collections_app.command("validate")
@_user_errors
def collections_validate(
    directory: str = typer.Argument(..., help="A collection directory (or a built-in name)."),
    strict: bool = typer.Option(False, "--strict", help="Treat warnings as errors."),
) -> None:
    """Check every file of a collection and their consistency; exit code 2 on errors."""
    from rich.console import Console

    from clir_eval.collections.registry import load_collection
    from clir_eval.collections.validation import validate_collection

    collection = load_collection(directory, validate=False)
    report = validate_collection(collection, strict=strict)
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
@_user_errors
def collections_build(
    source: str = typer.Option(..., "--source", help="Folder holding xquad-r/, ntrex/ and lafand/ (the original data)."),
    dest: str = typer.Option(None, "--dest", help="Data root to write into (default: $CLIR_EVAL_DATA, else the package data: the repository's folders in a checkout)."),
) -> None:
    """Maintainer command: convert the original datasets into the committed collections (deterministic)."""
    from rich.console import Console

    from clir_eval.collections.converters import build_builtin
    from clir_eval.io import check_output_path

    if dest is not None:
        check_output_path(dest, directory=True)
    counts = build_builtin(source, dest)
    console = Console()
    for name, values in counts.items():
        console.print(f"{name}: {values}", highlight=False, soft_wrap=True)


# ---- evaluation: evaluate, compare, report (clir_eval.evaluation) ------------------------------------------

_DEFAULT_METRICS = ["map", "ndcg@10", "recall@100", "mrr"]
_METRICS_HELP = ("Metric (ranx names: map, ndcg@10, precision@10, recall@100, mrr, r-precision, bpref, ...); "
                 "repeat the option or separate with commas.")


_TREC_EVAL_HELP = ("Score precision of the trec_eval reproduced: 9 = float32, as trec_eval 9.x and pytrec_eval "
                   "(near-equal scores tie, ties break by docid); 10 = double, as trec_eval 10.0.")


def _eval_metrics(values: list[str]) -> list[str]:
    return [name for value in values for name in value.replace(",", " ").split()]


def _eval_load(qrels_path: Path, runs: list[Path], names: list[str] | None) -> tuple[dict, dict]:
    """Read the qrels and the runs (named by file stem unless --name is given)."""
    from clir_eval.collections.readers import read_qrels
    from clir_eval.evaluation.evaluate import qrels_from_records
    from clir_eval.retrieval.runs import read_run

    from clir_eval.evaluation.metrics import parse_metric
    from clir_eval.io import InputFileError

    for path in [qrels_path, *runs]:
        if path.is_dir():
            raise InputFileError(path, None, f"is a directory, expected a {'qrels' if path is qrels_path else 'run'} file")
        if not path.is_file():
            hint = ""
            try:  # `--metrics map ndcg@10`: options take one value, so ndcg@10 landed among the runs
                parse_metric(str(path))
                hint = "; it looks like a metric: give several as --metrics map,ndcg@10 or repeat --metrics"
            except ValueError:
                pass
            raise InputFileError(path, None, f"no such file{hint}")
    if names and len(names) != len(runs):
        raise ValueError(f"--name given {len(names)} times for {len(runs)} runs")
    labels = list(names) if names else [path.name.removesuffix(".gz").rsplit(".", 1)[0] for path in runs]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"two runs would share the name(s) {repeated}; name them with --name")
    qrels = qrels_from_records(read_qrels(qrels_path))
    return qrels, {label: read_run(path) for label, path in zip(labels, runs)}


@app.command("evaluate")
@_user_errors
def evaluate_command(
    runs: list[Path] = typer.Argument(..., help="TREC run files."),
    qrels: Path = typer.Option(..., "--qrels", help="TREC qrels file."),
    metrics: list[str] = typer.Option(_DEFAULT_METRICS, "--metrics", "-m", help=_METRICS_HELP),
    names: list[str] = typer.Option(None, "--name", help="Name of each run, in order (default: file stem)."),
    per_query: bool = typer.Option(False, "--per-query", help="Also give every query's score (like trec_eval -q)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON {run: {metric: mean}} at full precision."),
    trec_eval_version: int = typer.Option(9, "--trec-eval", help=_TREC_EVAL_HELP),
    judged_queries_only: bool = typer.Option(
        False, "--judged-queries-only",
        help="Average over queries in both run and qrels (plain trec_eval); default: every qrels query, "
             "missing = 0 (trec_eval -c)."),
) -> None:
    """trec_eval-exact metrics of one or more runs."""
    import json

    from rich.console import Console
    from rich.table import Table

    from clir_eval.evaluation.evaluate import check_trec_eval_version, evaluate_runs

    check_trec_eval_version(trec_eval_version)
    qrels_dict, run_dicts = _eval_load(qrels, runs, names)
    result = evaluate_runs(qrels_dict, run_dicts, _eval_metrics(metrics), judged_queries_only=judged_queries_only,
                           trec_eval_version=trec_eval_version)
    if as_json:
        typer.echo(json.dumps(result.to_json_dict(per_query=per_query), indent=2))
        return
    if per_query:
        for line in result.trec_eval_lines():
            typer.echo(line)
        return
    table = Table("run", *result.metrics, "#queries")
    for run in result.runs:
        table.add_row(run, *(f"{result.means[run][m]:.4f}" for m in result.metrics), str(result.num_queries[run]))
    Console().print(table)


@app.command("compare")
@_user_errors
def compare_command(
    runs: list[Path] = typer.Argument(..., help="TREC run files."),
    qrels: Path = typer.Option(..., "--qrels", help="TREC qrels file."),
    baselines: list[str] = typer.Option(..., "--baseline", help="Run name to test the others against (repeatable)."),
    metrics: list[str] = typer.Option(_DEFAULT_METRICS, "--metrics", "-m", help=_METRICS_HELP),
    names: list[str] = typer.Option(None, "--name", help="Name of each run, in order (default: file stem)."),
    test: str = typer.Option("t", "--test", help="Paired test: t | randomization."),
    correction: str = typer.Option("holm", "--correction", help="Multiple-comparison correction: holm | bonferroni | none."),
    alpha: float = typer.Option(0.05, "--alpha", help="Family-wise significance level."),
    seed: int = typer.Option(42, "--seed", help="Seed of the randomization test and the bootstrap CIs."),
    n_resamples: int = typer.Option(10_000, "--resamples", help="Resamples for randomization test and bootstrap."),
    family: str = typer.Option("table", "--family", help="What one correction covers: table (every test) | metric "
                                                         "(each metric's tests on their own)."),
    title: str = typer.Option("", "--title", help="Leaderboard caption."),
    exclude_from_best: list[str] = typer.Option(None, "--not-best", help="Run never set in bold (e.g. an oracle)."),
    judged_queries_only: bool = typer.Option(False, "--judged-queries-only", help="As for evaluate."),
    trec_eval_version: int = typer.Option(9, "--trec-eval", help=_TREC_EVAL_HELP),
    out: Path = typer.Option(None, "--out", help="Directory for leaderboard.{md,tex,csv,json,html}, tests.csv, "
                                                 "per_query.csv and figures/ (default: print only)."),
) -> None:
    """Significance-tested leaderboard: every run against each baseline, corrected over the table (or per metric)."""
    from rich.console import Console
    from rich.markdown import Markdown

    from clir_eval.evaluation.comparison import CompareConfig, compare_systems
    from clir_eval.evaluation.evaluate import check_trec_eval_version, evaluate_runs
    from clir_eval.evaluation.leaderboard import build_leaderboard
    from clir_eval.evaluation.plots import difference_figure, save_figure
    from clir_eval.io import check_output_path, inside, safe_filename, staged_outputs, write_csv

    if out is not None:
        check_output_path(out, directory=True)
    config = CompareConfig(baselines=tuple(baselines), test=test, correction=correction, alpha=alpha, seed=seed,
                           n_resamples=n_resamples, family=family)
    check_trec_eval_version(trec_eval_version)
    qrels_dict, run_dicts = _eval_load(qrels, runs, names)
    result = evaluate_runs(qrels_dict, run_dicts, _eval_metrics(metrics), judged_queries_only=judged_queries_only,
                           trec_eval_version=trec_eval_version)
    comparison = compare_systems(result, config)
    board = build_leaderboard(result, comparison, title=title, exclude_from_best=exclude_from_best or ())
    console = Console()
    console.print(Markdown(board.to_markdown().replace("<sup>", "^").replace("</sup>", "")))
    if out is None:
        return
    with staged_outputs(out) as stage:  # all files or none, whatever the disk says
        written = board.save(stage)
        written.append(write_csv(comparison.to_dataframe(), stage / "tests.csv"))
        written.append(write_csv(result.per_query_dataframe(), stage / "per_query.csv"))
        primary = result.metrics[0]
        for baseline in config.baselines:
            for system in result.runs:
                if system != baseline:
                    figure = difference_figure(result.per_query[baseline][primary],
                                               result.per_query[system][primary],
                                               metric=primary, system=system, baseline=baseline)
                    stem = safe_filename(f"diff_{system}_vs_{baseline}_{primary}")
                    written += save_figure(figure, inside(stage, stage / "figures" / stem))
    console.print(f"wrote {len(written)} files to {out}", highlight=False)


@app.command("report")
@_user_errors
def report_command(
    results_dir: Path = typer.Argument(..., help="Results directory (manifest.json and/or <collection>/<lang>/*.run)."),
    out: Path = typer.Option(None, "--out", help="HTML file to write (default: RESULTS_DIR/report.html)."),
    assets: Path = typer.Option(None, "--assets", help="Directory for the figures (PNG, PDF) and tables (Markdown, "
                                                       "LaTeX, CSV, JSON) of the report (default: RESULTS_DIR/report)."),
    metrics: list[str] = typer.Option(None, "--metrics", "-m", help=_METRICS_HELP + " Default: the manifest's."),
    baselines: list[str] = typer.Option(None, "--baseline", help="Baseline run name (default: the manifest's)."),
    oracle: str = typer.Option(None, "--oracle", help="Oracle system of the gap analysis (default: the manifest's)."),
    test: str = typer.Option(None, "--test", help="t | randomization (default: manifest, else t)."),
    correction: str = typer.Option(None, "--correction", help="holm | bonferroni | none (default: manifest, else holm)."),
    alpha: float = typer.Option(None, "--alpha", help="Significance level (default: manifest, else 0.05)."),
    seed: int = typer.Option(None, "--seed", help="Seed (default: manifest, else 42)."),
    family: str = typer.Option(None, "--family", help="table | metric (default: manifest, else table)."),
    judged_queries_only: bool = typer.Option(False, "--judged-queries-only", help="As for evaluate."),
    trec_eval_version: int = typer.Option(None, "--trec-eval", help=_TREC_EVAL_HELP + " Default: the manifest's, else 9."),
) -> None:
    """One self-contained HTML report: leaderboards, significance, gap analysis, plots, provenance."""
    from rich.console import Console

    from clir_eval.evaluation.evaluate import check_trec_eval_version
    from clir_eval.evaluation.manifest import read_results
    from clir_eval.evaluation.report import build_report, write_report
    from clir_eval.io import check_output_path

    out = check_output_path(out or results_dir / "report.html")
    assets = check_output_path(assets or results_dir / "report", directory=True)
    report = build_report(
        read_results(results_dir), metrics=_eval_metrics(metrics) if metrics else None, baselines=baselines or None,
        oracle=oracle, test=test, correction=correction, alpha=alpha, seed=seed, family=family,
        judged_queries_only=judged_queries_only,
        trec_eval_version=None if trec_eval_version is None else check_trec_eval_version(trec_eval_version),
    )
    path = write_report(report, out, assets=assets)
    Console().print(f"wrote {path}", highlight=False)


@app.command("trend")
@_user_errors
def trend_command(
    results_dir: Path = typer.Argument(..., help="Results directory (manifest.json and/or runs/<collection>/<lang>/*.run)."),
    start: str = typer.Option(..., "--start", help="The start system: [LABEL=]NAME; {lang} is each language's code."),
    methods: list[str] = typer.Option(None, "--method", help="A method system, [LABEL=]NAME (repeatable); "
                                                             "'{lang}-kd' is sw-kd on sw. Label: NAME less {lang}."),
    contrasts: list[str] = typer.Option(None, "--contrast", help="TREATMENT:CONTROL labels (repeatable), e.g. kd+ot:kd."),
    metric: str = typer.Option("mrr", "--metric", "-m", help="The one metric analysed (ranx name)."),
    collection: str = typer.Option(None, "--collection", help="Collection (default: the only one)."),
    languages: list[str] = typer.Option(None, "--lang", help="Language to include (repeatable; default: all)."),
    via: list[str] = typer.Option(None, "--via", help="LANG=CODE (repeatable): on LANG, {lang} is CODE, e.g. "
                                                      "am=ha reads ha-kd on am (a zero-shot language)."),
    test: str = typer.Option("randomization", "--test", help="Per-language paired test: randomization | t."),
    correction: str = typer.Option("holm", "--correction", help="Over the languages of each effect: holm | bonferroni | none."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level."),
    seed: int = typer.Option(42, "--seed", help="Seed of every resample and permutation."),
    n_resamples: int = typer.Option(10_000, "--resamples", help="Resamples for the tests, the intervals and the trend."),
    trec_eval_version: int = typer.Option(9, "--trec-eval", help=_TREC_EVAL_HELP),
    out: Path = typer.Option(None, "--out", help="Directory for trend.{md,csv,json}, trend-fit.csv and trend.{png,pdf} "
                                                 "(default: RESULTS_DIR/trend)."),
) -> None:
    """Gain against the start, per language, and its trend on the start's score (does a method help more
    where the backbone is weaker?)."""
    from rich.console import Console
    from rich.markdown import Markdown

    from clir_eval.evaluation.evaluate import check_trec_eval_version
    from clir_eval.evaluation.manifest import read_results
    from clir_eval.evaluation.plots import save_figure, trend_figure
    from clir_eval.evaluation.trend import TrendConfig, trend_from_results
    from clir_eval.io import check_output_path, staged_outputs

    routes = {}
    for spec in via or []:
        lang, sep, code = spec.partition("=")
        if not sep or not lang or not code or lang == code:
            raise ValueError(f"--via {spec!r}: give it as LANG=CODE with two different codes, e.g. am=ha")
        routes[lang] = code
    out = check_output_path(out or results_dir / "trend", directory=True)
    config = TrendConfig(test=test, correction=correction, alpha=alpha, seed=seed, n_resamples=n_resamples)
    analysis = trend_from_results(
        read_results(results_dir), start=start, methods=methods or [], contrasts=contrasts or [],
        metric=_eval_metrics([metric])[0] if metric else "mrr", collection=collection, languages=languages or None,
        config=config, trec_eval_version=check_trec_eval_version(trec_eval_version), via=routes,
    )
    console = Console()
    console.print(Markdown(analysis.to_markdown()))
    with staged_outputs(out) as stage:  # all files or none
        written = analysis.save(stage)
        written += save_figure(trend_figure(analysis), stage / "trend")
    console.print(f"wrote {len(written)} files to {out}", highlight=False)


_SYSTEMS_HELP = ("bm25-psq | bm25-oracle | bm25-translated:<tsv> | bm25-mt:<model> | teacher | student:<dir> | "
                 "me5-small | oracle-dense | hybrid")


@app.command("search")
@_user_errors
def search_command(
    system: str = typer.Option(..., "--system", "-s", help=_SYSTEMS_HELP),
    collection: str = typer.Option(..., "--collection", "-c", help="Built-in collection name or directory."),
    lang: str = typer.Option(..., "--lang", "-l", help="Query language."),
    split: str = typer.Option("test", "--split", help="Topics split."),
    hits: int = typer.Option(1000, "--hits", help="Hits per query."),
    out: Path = typer.Option(None, "--out", help="Run file (default: runs/<collection>/<lang>/<system>.run)."),
    tag: str = typer.Option(None, "--tag", help="Run tag (default: the system name)."),
    teacher: str = typer.Option("minilm-l6", "--teacher", help="Teacher model (its index serves teacher/student/oracle-dense)."),
    index_dir: Path = typer.Option(None, "--index-dir", help="Index cache for this collection (default: <cache>/indexes/<collection>-<corpus hash>)."),
    k1: float = typer.Option(0.9, "--k1", help="BM25 k1."),
    b: float = typer.Option(0.4, "--b", help="BM25 b."),
    fusion: str = typer.Option("rrf", "--fusion", help="hybrid: rrf | wsum."),
    fuse_sparse: str = typer.Option("bm25-psq", "--fuse-sparse", help="hybrid: the BM25 system."),
    fuse_dense: str = typer.Option("me5-small", "--fuse-dense", help="hybrid: the dense system."),
    threads: int = typer.Option(0, "--threads", help="Search threads (BM25, Faiss) and torch threads; "
                                                     "0 = the machine's cores (torch: its default)."),
    factory: str = typer.Option("Flat", "--factory", help="Dense systems: the Faiss index_factory string of the "
                                                          "index, e.g. 'IVF4096,SQ8' (built once, beside flat)."),
    nprobe: int = typer.Option(64, "--nprobe", help="Dense systems: IVF lists visited per query."),
    ef_search: int = typer.Option(128, "--ef-search", help="Dense systems: HNSW search beam."),
    k_factor: int = typer.Option(4, "--k-factor", help="Dense systems: candidates per hit that a refined index "
                                                       "(...,Refine(SQ8)) re-scores."),
    backend: str = typer.Option("torch", "--backend", help="Dense systems: what encodes the documents when the index "
                                                           "is built: torch | openvino (CPU, fp32)."),
) -> None:
    """Write one TREC run of SYSTEM for the LANG topics of a collection (indexes built once and cached)."""
    import os
    import time

    import torch
    from rich.console import Console

    from clir_eval.collections.registry import load_collection
    from clir_eval.io import check_output_path
    from clir_eval.retrieval.bm25 import Bm25Config
    from clir_eval.retrieval.dense import DenseIndexConfig
    from clir_eval.retrieval.fusion import FusionConfig
    from clir_eval.retrieval.runs import check_tag
    from clir_eval.retrieval.systems import (
        IndexDirs, SystemOptions, default_index_dirs, default_run_path, parse_system, run_system,
    )

    if threads < 0:
        _fail([f"--threads must be >= 0 (0 = the machine's cores), got {threads}"])
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    if out is not None:  # before the collection is read; the default path needs the collection's name
        check_output_path(out)
    spec = parse_system(system)
    coll = load_collection(collection)
    dense_index = DenseIndexConfig(factory=factory, nprobe=nprobe, hnsw_ef_search=ef_search,
                                   refine_k_factor=k_factor, backend=backend)
    options = SystemOptions(
        teacher=teacher, bm25=Bm25Config(k1=k1, b=b, threads=threads),
        search_threads=threads or os.cpu_count() or 1, show_progress=True,
        fusion=FusionConfig(method=fusion, sparse=fuse_sparse, dense=fuse_dense), dense_index=dense_index,
    )
    indexes = IndexDirs.under(index_dir) if index_dir else default_index_dirs(coll)
    # Everything that would fail only when the run is written is checked before the search.
    out_path = check_output_path(out or default_run_path("runs", coll.name, lang, spec))
    check_tag(tag or spec.name)
    coll.topics_path(lang, split)
    path = run_system(spec, coll, lang, split, indexes=indexes, hits=hits, tag=tag, options=options,
                      out_path=out_path)
    Console().print(f"wrote {path} ({time.perf_counter() - start:.1f} s)", highlight=False)


@app.command("regressions")
def regressions_command(
    names: list[str] = typer.Argument(None, help="Specs (regressions/<name>.yaml, or a path); default: all."),
    lang: list[str] = typer.Option(None, "--lang", "-l", help="Only these languages (repeatable); with --record, "
                                                               "one the spec lacks is added to it."),
    system: list[str] = typer.Option(None, "--system", "-s", help="Only these systems (repeatable)."),
    ci: bool = typer.Option(False, "--ci", help="Only each spec's CI subset (a couple of minutes)."),
    record: bool = typer.Option(False, "--record", help="Write the measured scores into the specs as the "
                                                        "expected ones (with date, commit and versions)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where the regenerated runs go."),
    doc: Path = typer.Option(None, "--doc", help="Only rewrite the generated score tables of this page (e.g. "
                                                 "docs/results.md) from the specs' expected scores; runs nothing."),
) -> None:
    """Regenerate runs and check their scores against the committed expected ones; exit code 1 on any miss."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from clir_eval.regressions import SpecError, check_selection, extend, load_specs, run_regressions
    from clir_eval.regressions import record as record_scores

    if doc is not None:
        from clir_eval.regressions_doc import update_page

        try:
            changed = update_page(doc)
        except SpecError as exc:
            _fail(_error_lines(exc))
        Console().print(f"{doc}: {len(changed)} table(s) rewritten" if changed else f"{doc}: up to date",
                        highlight=False)
        return
    from clir_eval.io import InputFileError, check_output_path

    try:
        check_output_path(runs_dir, directory=True)
        specs = load_specs(names or [])
        if record and lang:  # recording a language a spec lacks adds it (how a spec is extended)
            specs = [extend(spec, tuple(lang)) for spec in specs]
        check_selection(specs, tuple(lang or ()), tuple(system or ()), ci)
    except (SpecError, InputFileError) as exc:
        _fail(_error_lines(exc))
    result = run_regressions(specs, runs_root=runs_dir, languages=tuple(lang or ()), systems=tuple(system or ()),
                             ci=ci, record=record)
    colours = {"pass": "green", "fail": "red", "error": "red", "not recorded": "yellow"}
    console = Console()
    for spec in specs:  # one table per spec, narrow enough for an 80-column CI log
        checks = [check for check in result.checks if check.spec == spec.name]
        if not checks:
            continue
        table = Table("lang", "system", "metric", "expected", "measured", "tol.", "status", box=box.SIMPLE_HEAD,
                      title=f"{spec.name}: {spec.collection} {spec.split}")
        for check in checks:
            table.add_row(check.lang, check.system, check.metric,
                          "" if check.expected is None else f"{check.expected:.4f}",
                          "" if check.measured is None else f"{check.measured:.4f}", f"{check.tolerance:g}",
                          f"[{colours[check.status]}]{check.status}[/]")
        console.print(table)
    missed = {(c.spec, c.lang, c.system): c for c in result.failed if not (record and c.status == "fail")}
    for check in missed.values():  # one line per run, with the command to reproduce it
        console.print(f"[red]{check.status}:[/red] {check.spec} {check.lang} {check.system}: {check.command}"
                      + (f" -> {check.message}" if check.message else ""), highlight=False, soft_wrap=True)
    counts = {status: sum(c.status == status for c in result.checks) for status in colours}
    console.print(", ".join(f"{n} {status}" for status, n in counts.items() if n) + f" ({result.seconds:.0f} s)")
    if record:
        for spec in specs:
            if spec.name in result.scores:
                console.print(f"recorded {record_scores(spec, result.scores[spec.name])}", highlight=False)
    if missed:
        raise typer.Exit(code=1)


index_app = typer.Typer(help="Build the retrieval indexes of a collection (sharded dense encoding too).",
                        no_args_is_help=True)
app.add_typer(index_app, name="index")


@index_app.command("dense")
@_user_errors
def index_dense(
    collection: str = typer.Option(..., "--collection", "-c", help="Built-in collection name or directory."),
    model: str = typer.Option("minilm-l6", "--model", help="Document encoder (built-in name, directory or hub id)."),
    out: Path = typer.Option(None, "--out", help="Index directory (default: the cache's dense/<model>)."),
    kind: str = typer.Option("flat", "--kind", help="flat | hnsw (shorthands; --factory names any other index)."),
    factory: str = typer.Option(None, "--factory", help="Faiss index_factory string, e.g. 'IVF4096,PQ64', "
                                                        "'IVF1024,SQ8', 'HNSW32' (inner product)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Documents per encoder batch."),
    batch_tokens: int = typer.Option(None, "--batch-tokens", help="Padded tokens per encoder batch at most "
                                                                  "(default: 4096 on a CPU, no cap on a GPU)."),
    chunk_size: int = typer.Option(2048, "--chunk-size", help="Documents encoded and written to disk together "
                                                              "(the most a killed build loses)."),
    shard_id: int = typer.Option(None, "--shard-id", help="Encode only the chunks i with i % shard-num == shard-id "
                                                          "(manual parts; under torchrun/accelerate the rank says)."),
    shard_num: int = typer.Option(None, "--shard-num", help="Number of manual parts."),
    merge: bool = typer.Option(False, "--merge", help="Build the index from the parts encoded into --out.vectors."),
    keep_vectors: bool = typer.Option(False, "--keep-vectors", help="Keep --out.vectors to build other index kinds "
                                                                    "without encoding again."),
    vectors: Path = typer.Option(None, "--vectors", help="Where the encoded chunks live (default: --out.vectors); "
                                                         "a kept encoding builds another index without encoding."),
    threads: int = typer.Option(0, "--threads", help="Torch and Faiss threads (0: all cores)."),
    device: str = typer.Option(None, "--device", help="cpu | cuda | cuda:N (default: the launcher's device, "
                                                      "else cuda when there is one, else cpu)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | bf16 | fp16 (half precision on GPUs)."),
    backend: str = typer.Option("torch", "--backend", help="torch | openvino (CPU, fp32: several batches at once; "
                                                           "pip install 'clir-eval[openvino]')."),
) -> None:
    """Encode the corpus into a Pyserini-layout Faiss index (``index`` + ``docid``), streaming and resumable.

    Run it under ``torchrun --nproc-per-node N -m clir_eval index dense ...`` or ``accelerate launch -m clir_eval
    index dense ...`` to split the encoding over N processes (GPUs or CPU processes): each rank encodes its chunks
    and rank 0 builds the index.
    """
    from rich.console import Console

    from clir_eval.collections.readers import count_corpus_lines
    from clir_eval.collections.registry import load_collection
    from clir_eval.io import check_output_path, sha256_tree
    from clir_eval.retrieval.dense import (DenseIndexConfig, build_dense_index, encode_corpus,
                                           finalize_dense_index)
    from clir_eval.retrieval.systems import default_index_dirs

    if (shard_id is None) != (shard_num is None) and not (merge and shard_num is not None):
        _fail(["give both --shard-id and --shard-num (or --merge)"])
    if out is not None:  # before the collection is read
        check_output_path(out, directory=True)
    coll = load_collection(collection)
    config = DenseIndexConfig(kind=kind, factory=factory, batch_size=batch_size, batch_tokens=batch_tokens,
                              chunk_size=chunk_size,
                              build_threads=threads, keep_vectors=keep_vectors,
                              vectors=None if vectors is None else str(vectors), backend=backend)
    target = check_output_path(out or default_index_dirs(coll).dense_for(model), directory=True)
    if merge:
        info = finalize_dense_index(target, config, encoded_by=shard_num or 1)
    else:
        from clir_eval.launcher import default_device, launcher_part, set_threads
        from clir_eval.models.pyserini_adapters import DocumentEncoder

        count = set_threads(threads)
        part, barrier, launcher_device = launcher_part()
        # A bad --backend, or openvino with a GPU or half precision, is refused before the model loads.
        device = device or ("cpu" if backend == "openvino" else launcher_device or default_device())
        encoder = DocumentEncoder(model, batch_size, device, precision, batch_tokens, backend=backend, threads=count)
        sha = sha256_tree(coll.corpus_path)
        size = count_corpus_lines(coll.corpus_path)
        if shard_id is not None:
            encode_corpus(coll.documents(), model, target, config, corpus_sha256=sha, encoder=encoder,
                          part=(shard_id, shard_num), corpus_size=size, show_progress=True)
            Console().print(f"encoded part {shard_id} of {shard_num} into {target}.vectors; "
                            f"build the index with --merge --shard-num {shard_num}", highlight=False)
            return
        info = build_dense_index(coll.documents(), model, target, config, encoder=encoder, show_progress=True,
                                 corpus_sha256=sha, corpus_size=size, part=part, barrier=barrier)
        if part is not None and part[0] != 0:
            return
    state = "reused" if info.reused else "wrote"
    Console().print(f"{state} {info.path} ({info.num_docs} documents, dim {info.dim}, "
                    f"{info.meta.index['factory']})", highlight=False)


@index_app.command("lucene")
@_user_errors
def index_lucene(
    collection: str = typer.Option(..., "--collection", "-c", help="Built-in collection name or directory."),
    out: Path = typer.Option(None, "--out", help="Index directory (default: the cache's lucene/)."),
    threads: int = typer.Option(1, "--threads", help="Indexing threads (the same search results; one keeps "
                                                     "Lucene's document order equal to the corpus order)."),
) -> None:
    """Index the English corpus with Pyserini's LuceneIndexer (BM25), streaming it once."""
    from rich.console import Console

    from clir_eval.collections.registry import load_collection
    from clir_eval.io import check_output_path, sha256_tree
    from clir_eval.retrieval.bm25 import build_lucene_index
    from clir_eval.retrieval.systems import default_index_dirs

    if threads < 1:
        _fail([f"--threads must be >= 1, got {threads}"])
    if out is not None:  # before the collection is read
        check_output_path(out, directory=True)
    coll = load_collection(collection)
    target = check_output_path(out or default_index_dirs(coll).lucene, directory=True)
    info = build_lucene_index(coll.documents(), target, corpus_sha256=sha256_tree(coll.corpus_path), threads=threads)
    Console().print(f"{'reused' if info.reused else 'wrote'} {info.path} ({info.num_docs} documents)", highlight=False)


@app.command("distill")
@_user_errors
def distill_command(
    method: str = typer.Option(..., "--method", help="kd | ot | contrastive | kd+ot | kd+contrastive."),
    student: str = typer.Option(..., "--student", help="Student backbone: me5-small, minilm-l6 (teacher copy), HF id or dir."),
    teacher: str = typer.Option("minilm-l6", "--teacher", help="Teacher name or path."),
    bitext: str = typer.Option("lafand", "--bitext", help="Bitext source (lafand, ntrex)."),
    lang: str = typer.Option(..., "--lang", help="Foreign language code (e.g. sw)."),
    train_split: str = typer.Option("train", "--train-split", help="Bitext split to train on."),
    dev_split: str = typer.Option("dev", "--dev-split", help="Held-out bitext split ('' for none)."),
    max_pairs: int = typer.Option(0, "--max-pairs", help="A seeded random sample of N training pairs (--seed), "
                                                           "the same pairs as a study's max_pairs (0 = all)."),
    max_dev_pairs: int = typer.Option(500, "--max-dev-pairs", help="Use the first N dev pairs."),
    min_margin: float = typer.Option(0.0, "--min-margin", help="Drop training pairs whose ratio margin under the "
                                                              "student's backbone is lower, e.g. 1.0 (0 = keep all)."),
    steps: int = typer.Option(0, "--steps", help="Optimizer steps (0 = --epochs passes)."),
    epochs: int = typer.Option(1, "--epochs", help="Passes over the bitext when --steps is 0."),
    batch_size: int = typer.Option(32, "--batch-size", help="Pairs per micro-batch (all processes)."),
    lr: float = typer.Option(2e-5, "--lr", help="Peak learning rate."),
    seed: int = typer.Option(0, "--seed", help="Seed."),
    eval_every: int = typer.Option(0, "--eval-every", help="Dev evaluation every N steps (0 = at the end)."),
    checkpoint_every: int = typer.Option(100, "--checkpoint-every", help="Checkpoint every N steps (0 = at the end)."),
    option: list[str] = typer.Option(None, "--option", help="Extra DistillConfig/loss option KEY=JSON, e.g. "
                                                             "loss.ot_epsilon=0.1 or freeze_layers=2 (repeatable)."),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0 = torch's default)."),
    out: Path = typer.Option(..., "--out", help="Student directory (checkpoints go to OUT.checkpoints)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint."),
    leakage: str = typer.Option("error", "--leakage", help="Bitext pairs equal to a test topic of a built-in "
                                                           "collection: error | drop | allow (as in study configs)."),
) -> None:
    """Distil the teacher into a multilingual student query encoder from bitext."""
    from rich.console import Console

    from clir_eval.collections.bitext import load_bitext, sample_pairs, sample_seed
    from clir_eval.collections.leakage import builtin_test_topics, guard_bitext
    from clir_eval.distill.trainer import DistillConfig, distill
    from clir_eval.io import check_output_path
    from clir_eval.models.registry import check_model_name

    config = DistillConfig.from_dict({
        "method": method, "student": student, "teacher": teacher, "max_steps": steps, "epochs": epochs,
        "batch_size": batch_size, "lr": lr, "seed": seed, "eval_every": eval_every,
        "checkpoint_every": checkpoint_every, **_distill_options(option or []),
    })
    for option_name, model in (("--student", student), ("--teacher", teacher)):
        try:
            check_model_name(model)
        except ValueError as exc:
            raise ValueError(f"{option_name}: {exc}") from None
    if min_margin:
        from clir_eval.distill.filtering import check_min_margin

        try:
            check_min_margin(min_margin)
        except ValueError:
            raise ValueError(f"--min-margin must be in [0, 2) (0 = no filter, else a ratio margin such as 1.0), got "
                             f"{min_margin}") from None
    check_output_path(out, directory=True)
    # The trainer's checkpoints go beside the student (distill.checkpoints.checkpoint_dir).
    check_output_path(out.with_name(out.name + ".checkpoints"), directory=True)
    train = load_bitext(bitext, lang, train_split)
    train = sample_pairs(train, max_pairs or None, sample_seed(seed, lang, train_split))
    dev = load_bitext(bitext, lang, dev_split)[:max_dev_pairs] if dev_split else []
    topics = builtin_test_topics()
    train = list(guard_bitext(train, topics, leakage).pairs)
    dev = list(guard_bitext(dev, topics, leakage).pairs)
    if len(train) < config.batch_size:  # the trainer would refuse it too, but only after loading the models
        raise ValueError(f"{len(train)} training pairs ({bitext} {lang} {train_split}"
                         f"{f', --max-pairs {max_pairs}' if max_pairs else ''}) is fewer than one batch "
                         f"(--batch-size {config.batch_size}); give more pairs or a smaller batch")
    english = _english_for_start(bitext, config, leakage)
    if threads:
        import torch

        torch.set_num_threads(threads)
    if min_margin:
        train = _margin_filtered(train, student, min_margin, seed, config.batch_size)
    result = distill(config, train, dev, out, resume=resume, english=english)
    console = Console()
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in result.dev_metrics.items())
    console.print(f"student saved to {result.student_dir} after {result.steps} steps "
                  f"({result.pairs_per_second:.1f} pairs/s); {metrics}", highlight=False, soft_wrap=True)


def _distill_options(items: list[str]) -> dict:
    """``--option KEY=JSON`` items as DistillConfig keys (``loss.NAME`` goes into the ``loss`` dict)."""
    import json

    extra: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--option {item!r}: expected KEY=VALUE")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"--option {item!r}: {value!r} is not JSON (quote strings: {key}='\"text\"')") from None
        if key.startswith("loss."):
            extra.setdefault("loss", {})[key[5:]] = parsed
        else:
            extra[key] = parsed
    return extra


def _margin_filtered(train: list, student: str, min_margin: float, seed: int, batch_size: int) -> list:
    """The training pairs the student's backbone scores at a ratio margin of at least ``min_margin`` (dropped
    pairs replaced from the rest, as in study configs); refuses fewer than one batch."""
    from rich.console import Console

    from clir_eval.distill.filtering import filtered_sample
    from clir_eval.models.sentence import SentenceEncoder

    backbone = SentenceEncoder.from_pretrained(student)
    scored = len(train)
    kept, _ = filtered_sample(train, None, min_margin, backbone.encode, seed=str(seed))
    del backbone
    if len(kept) < batch_size:
        raise ValueError(f"--min-margin {min_margin} kept {len(kept)} of {scored} training pairs, fewer than one "
                         f"batch (--batch-size {batch_size}); lower it or give more pairs")
    Console(stderr=True).print(f"kept {len(kept)} of {scored} training pairs (ratio margin >= {min_margin})",
                               highlight=False)
    return kept


def _english_for_start(bitext: str, config: object, leakage: str) -> list[str]:
    """English sentences for the start's map (``projection_fit_english`` of them): the English sides of the train
    splits of ``bitext``, without any test topic or test-document sentence of the built-in collections (unless
    ``--leakage allow``)."""
    from clir_eval.collections.english import english_pool
    from clir_eval.collections.registry import list_collections, load_collection

    count = getattr(config, "projection_fit_english")
    if not count:
        return []
    return english_pool([bitext], count, seed=getattr(config, "seed"), allow_leakage=leakage == "allow",
                        test_collections=[load_collection(name) for name in list_collections()])


def main() -> None:
    app()


if __name__ == "__main__":
    main()

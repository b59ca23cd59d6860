"""The study a ``clir-eval run`` performs, as frozen dataclasses loaded from YAML.

Every setting that changes a result lives here (and is copied into the manifest); run tags,
system names and output paths come from it, never from code.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from clir_eval.experiment.schema import ConfigError, build, from_mapping, raise_problems, to_mapping
from clir_eval.io import short_repr

#: The study ``clir-eval run`` performs with no argument: ``default.yaml`` of the configs shipped as package data
#: (:mod:`clir_eval.resources`; ``configs/`` in the repository). Only a path: nothing is read at import.
DEFAULT_CONFIG = Path(str(files("clir_eval").joinpath("data", "configs", "default.yaml")))
#: The default study on all the bitext and more languages (``clir-eval run --full``).
FULL_CONFIG = DEFAULT_CONFIG.with_name("full.yaml")
METHODS = ("kd", "ot", "contrastive", "kd+ot", "kd+contrastive", "kd+ot+contrastive")


@dataclass(frozen=True)
class CollectionRef:
    """A collection (built-in name or directory), the split to report and the query languages."""

    name: str
    languages: tuple[str, ...]
    split: str = "test"

    def __post_init__(self) -> None:
        raise_problems([("languages", "languages must not be empty")] if not self.languages else [])


@dataclass(frozen=True)
class StudentSpec:
    """One distilled student: method, backbone, bitext budget; ``options`` go to the trainer's config.

    The student is trained on the union of ``languages`` (each from the first bitext source that
    has it) and evaluated on every query language of the study, or on ``evaluate_on`` only (its own language and
    its zero-shot neighbours, say: a study of many per-language students then does not search every language with
    every student). ``min_margin`` drops training pairs whose
    ratio margin under the backbone is lower (:mod:`clir_eval.distill.filtering`); ``max_pairs`` then counts
    the pairs kept. ``english_pairs`` adds that many English sentences of the bitext sources' train splits (none
    of them a test topic or a sentence of a test document, and none an English side of the student's pairs) as
    English -> English pairs: every term of the method then also fits the student's English to the teacher's.
    """

    name: str
    method: str
    backbone: str = "me5-small"
    bitext: tuple[str, ...] = ("lafand",)
    languages: tuple[str, ...] = ("sw",)
    max_pairs: int | None = None
    min_margin: float | None = None
    english_pairs: int = 0
    evaluate_on: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)

    def evaluated_on(self, lang: str) -> bool:
        """Whether the study searches ``lang``'s queries with this student (``evaluate_on`` empty: every language)."""
        return not self.evaluate_on or lang in self.evaluate_on

    def __post_init__(self) -> None:
        problems = []
        if self.method not in METHODS:
            problems.append(("method", f"method must be one of {list(METHODS)}, got {short_repr(self.method)}"))
        if self.english_pairs < 0:
            problems.append(("english_pairs", f"english_pairs must be >= 0, got {self.english_pairs}"))
        if self.max_pairs is not None and self.max_pairs < 1:
            problems.append(("max_pairs", f"max_pairs must be >= 1 or null, got {self.max_pairs}"))
        if self.min_margin is not None:
            from clir_eval.distill.filtering import check_min_margin

            try:
                check_min_margin(self.min_margin)
            except ValueError as exc:
                problems.append(("min_margin", str(exc)))
        if ":" in self.name or "/" in self.name or " " in self.name:
            problems.append(("", f"student name {short_repr(self.name)} may not contain ':', '/' or spaces"))
        raise_problems(problems)


@dataclass(frozen=True)
class TrendSpec:
    """Gain against the start across languages (:mod:`clir_eval.evaluation.trend`), as ``clir-eval trend`` runs it.

    ``start``/``methods``: ``[LABEL=]NAME`` with ``{lang}`` for each language's code (``{lang}-kd``);
    ``contrasts``: ``TREATMENT:CONTROL`` labels (``kd+ot:kd``); ``languages``: default every language of the
    collection; ``collection``: needed only when the study has several. ``zero_shot``: ``{lang: trained}``, a
    second analysis (``zero-shot.*``) of languages without training pairs, each read through the students of
    one trained language (``{lang}-kd`` is ``ha-kd`` on am for ``{am: ha}``), against the same start.
    """

    start: str
    methods: tuple[str, ...] = ()
    contrasts: tuple[str, ...] = ()
    metric: str = "mrr"
    languages: tuple[str, ...] = ()
    collection: str | None = None
    zero_shot: dict[str, str] = field(default_factory=dict)

    def studied(self, collections: Sequence[CollectionRef]) -> tuple[str, ...]:
        """The languages of the collection(s) the trend reads, in config order."""
        return tuple(dict.fromkeys(lang for ref in collections if self.collection in (None, ref.name)
                                   for lang in ref.languages))

    def trained_languages(self, collections: Sequence[CollectionRef]) -> tuple[str, ...]:
        """The languages of ``trend.*``: ``languages``, else every studied one but the zero-shot ones."""
        return self.languages or tuple(lang for lang in self.studied(collections) if lang not in self.zero_shot)

    def __post_init__(self) -> None:
        from clir_eval.evaluation.trend import parse_contrast, parse_system

        problems = [("zero_shot", f"{lang!r} is read through itself; a zero-shot language needs another's "
                                  "students") for lang, code in self.zero_shot.items() if lang == code]
        problems += [("zero_shot", f"{lang!r} is in both languages and zero_shot") for lang in self.zero_shot
                     if lang in self.languages]
        labels = []
        for key, spec in [("start", self.start)] + [("methods", m) for m in self.methods]:
            try:
                labels.append(parse_system(spec)[0])
            except ValueError as exc:
                problems.append((key, str(exc)))
        if not self.methods and not self.contrasts:
            problems.append(("methods", "give at least one method or contrast"))
        for spec in self.contrasts:
            try:
                effect = parse_contrast(spec)
            except ValueError as exc:
                problems.append(("contrasts", str(exc)))
                continue
            problems += [("contrasts", f"{spec!r}: {side!r} is not a label of start or methods ({', '.join(labels)})")
                         for side in effect if labels and side not in labels]
        raise_problems(problems)


@dataclass(frozen=True)
class EvaluationSpec:
    """Metrics and the significance protocol of the leaderboards."""

    metrics: tuple[str, ...] = ("mrr", "ndcg@10", "recall@100")
    baselines: tuple[str, ...] = ("teacher",)
    test: Literal["t", "randomization"] = "randomization"
    correction: Literal["holm", "bonferroni", "none"] = "holm"
    alpha: float = 0.05
    seed: int = 42
    n_resamples: int = 10_000
    family: Literal["table", "metric"] = "table"  # what one correction covers (evaluation.comparison.FAMILIES)
    trec_eval: Literal[9, 10] = 9  # score precision: 9 = float32 (trec_eval 9.x, pytrec_eval), 10 = double
    trend: TrendSpec | None = None  # gain against the start across languages, written to <output>/trend/

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.alpha < 1:
            problems.append(("alpha", f"alpha must be in (0, 1), got {self.alpha}"))
        if self.n_resamples < 1:
            problems.append(("n_resamples", f"n_resamples must be >= 1, got {self.n_resamples}"))
        if not self.metrics:
            problems.append(("metrics", "metrics must not be empty"))
        if isinstance(self.trec_eval, bool) or self.trec_eval not in (9, 10):
            problems.append(("trec_eval", f"trec_eval must be 9 (float32 scores) or 10 (double), got {self.trec_eval!r}"))
        raise_problems(problems)


def _is_axis_value(value: Any) -> bool:
    """A scalar, or a flat list of scalars (``languages: [[sw], [sw, ha]]``)."""
    scalar = (str, int, float, type(None))
    return isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(v, scalar) for v in value))


@dataclass(frozen=True)
class SweepSpec:
    """Students generated as the product of ``axes`` over ``base`` (a student without a name).

    Axis names: ``method``, ``backbone``, ``max_pairs``, ``min_margin``, ``english_pairs``, ``languages`` (a list
    of lists), ``bitext``, and ``options.<key>[.<key>]`` for trainer options such as ``options.lr`` or
    ``options.loss.ot_epsilon``.
    """

    base: dict[str, Any]
    axes: dict[str, list[Any]]

    def __post_init__(self) -> None:
        valid = {"method", "backbone", "max_pairs", "min_margin", "english_pairs", "languages", "bitext"}
        problems = []
        for axis, values in self.axes.items():
            if axis not in valid and not axis.startswith("options."):
                problems.append(("axes", f"unknown sweep axis {short_repr(axis)}; valid: {sorted(valid)} or "
                                         f"'options.<key>'"))
            elif not isinstance(values, list) or not values:
                problems.append(("axes", f"sweep axis {axis!r} needs a non-empty list of values"))
            else:
                # An axis value becomes part of a student's name: a nested structure (a YAML alias bomb among
                # them) has no name, and spelling one out could take hours.
                for value in values:
                    if not _is_axis_value(value):
                        problems.append(("axes", f"sweep axis {axis!r}: {short_repr(value)} is not a number, a "
                                                 f"string or a list of them"))
                        break
        raise_problems(problems)


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole study: collections × languages × systems, the students to distil, the evaluation.

    ``psq_bitext`` lists ``[source, split]`` pairs tried in order for the PSQ translation table of a
    language; ``hybrid`` is passed to :class:`clir_eval.retrieval.fusion.FusionConfig` (a student may be
    named by its name); ``dense_index`` to :class:`clir_eval.retrieval.dense.DenseIndexConfig` (the Faiss index of
    every dense system and its search knobs; flat when empty); ``leakage`` says what to do with bitext pairs that
    equal a test topic.
    """

    name: str
    collections: tuple[CollectionRef, ...]
    systems: tuple[str, ...]
    output_dir: str = ""
    teacher: str = "minilm-l6"
    students: tuple[StudentSpec, ...] = ()
    sweep: SweepSpec | None = None
    psq_bitext: tuple[tuple[str, str], ...] = (("lafand", "train"), ("ntrex", "dev"))
    hybrid: dict[str, Any] = field(default_factory=dict)
    dense_index: dict[str, Any] = field(default_factory=dict)
    leakage: Literal["error", "drop", "allow"] = "error"
    dev_pairs: int | None = 500
    hits: int = 100
    seed: int = 13
    threads: int = 0
    evaluation: EvaluationSpec = EvaluationSpec()

    def __post_init__(self) -> None:
        problems = []
        if self.hits < 1:
            problems.append(("hits", f"hits must be >= 1, got {self.hits}"))
        if self.dev_pairs is not None and self.dev_pairs < 1:
            problems.append(("dev_pairs", f"dev_pairs must be >= 1 or null, got {self.dev_pairs}"))
        if self.threads < 0:
            problems.append(("threads", f"threads must be >= 0 (0 = torch's default), got {self.threads}"))
        if not self.collections:
            problems.append(("collections", "collections must not be empty"))
        try:
            names = [s.name for s in self.all_students]
        except ConfigError as exc:  # a generated student refused: blame the sweep
            problems += [("sweep", line) for line in exc.errors]
            names = [s.name for s in self.students]
        if len(set(names)) != len(names):
            problems.append(("", f"student names must be unique, got {names}"))
        clashes = sorted(set(names) & {s.split(":", 1)[0] for s in self.systems})
        if clashes:
            problems.append(("", f"student names {clashes} clash with system names; rename the students"))
        raise_problems(problems)

    @property
    def all_students(self) -> tuple[StudentSpec, ...]:
        """Listed students plus those the sweep generates."""
        return self.students + (expand_sweep(self.sweep) if self.sweep else ())

    @property
    def starts(self) -> dict[str, tuple[StudentSpec, ...]]:
        """The untrained students (``student-init``): name -> the students that train from that start.

        A student from another backbone than the teacher starts from the backbone plus its least-squares map
        into the teacher's space (:mod:`clir_eval.distill.start`); students whose fit reads the same text share
        one start. It is a system of the study, so each trained student is tested against where it began. One
        start is named ``student-init``; several are named ``<first student>-init``.
        """
        groups: dict[str, list[StudentSpec]] = {}
        for spec in self.all_students:
            key = start_key(spec, self.teacher)
            if key is not None:
                groups.setdefault(key, []).append(spec)
        if len(groups) == 1:
            return {"student-init": tuple(next(iter(groups.values())))}
        return {f"{specs[0].name}-init": tuple(specs) for specs in groups.values()}

    @property
    def all_systems(self) -> tuple[str, ...]:
        """Listed systems, then ``student:<start>`` for each untrained student and ``student:<name>`` for every
        student not listed explicitly."""
        listed = list(self.systems)
        generated = [f"student:{name}" for name in self.starts] + [f"student:{s.name}" for s in self.all_students]
        listed += [system for system in generated if system not in listed]
        return tuple(listed)

    def systems_on(self, lang: str) -> tuple[str, ...]:
        """:attr:`all_systems` that search ``lang``'s queries: students whose ``evaluate_on`` leaves it out do not."""
        skipped = {f"student:{s.name}" for s in self.all_students if not s.evaluated_on(lang)}
        return tuple(system for system in self.all_systems if system not in skipped)

    @property
    def system_names(self) -> dict[str, str]:
        """Every system of the study by the name of its runs (files, tags, leaderboards) -> its spec.

        The one list of names that baselines and the hybrid's components may use; systems the study
        generates belong here too. Students are named by their config name.
        """
        from clir_eval.retrieval.systems import system_name

        students = {s.name for s in self.all_students} | set(self.starts)
        names = {}
        for system in self.all_systems:
            kind, _, argument = system.partition(":")
            names[argument if kind == "student" and argument in students else system_name(system)] = system
        return names

    def to_dict(self) -> dict[str, Any]:
        return to_mapping(self)


# Trainer options that decide a student's start (the others only change training).
START_OPTIONS = ("projection", "projection_fit_pairs", "projection_fit_english", "max_length")


def start_key(spec: StudentSpec, teacher: str) -> str | None:
    """What a student's start depends on, as a string; None when it has no fitted start (a copy of the teacher,
    or ``projection: never``)."""
    from clir_eval.distill.trainer import DistillConfig

    # The trainer's defaults for options the spec leaves out, so this key and the trainer agree.
    defaults = {f.name: f.default for f in fields(DistillConfig)}
    options = {name: spec.options.get(name, defaults[name]) for name in START_OPTIONS}
    if options["projection"] == "never" or (options["projection"] == "auto" and spec.backbone == teacher):
        return None
    # Without pairs in the fit, the bitext budget and languages do not matter: only the English text does.
    data = ([spec.bitext, spec.languages, spec.max_pairs, spec.min_margin] if options["projection_fit_pairs"]
            else [spec.bitext])
    return repr([spec.backbone, teacher, data, options])


def _axis_label(axis: str, value: Any) -> str:
    short = {"method": "", "backbone": "", "max_pairs": "n", "min_margin": "m", "english_pairs": "en",
             "languages": "", "bitext": ""}
    text = "_".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    prefix = short.get(axis, axis.rsplit(".", 1)[-1])
    return f"{prefix}{text}".replace("/", "_").replace(":", "_").replace(" ", "").replace("+", "-")


def _set_nested(options: dict[str, Any], keys: list[str], value: Any) -> dict[str, Any]:
    """A copy of ``options`` with ``options[k1][k2]... = value`` (``options.loss.ot_epsilon`` axes)."""
    head, *rest = keys
    inner = options.get(head, {})
    return {**options, head: _set_nested(dict(inner), rest, value) if rest else value}


def get_nested(options: dict[str, Any], keys: list[str]) -> Any:
    """``options[k1][k2]...``, or None where a key is missing."""
    for key in keys:
        if not isinstance(options, dict) or key not in options:
            return None
        options = options[key]
    return options


def expand_sweep(sweep: SweepSpec) -> tuple[StudentSpec, ...]:
    """All students of a sweep, named after their axis values (e.g. ``ot-me5-small-n1000``)."""
    axes = list(sweep.axes)
    students = []
    for values in itertools.product(*(sweep.axes[a] for a in axes)):
        data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in sweep.base.items()}
        data.setdefault("options", {})
        for axis, value in zip(axes, values):
            if axis.startswith("options."):
                data["options"] = _set_nested(data["options"], axis.split(".")[1:], value)
            else:
                data[axis] = value
        data["name"] = "-".join(_axis_label(a, v) for a, v in zip(axes, values))
        students.append(from_mapping(StudentSpec, data, where=f"sweep[{data['name']}]"))
    return tuple(students)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate a YAML study config (default: ``configs/default.yaml``).

    Raises:
        ConfigError: naming the file and the offending key.
    """
    from clir_eval.io import InputFileError, parse_yaml

    path = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"), path)
    except InputFileError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 ({exc.reason})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    data = {**data, **(overrides or {})}
    name = data.get("name")
    data.setdefault("output_dir", str(Path("results") / (name if isinstance(name, str) else path.stem)))
    # Every problem at once: those of the file's shape and values, then (on what could be built) the study's
    # checks against the registries and the file system.
    built = build(ExperimentConfig, data, where=str(path))
    errors = list(built.errors)
    if built.value is not None:
        from clir_eval.experiment.checks import study_problems

        errors += study_problems(built.value, str(path), defaulted=built.defaulted)
    if errors:
        raise ConfigError(*errors)
    return replace(built.value)

"""A study config checked against the registries before any step runs.

:mod:`clir_eval.experiment.schema` checks shapes and types, each dataclass its own values; what needs
the world outside the file is checked here, when the config loads: systems (the system registry),
metrics (the metric parser), baselines and hybrid components (the study's own system names),
collections, splits and languages (the collection registry), backbones (the model registry), bitext
sources and the languages they cover, and the students' trainer options (``DistillConfig`` itself, so
new options are covered as they are added). Every problem is reported, each as
``<file>: <key path>: <message>``, so a bad config fails before a model is converted or trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

from clir_eval.experiment.config import ExperimentConfig, StudentSpec
from clir_eval.experiment.schema import ConfigError, convert_known

# Splits every student reads: the runner distils on "train" and evaluates on "dev" (StudyRunner.student).
_STUDENT_SPLITS = ("train", "dev")


def check_study(config: ExperimentConfig, source: str) -> None:
    """Check ``config`` (read from ``source``) against the registries and the file system.

    Raises:
        ConfigError: one line per problem, ``<source>: <key>: <message>``.
    """
    problems = study_problems(config, source)
    if problems:
        raise ConfigError(*problems)


def study_problems(config: ExperimentConfig, source: str, defaulted: frozenset[str] = frozenset()) -> list[str]:
    """Every problem :func:`check_study` finds, one line each (empty when there is none).

    Args:
        defaulted: fields of ``config`` whose value was refused and replaced by its default; the checks of
            what refers to them (systems naming students, baselines naming systems) are left out, as the
            config's own names are not all known.
    """
    checker = _Checker()
    checker.outputs(config)
    known = not defaulted & {"students", "sweep"}
    checker.systems(config, students_known=known)
    if not checker.problems and known and "evaluation" not in defaulted:  # names derive from the systems
        checker.names(config)
    checker.metrics(config)
    checker.collections(config)
    checker.models(config)
    checker.students(config)
    checker.psq_bitext(config)
    checker.dense_index(config)
    return [f"{source}: {key + ': ' if key else ''}{message}" for key, message in checker.problems]


class _Checker:
    """Collects ``(key path, message)`` problems; each method checks one part of the study."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []
        self._bitext: dict[str, dict[str, tuple[str, ...]] | None] = {}

    def check(self, key: str, test: Callable[[], Any]) -> Any:
        """``test()``, recording its ``ValueError``/``KeyError`` as a problem at ``key`` (None then)."""
        try:
            return test()
        except KeyError as exc:
            self.problems.append((key, str(exc.args[0]) if exc.args else str(exc)))
        except (ValueError, TypeError) as exc:
            self.problems.append((key, str(exc)))
        return None

    def outputs(self, config: ExperimentConfig) -> None:
        """The output directory can be made and written (the runner writes nothing else outside the cache)."""
        from clir_eval.io import InputFileError, check_output_path

        try:
            check_output_path(config.output_dir, directory=True)
        except InputFileError as exc:
            self.problems.append(("output_dir", str(exc)))

    def systems(self, config: ExperimentConfig, students_known: bool = True) -> None:
        from clir_eval.retrieval.systems import parse_system

        students = {s.name for s in config.all_students}
        for i, system in enumerate(config.systems):
            spec = self.check(f"systems[{i}]", lambda: parse_system(system))
            if spec is None or not students_known:
                continue
            if spec.kind == "student" and spec.argument not in students and not Path(spec.argument).is_dir():
                self.problems.append((f"systems[{i}]", f"{spec.argument!r} is neither a student of this study "
                                                       f"({', '.join(sorted(students)) or 'none'}) nor a directory"))

    def names(self, config: ExperimentConfig) -> None:
        """Baselines and hybrid components name systems of this study (:attr:`ExperimentConfig.system_names`)."""
        from clir_eval.experiment.schema import from_mapping
        from clir_eval.retrieval.fusion import FusionConfig
        from clir_eval.retrieval.systems import parse_system

        names = config.system_names
        valid = f"valid: {', '.join(names)}"
        for i, baseline in enumerate(config.evaluation.baselines):
            if baseline not in names:
                self.problems.append((f"evaluation.baselines[{i}]", f"{baseline!r} is not a system of the study; "
                                                                     f"{valid}"))
        if config.evaluation.trend is not None:
            self._trend(config, names)
        for part, family in (("sparse", "bm25"), ("dense", "dense")):
            value = config.hybrid.get(part)
            if value is None:
                continue
            if not isinstance(value, str):
                self.problems.append((f"hybrid.{part}", f"expected a system name, got {value!r}"))
                continue
            spec = names.get(value, value if value in names.values() else None)
            if spec is None:
                self.problems.append((f"hybrid.{part}", f"{value!r} is not a system of the study; {valid}"))
            elif parse_system(spec).family != family:
                self.problems.append((f"hybrid.{part}", f"{value!r} is not a {family} system"))
            elif any(s.evaluate_on and spec == f"student:{s.name}" for s in config.all_students):
                # the hybrid runs on every language, so its components must too
                self.problems.append((f"hybrid.{part}", f"{value!r} runs only on its evaluate_on languages; "
                                                        f"the hybrid needs a component that runs on every one"))
        # The other hybrid settings, with the components left at defaults (a student name is not a spec).
        settings = {k: v for k, v in config.hybrid.items() if k not in ("sparse", "dense")}
        self.check("", lambda: from_mapping(FusionConfig, settings, where="hybrid"))  # names its key itself

    def _trend(self, config: ExperimentConfig, names: dict[str, str]) -> None:
        """Every system the trend names, on every language it reads, is a system of the study."""
        from clir_eval.evaluation.metrics import parse_metric
        from clir_eval.evaluation.trend import parse_system, resolve

        trend = config.evaluation.trend
        refs = [ref for ref in config.collections if trend.collection in (None, ref.name)]
        if trend.collection is None and len({ref.name for ref in refs}) > 1:
            self.problems.append(("evaluation.trend.collection", "the study has several collections; name one"))
            return
        if not refs:
            known = ", ".join(r.name for r in config.collections)
            self.problems.append(("evaluation.trend.collection",
                                  f"{trend.collection!r} is not a collection of the study ({known})"))
            return
        studied = trend.studied(config.collections)
        for lang in trend.languages:
            if lang not in studied:
                self.problems.append(("evaluation.trend.languages", f"{lang!r} is not a language of the study "
                                                                    f"({', '.join(studied)})"))
        for lang in trend.zero_shot:
            if lang not in studied:
                self.problems.append(("evaluation.trend.zero_shot", f"{lang!r} is not a language of the study "
                                                                    f"({', '.join(studied)})"))
        # (language, the code {lang} stands for there): the trend's own, then the zero-shot ones
        routes = [(lang, lang) for lang in trend.trained_languages(config.collections)]
        zero_shot = [(lang, code) for lang, code in trend.zero_shot.items() if lang in studied]
        for key, spec in [("start", trend.start)] + [(f"methods[{i}]", m) for i, m in enumerate(trend.methods)]:
            template = parse_system(spec)[1]
            for where, pairs in (("languages", routes), ("zero_shot", zero_shot)):
                missing = [(lang, resolve(template, code)) for lang, code in pairs
                           if names.get(resolve(template, code)) not in config.systems_on(lang)]
                if missing:
                    self.problems.append((f"evaluation.trend.{key}", f"{template!r} names no system of the study "
                                                                     "that searches "
                                                                     + ", ".join(f"{lang} ({system!r})"
                                                                                 for lang, system in missing)
                                                                     + f"; restrict evaluation.trend.{where}"))
        self.check("evaluation.trend.metric", lambda: parse_metric(trend.metric))

    def metrics(self, config: ExperimentConfig) -> None:
        from clir_eval.evaluation.metrics import parse_metric

        for i, metric in enumerate(config.evaluation.metrics):
            self.check(f"evaluation.metrics[{i}]", lambda: parse_metric(metric))

    def collections(self, config: ExperimentConfig) -> None:
        from clir_eval.collections.registry import load_collection

        for i, ref in enumerate(config.collections):
            collection = self.check(f"collections[{i}].name", lambda: load_collection(ref.name, validate=False))
            if collection is None:
                continue
            if ref.split not in collection.splits:
                self.problems.append((f"collections[{i}].split", f"{ref.name!r} has no split {ref.split!r}; "
                                                                  f"splits: {', '.join(collection.splits)}"))
                continue
            available = collection.languages_in(ref.split)
            for j, lang in enumerate(ref.languages):
                if lang not in available:
                    self.problems.append((f"collections[{i}].languages[{j}]",
                                          f"{ref.name!r} split {ref.split!r} has no topics in {lang!r}; "
                                          f"languages: {', '.join(available)}"))

    def models(self, config: ExperimentConfig) -> None:
        from clir_eval.models.registry import check_model_name

        self.check("teacher", lambda: check_model_name(config.teacher))
        for key, student in _students(config):
            self.check(f"{key}.backbone", lambda: check_model_name(student.backbone))

    def dense_index(self, config: ExperimentConfig) -> None:
        """The dense index settings, and a factory string Faiss can build at the teacher's dimension (read from the
        teacher's config where it is on disk), so that a typo fails before the students train, not after. Runs
        last: the teacher is read only for a config with no other problem."""
        from clir_eval.experiment.schema import from_mapping
        from clir_eval.retrieval.dense import DenseIndexConfig
        from clir_eval.retrieval.faiss_index import check_factory

        try:
            index = from_mapping(DenseIndexConfig, config.dense_index, where="dense_index")
        except ConfigError as exc:  # one problem a line, each naming its key
            self.problems += [("", line) for line in exc.errors]
            return
        if index.backend == "openvino":
            from clir_eval.models.openvino_backbone import openvino_missing

            missing = openvino_missing()
            if missing:
                self.problems.append(("dense_index.backend", missing))
        if index.factory is None or self.problems:
            return  # flat needs no check; and reading the teacher may convert it, which a bad config must not do
        dim = _model_dim(config.teacher)
        if dim is not None:
            self.check("dense_index.factory", lambda: check_factory(index.factory_string, dim))

    def students(self, config: ExperimentConfig) -> None:
        from clir_eval.distill.trainer import DistillConfig

        for key, student in _students(config):
            # The settings StudyRunner.student trains with, read as it reads them (schema.from_mapping: numbers
            # written as strings are numbers, non-finite ones refused, every refused option named).
            settings = {"seed": config.seed, **student.options, "method": student.method,
                        "student": student.backbone, "teacher": config.teacher}
            try:
                settings = convert_known(DistillConfig, settings, f"{key}.options")
            except ConfigError as exc:
                self.problems += [("", line) for line in exc.errors]
                self._student_bitext(key, student)
                continue
            distill = self.check(f"{key}.options", lambda: DistillConfig.from_dict(settings))
            budget = student.max_pairs * len(student.languages) if student.max_pairs else None
            if distill is not None and budget is not None and budget < distill.batch_size:
                self.problems.append((f"{key}.max_pairs", f"{student.max_pairs} pairs x {len(student.languages)} "
                                                          f"language(s) is fewer than one batch "
                                                          f"(options.batch_size {distill.batch_size})"))
            self._student_bitext(key, student)
        study_languages = {lang for ref in config.collections for lang in ref.languages}
        for key, student in _students(config):
            for j, lang in enumerate(student.evaluate_on):
                if lang not in study_languages:
                    self.problems.append((f"{key}.evaluate_on[{j}]", f"{lang!r} is not a query language of the "
                                                                    f"study; languages: {', '.join(sorted(study_languages))}"))

    def _student_bitext(self, key: str, student: StudentSpec) -> None:
        covered = {source: self._languages(f"{key}.bitext[{i}]", source) for i, source in enumerate(student.bitext)}
        if None in covered.values():
            return
        for j, lang in enumerate(student.languages):
            for split in _STUDENT_SPLITS:
                if not any(split in by_lang.get(lang, ()) for by_lang in covered.values()):
                    self.problems.append((f"{key}.languages[{j}]", f"no bitext for {lang!r} ({split} split) in "
                                                                   f"{list(student.bitext)}"))
                    break

    def psq_bitext(self, config: ExperimentConfig) -> None:
        for i, (source, _) in enumerate(config.psq_bitext):
            self._languages(f"psq_bitext[{i}][0]", source)

    def _languages(self, key: str, source: str) -> dict[str, tuple[str, ...]] | None:
        """``{lang: splits}`` of a bitext source, each source read once (None, and a problem, if unknown)."""
        from clir_eval.collections.bitext import bitext_languages

        if source not in self._bitext:
            self._bitext[source] = self.check(key, lambda: bitext_languages(source))
        elif self._bitext[source] is None:
            self.check(key, lambda: bitext_languages(source))
        return self._bitext[source]


def _students(config: ExperimentConfig) -> Iterator[tuple[str, StudentSpec]]:
    """Every student with its key path: ``students[i]``, or ``sweep[<name>]`` for a generated one."""
    for i, student in enumerate(config.students):
        yield f"students[{i}]", student
    for student in config.all_students[len(config.students):]:
        yield f"sweep[{student.name}]", student


def _model_dim(model: str) -> int | None:
    """The hidden size in ``model``'s config on disk (a built-in, provisioned once as the study would anyway, or a
    local directory); None where it is not there (a hub id not downloaded yet), and then the factory is checked
    when the index is built, before encoding."""
    from clir_eval.models.registry import resolve_model

    try:
        from transformers import AutoConfig

        location = resolve_model(model).local_path()
        return int(AutoConfig.from_pretrained(location, local_files_only=True).hidden_size)
    except (OSError, ValueError, AttributeError):
        return None
